// test_io_hostile.cpp: crafted checkpoints that attack the readers' size arithmetic and memory: tensor
// views whose numel x element size or offset + extent wraps past 2^64, negative dims/strides/offsets,
// absurd safetensors shapes, many names or views over one storage, zip entries claiming huge sizes,
// pickles and JSON headers that build values out of proportion to their size, and NaN/Inf weights.
// Each case is an error (or warning) naming the file and the tensor key, never a crash or a huge
// allocation. The files are made byte by byte (tests/nn/io/crafted_files.h), so no Python is needed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "nn/io/checkpoint_io.h"
#include "nn/io/pickle_reader.h"
#include "nn/io/pth.h"
#include "nn/io/safetensors.h"
#include "nn/io/zip_reader.h"
#include "nn/io/zip_writer.h"
#include "tests/nn/io/crafted_files.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn::io;
using mo::test::error_of;

namespace {

using namespace mo::io_test;

std::string pth_error(const View& v, size_t record_bytes) {
  return error_of([&] { read_pth(crafted_pth({v}, {{v.key, std::vector<uint8_t>(record_bytes, 0)}}), "evil.pth"); });
}

// The error names the file and the tensor key.
::testing::AssertionResult names_file_and_key(const std::string& e, const std::string& file, const std::string& key) {
  if (e == "" || e.find(file) == std::string::npos || e.find("'" + key + "'") == std::string::npos)
    return ::testing::AssertionFailure() << "error does not name " << file << " and '" << key << "': " << e;
  return ::testing::AssertionSuccess();
}

}  // namespace

TEST(IoHostile, PthSizeTimesItemsizeThatWrapsIsAnError) {
  // numel fits in int64 but numel * 8 (or * 4) is 2^64: the wrapped byte count would be 0.
  View v{.name = "w", .storage = "DoubleStorage", .storage_numel = 1, .size = {int64_t{1} << 61}, .stride = {0}};
  std::string e = pth_error(v, 8);
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "w"));
  EXPECT_NE(e.find("overflows"), std::string::npos) << e;
  v = {.name = "f", .storage_numel = 1, .size = {int64_t{1} << 31, int64_t{1} << 31}, .stride = {0, 0}};
  EXPECT_TRUE(names_file_and_key(pth_error(v, 4), "evil.pth", "f"));
  v = {.name = "n", .storage_numel = 1, .size = {int64_t{1} << 32, int64_t{1} << 32}, .stride = {0, 0}};
  e = pth_error(v, 4);  // the element count itself wraps
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "n"));
  EXPECT_NE(e.find("element count overflows"), std::string::npos) << e;
  // A storage size that wraps when multiplied by the element size.
  v = {.name = "s", .storage = "DoubleStorage", .storage_numel = int64_t{1} << 61, .size = {1}, .stride = {1}};
  e = pth_error(v, 8);
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "s"));
  EXPECT_NE(e.find("storage size overflows"), std::string::npos) << e;
}

TEST(IoHostile, PthHugeStridesAndOffsetsAreErrors) {
  struct Case {
    int64_t offset;
    std::vector<int64_t> size, stride;
    const char* says;
  };
  const Case cases[] = {
      {0, {3}, {int64_t{1} << 62}, "view extent overflows"},           // (3-1) * 2^62 = 2^63
      {0, {2, 2}, {kMax - 1, 1}, "reaches element"},                    // within int64, past the storage
      {kMax, {2}, {1}, "view extent overflows"},                        // offset + 1 wraps
      {kMax, {1}, {1}, "reaches element"},                              // offset itself past the end
      {0, {2, 2}, {int64_t{1} << 62, int64_t{1} << 62}, "view extent overflows"},  // 2^62 + 2^62
      {0, {int64_t{1} << 20}, {int64_t{1} << 40}, "reaches element"},   // fits, far outside 16 bytes
  };
  for (const Case& c : cases) {
    View v{.name = "bad.view", .offset = c.offset, .size = c.size, .stride = c.stride};
    std::string e = pth_error(v, 16);
    EXPECT_TRUE(names_file_and_key(e, "evil.pth", "bad.view")) << shape_string(c.size);
    EXPECT_NE(e.find(c.says), std::string::npos) << e;
  }
  // Strides of size-1 dims never matter (torch gives them any value): accepted, values right.
  View ok{.name = "ok", .storage_numel = 4, .offset = 1, .size = {1, 3, 1}, .stride = {kMax, 1, kMax}};
  RawStateDict sd = read_pth(crafted_pth({ok}, {{"0", floats(4)}}), "ok.pth");
  ASSERT_EQ(sd.tensors.size(), 1u);
  std::vector<float> got(3);
  std::memcpy(got.data(), sd.tensors[0].second.bytes().data(), 12);
  EXPECT_EQ(got, (std::vector<float>{1, 2, 3}));
  View strided{.name = "st", .storage_numel = 4, .offset = 0, .size = {2, 1, 2}, .stride = {1, kMax, 2}};
  sd = read_pth(crafted_pth({strided}, {{"0", floats(4)}}), "ok.pth");
  std::memcpy(got.data(), sd.tensors[0].second.bytes().data(), 12);  // [[0, 2], [1, 3]]
  EXPECT_EQ(got[0], 0);
  EXPECT_EQ(got[1], 2);
  EXPECT_EQ(got[2], 1);
}

TEST(IoHostile, PthNegativeDimsStridesAndOffsetsAreErrors) {
  View v{.name = "neg.dim", .size = {-1, 4}, .stride = {4, 1}};
  std::string e = pth_error(v, 16);
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "neg.dim"));
  EXPECT_NE(e.find("negative dimension"), std::string::npos) << e;
  v = {.name = "neg.stride", .size = {2}, .stride = {-1}};
  e = pth_error(v, 16);
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "neg.stride"));
  EXPECT_NE(e.find("negative stride"), std::string::npos) << e;
  v = {.name = "neg.offset", .offset = -4, .size = {2}, .stride = {1}};
  e = pth_error(v, 16);
  EXPECT_TRUE(names_file_and_key(e, "evil.pth", "neg.offset"));
  EXPECT_NE(e.find("negative storage offset"), std::string::npos) << e;
  v = {.name = "rank", .size = {1, 1}, .stride = {1}};
  EXPECT_TRUE(names_file_and_key(pth_error(v, 16), "evil.pth", "rank"));
  v = {.name = "neg.numel", .storage_numel = -1};
  EXPECT_NE(pth_error(v, 16).find("bad storage size"), std::string::npos);
}

TEST(IoHostile, ManyNamesOverOneStorageShareItsBytes) {
  // 256 names over one 64 KiB storage: full views, overlapping slices and one transposed view. Every
  // contiguous view is a window of the one copy of the file; the strided view is gathered once.
  constexpr int kNames = 256;
  constexpr int64_t kFloats = 16384;
  std::vector<View> views;
  for (int i = 0; i < kNames; ++i) {
    const std::string n = std::to_string(i);
    if (i % 4 == 0) views.push_back({.name = "full." + n, .storage_numel = kFloats, .size = {kFloats}, .stride = {1}});
    if (i % 4 == 1)
      views.push_back({.name = "slice." + n, .storage_numel = kFloats, .offset = i, .size = {kFloats / 2}, .stride = {1}});
    if (i % 4 >= 2)
      views.push_back({.name = "t." + n, .storage_numel = kFloats, .size = {128, 128}, .stride = {1, 128}});
  }
  const auto file = std::make_shared<const std::vector<uint8_t>>(crafted_pth(views, {{"0", floats(kFloats)}}));
  RawStateDict sd = read_pth(file, "many.pth");
  ASSERT_EQ(sd.tensors.size(), static_cast<size_t>(kNames));
  std::set<const std::vector<uint8_t>*> buffers;
  uint64_t logical = 0;
  for (const auto& [n, t] : sd.tensors) {
    buffers.insert(t.buffer.get());
    logical += t.nbytes;
    if (n.starts_with("slice.")) {
      float first;
      std::memcpy(&first, t.bytes().data(), 4);
      EXPECT_EQ(first, static_cast<float>(std::stoi(n.substr(6)))) << n;  // offset i -> value i
    }
  }
  EXPECT_EQ(buffers.size(), 2u);  // the file, and the one gathered transposed view
  EXPECT_TRUE(buffers.count(file.get()));
  EXPECT_GT(logical, 100 * file->size() / 2);  // what the names describe ...
  uint64_t held = file->size();
  for (const auto* b : buffers)
    if (b != file.get()) held += b->size();
  EXPECT_LE(held, 2 * file->size());  // ... and what is held: the file plus one view
  // One record seen as two dtypes (16 bytes: 4 float32 or 2 float64) with the same strided view: two
  // gathered copies, each of its own size.
  View as_f32{.name = "f", .storage_numel = 4, .size = {2}, .stride = {0}};
  View as_f64{.name = "d", .storage = "DoubleStorage", .storage_numel = 2, .size = {2}, .stride = {0}};
  RawStateDict two = read_pth(crafted_pth({as_f32, as_f64}, {{"0", floats(4)}}), "two.pth");
  ASSERT_EQ(two.tensors.size(), 2u);
  EXPECT_EQ(two.tensors[0].second.bytes().size(), 8u);
  EXPECT_EQ(two.tensors[1].second.bytes().size(), 16u);
  // load_state_dict_file keeps the sharing in mo tensors.
  const std::string path = mo::test::tmp_path("many.pth");
  write_bytes(path, *file);
  NamedTensors ts = load_state_dict_file(path);
  ASSERT_EQ(ts.size(), static_cast<size_t>(kNames));
  EXPECT_EQ(ts[0].second.raw_data(), ts[4].second.raw_data());  // full.0 and full.4
}

TEST(IoHostile, NamesOverOneStorageBeyondTheBoundAreAnError) {
  // A 4-float storage expanded (stride 0) to 1 MiB floats under 256 names: 1 GiB described by a few
  // KiB of file. Refused once the total passes 8x the file plus 64 MiB, naming the tensor.
  std::vector<View> views;
  for (int i = 0; i < 256; ++i)
    views.push_back({.name = "e." + std::to_string(i), .offset = i % 4, .size = {1 << 18}, .stride = {0}});
  std::string e = error_of([&] { read_pth(crafted_pth(views, {{"0", floats(4)}}), "aliases.pth"); });
  EXPECT_TRUE(names_file_and_key(e, "aliases.pth", "e.64")) << e;  // 64 MiB after 64 names of 1 MiB
  EXPECT_NE(e.find("too many names or views over the same storage"), std::string::npos) << e;
  // The same through many zip records that all point at one stored entry's bytes is also bounded: the
  // records are windows of the file, and the names' total is what is limited.
}

TEST(IoHostile, ZipEntriesClaimingHugeSizesAreErrors) {
  auto zip = zip_of({{"a/data.pkl", {1, 2, 3}}, {"a/data/0", floats(4)}});
  ZipReader ok(zip, "ok.zip");
  const uint64_t cd = [&] {
    for (size_t i = 0; i + 4 <= zip.size(); ++i)
      if (zip[i] == 'P' && zip[i + 1] == 'K' && zip[i + 2] == 1 && zip[i + 3] == 2) return i;
    return size_t{0};
  }();
  // Uncompressed size 4 GiB - 1 in the first central directory entry (no zip64 field): size and
  // compressed size disagree for a stored entry.
  auto big = zip;
  std::memset(big.data() + cd + 24, 0xff, 4);
  ZipReader r(big, "big.zip");
  std::string e = error_of([&] { r.read("a/data.pkl"); });
  EXPECT_NE(e.find("big.zip"), std::string::npos) << e;
  EXPECT_NE(e.find("'a/data.pkl'"), std::string::npos) << e;
  // Both sizes 4 GiB - 1: more than the archive holds.
  std::memset(big.data() + cd + 20, 0xff, 4);
  e = error_of([&] { ZipReader z(big, "big.zip"); });
  EXPECT_NE(e.find("truncated: entry 'a/data.pkl' needs 4294967295 bytes"), std::string::npos) << e;
  // Compressed entries are refused whatever they claim, so no decompression is ever sized by the file.
  auto comp = zip;
  comp[cd + 10] = 8;
  ZipReader c(comp, "comp.zip");
  EXPECT_NE(error_of([&] { c.read("a/data.pkl"); }).find("compressed"), std::string::npos);
}

TEST(IoHostile, SafetensorsAbsurdShapesAreErrors) {
  struct Case {
    const char* header;
    size_t data;
    const char* says;
  };
  const Case cases[] = {
      {R"({"w":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})", 0, "byte size overflows"},
      {R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", 0, "byte size overflows"},
      {R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0, "element count overflows"},
      {R"({"w":{"dtype":"U8","shape":[9223372036854775807,2],"data_offsets":[0,0]}})", 0, "element count overflows"},
      {R"({"w":{"dtype":"U8","shape":[1152921504606846976],"data_offsets":[0,1152921504606846976]}})", 0, "truncated"},
      {R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})", 0, "bad dimension"},
      {R"({"w":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}})", 4, "bad dimension"},
  };
  for (const Case& c : cases) {
    std::string e = error_of([&] { read_safetensors(safetensors_file(c.header, c.data), "evil.safetensors"); });
    EXPECT_TRUE(names_file_and_key(e, "evil.safetensors", "w")) << c.header;
    EXPECT_NE(e.find(c.says), std::string::npos) << e;
  }
}

TEST(IoHostile, PicklesAndHeadersCannotBuildValuesWithoutBound) {
  // 1 MB of EMPTY_LIST opcodes would build a million values (about 180 MB).
  std::vector<uint8_t> lists = {0x80, 2};
  lists.insert(lists.end(), 1 << 20, ']');
  lists.push_back('.');
  std::string e = error_of([&] { unpickle(lists, "lists.pth: data.pkl"); });
  EXPECT_NE(e.find("lists.pth: data.pkl"), std::string::npos) << e;
  EXPECT_NE(e.find("too many values"), std::string::npos) << e;
  // A memoized argument tuple of 20000 items passed to an object constructor 20000 times: each call
  // would copy the tuple (3 GB from a few hundred KB).
  std::vector<uint8_t> p = {0x80, 2, 'c'};
  for (char c : std::string("argparse\nNamespace\n")) p.push_back(static_cast<uint8_t>(c));
  p.insert(p.end(), {'q', 0, '('});  // memo 0 = the class; MARK
  for (int i = 0; i < 20000; ++i) p.insert(p.end(), {'K', 1});
  p.insert(p.end(), {'t', 'q', 1, '('});  // memo 1 = the tuple; MARK for the list of calls
  for (int i = 0; i < 20000; ++i) p.insert(p.end(), {'h', 0, 'h', 1, 'R'});
  p.insert(p.end(), {'l', '.'});
  e = error_of([&] { unpickle(p, "calls.pkl"); });
  EXPECT_NE(e.find("too many values"), std::string::npos) << e;
  // A 3 MB safetensors header of zeros: 1.5 million JSON values (about 160 MB).
  std::string h = R"({"__metadata__":{},"x":[)";
  for (int i = 0; i < 1'500'000; ++i) h += i ? ",0" : "0";
  h += "]}";
  e = error_of([&] { read_safetensors(safetensors_file(h, 0), "zeros.safetensors"); });
  EXPECT_NE(e.find("zeros.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("too many values"), std::string::npos) << e;
}

TEST(IoHostile, HandMadeRawTensorsAreCheckedBeforeCopying) {
  RawTensor t;
  t.dtype = WireDType::f32;
  t.shape = {int64_t{1} << 31, int64_t{1} << 31};  // 2^64 bytes: wraps to 0
  EXPECT_NE(error_of([&] { tensor_from_raw(t); }).find("overflows"), std::string::npos);
  t.shape = {4};
  t.set_bytes(std::vector<uint8_t>(8));
  EXPECT_NE(error_of([&] { tensor_from_raw(t); }).find("has 8 bytes but shape [4] of float32 needs 16"),
            std::string::npos);
  RawStateDict sd;
  sd.tensors.emplace_back("short", t);
  std::ostringstream os;
  EXPECT_NE(error_of([&] { write_safetensors(sd, os, "out.safetensors"); }).find("'short'"), std::string::npos);
  EXPECT_NE(error_of([&] { write_pth(sd, os, "out.pth"); }).find("'short'"), std::string::npos);
}

TEST(IoHostile, NonFiniteWeightsWarnByName) {
  RawStateDict sd;
  auto add = [&](const std::string& name, WireDType dt, std::vector<uint8_t> b, std::vector<int64_t> shape) {
    RawTensor t;
    t.dtype = dt;
    t.shape = std::move(shape);
    t.set_bytes(std::move(b));
    sd.tensors.emplace_back(name, std::move(t));
  };
  const float f[4] = {1.0f, std::nanf(""), -INFINITY, 2.0f};
  add("stem.weight", WireDType::f32, {reinterpret_cast<const uint8_t*>(f), reinterpret_cast<const uint8_t*>(f) + 16}, {4});
  const uint16_t h[3] = {0x3c00, 0x7e00, 0x7c00};  // 1, NaN, Inf in fp16
  add("head.half", WireDType::f16, {reinterpret_cast<const uint8_t*>(h), reinterpret_cast<const uint8_t*>(h) + 6}, {3});
  const uint16_t bf[2] = {0x7fc0, 0x3f80};  // NaN, 1 in bf16
  add("bf", WireDType::bf16, {reinterpret_cast<const uint8_t*>(bf), reinterpret_cast<const uint8_t*>(bf) + 4}, {2});
  const double d[2] = {INFINITY, 0.5};
  add("d", WireDType::f64, {reinterpret_cast<const uint8_t*>(d), reinterpret_cast<const uint8_t*>(d) + 16}, {2});
  add("ok", WireDType::f32, floats(3), {3});
  add("ints", WireDType::i32, std::vector<uint8_t>(8, 0xff), {2});
  for (const char* ext : {".safetensors", ".pth"}) {
    const std::string path = mo::test::tmp_path(std::string("nan") + ext);
    write_checkpoint(sd, path);
    RawStateDict back = read_checkpoint(path);
    ASSERT_EQ(back.warnings.size(), 4u) << ext;
    std::string all;
    for (const auto& w : back.warnings) all += w + "\n";
    for (const char* want : {"tensor 'stem.weight' has 2 non-finite value(s) (NaN or Inf) of 4",
                             "tensor 'head.half' has 2 non-finite", "tensor 'bf' has 1 non-finite",
                             "tensor 'd' has 1 non-finite"})
      EXPECT_NE(all.find(want), std::string::npos) << want << " in\n" << all;
    EXPECT_NE(all.find(path), std::string::npos) << all;
    EXPECT_EQ(all.find("'ok'"), std::string::npos) << all;
  }
}
