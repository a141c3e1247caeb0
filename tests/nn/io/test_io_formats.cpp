// test_io_formats.cpp: the checkpoint readers/writers on bytes made in C++ (no Python): zip (alignment,
// zip64, truncation, CRC, compressed entries), the data-only pickle reader (every protocol, the
// whitelist, malformed input), safetensors validation, fp16/int conversion into mo tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "nn/io/checkpoint_io.h"
#include "nn/io/pickle_reader.h"
#include "nn/io/pth.h"
#include "nn/io/safetensors.h"
#include "nn/io/zip_reader.h"
#include "nn/io/zip_writer.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn::io;

namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
// A string literal's bytes, embedded NULs included (the terminating one excluded).
template <size_t N>
std::vector<uint8_t> lit(const char (&s)[N]) {
  return {reinterpret_cast<const uint8_t*>(s), reinterpret_cast<const uint8_t*>(s) + N - 1};
}

std::vector<uint8_t> from_hex(const std::string& h) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

std::vector<uint8_t> make_zip(const std::vector<std::pair<std::string, std::string>>& files, bool zip64 = false) {
  std::ostringstream os;
  ZipWriter w(os, "test.zip", zip64);
  for (const auto& [n, d] : files) w.add(n, bytes_of(d));
  w.finish();
  std::string s = os.str();
  return {s.begin(), s.end()};
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

RawTensor raw(WireDType dt, std::vector<int64_t> shape, uint8_t fill) {
  RawTensor t;
  t.dtype = dt;
  t.shape = std::move(shape);
  std::vector<uint8_t> b(static_cast<size_t>(t.numel()) * wire_info(dt).size);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(fill + i);
  t.set_bytes(std::move(b));
  return t;
}

RawStateDict sample_dict() {
  RawStateDict sd;
  sd.tensors.emplace_back("a.weight", raw(WireDType::f32, {3, 4}, 1));
  sd.tensors.emplace_back("b.half", raw(WireDType::f16, {5}, 2));
  sd.tensors.emplace_back("c.scalar", raw(WireDType::f64, {}, 3));
  sd.tensors.emplace_back("d.bf16", raw(WireDType::bf16, {2, 1, 3}, 4));
  sd.tensors.emplace_back("e.empty", raw(WireDType::i64, {0, 7}, 5));
  sd.tensors.emplace_back("f.mask", raw(WireDType::boolean, {3}, 0));
  return sd;
}

void expect_same(const RawStateDict& a, const RawStateDict& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [n, t] : a.tensors) {
    const RawTensor* u = b.find(n);
    ASSERT_NE(u, nullptr) << n;
    EXPECT_EQ(t.dtype, u->dtype) << n;
    EXPECT_EQ(t.shape, u->shape) << n;
    EXPECT_TRUE(std::ranges::equal(t.bytes(), u->bytes())) << n;
  }
}

}  // namespace

TEST(IoZip, RoundTripAlignedRecords) {
  for (bool z64 : {false, true}) {
    auto zip = make_zip({{"archive/data.pkl", "pickle"}, {"archive/data/0", std::string(1000, 'x')}, {"archive/e", ""}},
                        z64);
    ZipReader r(zip, "test.zip");
    ASSERT_EQ(r.entries().size(), 3u);
    EXPECT_EQ(r.entries()[0].name, "archive/data.pkl");
    for (const auto& e : r.entries()) EXPECT_EQ(e.data_offset % 64, 0u) << e.name;  // torch's alignment
    Bytes b = r.read("archive/data/0");
    EXPECT_EQ(std::string(b.begin(), b.end()), std::string(1000, 'x'));
    EXPECT_EQ(r.read("archive/e").size(), 0u);
    EXPECT_EQ(r.find("nope"), nullptr);
    EXPECT_NE(error_of([&] { r.read("nope"); }).find("no entry 'nope'"), std::string::npos);
  }
}

TEST(IoZip, TruncatedCorruptAndCompressedAreErrors) {
  auto zip = make_zip({{"a/data.pkl", "0123456789"}, {"a/data/0", "abcdefgh"}});
  for (size_t n = 0; n < zip.size(); ++n) {  // every truncation fails cleanly
    Bytes cut(zip.data(), n);
    EXPECT_THROW({ ZipReader r(cut, "cut.zip"); r.read("a/data/0"); }, Error) << "length " << n;
  }
  EXPECT_NE(error_of([&] { ZipReader r(Bytes(zip.data(), zip.size() - 30), "cut.zip"); }).find("truncated"),
            std::string::npos);
  auto bad = zip;
  ZipReader ok(zip, "ok.zip");
  bad[ok.find("a/data/0")->data_offset] ^= 1;  // flip one payload bit
  ZipReader r(bad, "bad.zip");
  EXPECT_NE(error_of([&] { r.read("a/data/0"); }).find("corrupt"), std::string::npos);
  EXPECT_NO_THROW(r.read("a/data/0", /*verify_crc=*/false));
  // Mark the entries as deflated (method 8) in the central directory.
  auto comp = zip;
  for (size_t i = 0; i + 4 <= comp.size(); ++i)
    if (comp[i] == 'P' && comp[i + 1] == 'K' && comp[i + 2] == 1 && comp[i + 3] == 2) comp[i + 10] = 8;
  ZipReader c(comp, "comp.zip");
  EXPECT_NE(error_of([&] { c.read("a/data/0"); }).find("compressed"), std::string::npos);
}

// pickle.dumps(OrderedDict(a=[1, -2, 3.5, None, True, False], b=(b'xy', 'zzz', ()), c={7}, big=2**40,
// neg=-2**40, huge=2**70, k=-129, u='hé'), protocol=p) for p = 0..5, from CPython 3.11.
const char* kPickles[] = {
    "63636f6c6c656374696f6e730a4f726465726564446963740a70300a28745270310a56610a70320a286c70330a49310a61492d320a6146"
    "332e350a614e614930310a614930300a617356620a70340a28635f636f646563730a656e636f64650a70350a285678790a70360a566c61"
    "74696e310a70370a7470380a5270390a567a7a7a0a7031300a2874747031310a7356630a7031320a635f5f6275696c74696e5f5f0a7365"
    "740a7031330a28286c7031340a49370a61747031350a527031360a73566269670a7031370a4c313039393531313632373737364c0a7356"
    "6e65670a7031380a4c2d313039393531313632373737364c0a7356687567650a7031390a4c313138303539313632303731373431313330"
    "333432344c0a73566b0a7032300a492d3132390a7356750a7032310a5668e90a7032320a732e",
    "63636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000006171025d7103284b014afeffffff47400c00"
    "00000000004e4930310a4930300a65580100000062710428635f636f646563730a656e636f64650a71052858020000007879710658060000"
    "006c6174696e31710774710852710958030000007a7a7a710a2974710b580100000063710c635f5f6275696c74696e5f5f0a7365740a710d"
    "285d710e4b076174710f527110580300000062696771114c313039393531313632373737364c0a58030000006e656771124c2d3130393935"
    "31313632373737364c0a58040000006875676571134c313138303539313632303731373431313330333432344c0a58010000006b71144a7f"
    "ffffff5801000000757115580300000068c3a97116752e",
    "800263636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000006171025d7103284b014afeffffff47400c"
    "0000000000004e8889655801000000627104635f636f646563730a656e636f64650a710558020000007879710658060000006c6174696e31"
    "710786710852710958030000007a7a7a710a2987710b580100000063710c635f5f6275696c74696e5f5f0a7365740a710d5d710e4b076185"
    "710f527110580300000062696771118a0600000000000158030000006e656771128a060000000000ff58040000006875676571138a090000"
    "0000000000004058010000006b71144a7fffffff5801000000757115580300000068c3a97116752e",
    "800363636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000006171025d7103284b014afeffffff47400c"
    "0000000000004e888965580100000062710443027879710558030000007a7a7a7106298771075801000000637108636275696c74696e730a"
    "7365740a71095d710a4b076185710b52710c5803000000626967710d8a0600000000000158030000006e6567710e8a060000000000ff5804"
    "00000068756765710f8a0900000000000000004058010000006b71104a7fffffff5801000000757111580300000068c3a97112752e",
    "8004959c000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0161945d94284b014afe"
    "ffffff47400c0000000000004e8889658c01629443027879948c037a7a7a942987948c0163948f94284b07908c03626967948a0600000000"
    "00018c036e6567948a060000000000ff8c0468756765948a090000000000000000408c016b944a7fffffff8c0175948c0368c3a994752e",
    "8005959c000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0161945d94284b014afe"
    "ffffff47400c0000000000004e8889658c01629443027879948c037a7a7a942987948c0163948f94284b07908c03626967948a0600000000"
    "00018c036e6567948a060000000000ff8c0468756765948a090000000000000000408c016b944a7fffffff8c0175948c0368c3a994752e",
};

TEST(IoPickle, ReadsPlainDataInEveryProtocol) {
  using K = PyValue::Kind;
  for (int p = 0; p < 6; ++p) {
    SCOPED_TRACE("protocol " + std::to_string(p));
    auto data = from_hex(kPickles[p]);
    Pickle pk = unpickle(data, "test.pkl");
    ASSERT_EQ(pk.root->kind, K::dict);
    const PyValue* a = dict_get(pk.root, "a");
    ASSERT_TRUE(a && a->kind == K::list && a->items.size() == 6);
    EXPECT_EQ(a->items[0]->i, 1);
    EXPECT_EQ(a->items[1]->i, -2);
    EXPECT_EQ(a->items[2]->f, 3.5);
    EXPECT_EQ(a->items[3]->kind, K::none);
    EXPECT_EQ(a->items[4]->kind, K::boolean);
    EXPECT_EQ(a->items[4]->i, 1);
    EXPECT_EQ(a->items[5]->i, 0);
    const PyValue* b = dict_get(pk.root, "b");
    ASSERT_TRUE(b && b->kind == K::tuple && b->items.size() == 3);
    EXPECT_EQ(b->items[0]->kind, K::bytes);
    EXPECT_EQ(b->items[1]->s, "zzz");
    EXPECT_EQ(dict_get(pk.root, "c")->kind, K::set);
    EXPECT_EQ(dict_get(pk.root, "big")->i, int64_t{1} << 40);
    EXPECT_EQ(dict_get(pk.root, "neg")->i, -(int64_t{1} << 40));
    EXPECT_EQ(dict_get(pk.root, "huge")->kind, K::object) << "2**70 becomes a placeholder";
    EXPECT_EQ(dict_get(pk.root, "k")->i, -129);
    if (p > 0) EXPECT_EQ(dict_get(pk.root, "u")->s, "h\xc3\xa9");
    for (size_t n = 0; n < data.size(); ++n)  // every truncation is an error, not a crash
      EXPECT_THROW(unpickle(Bytes(data.data(), n), "cut.pkl"), Error) << n;
  }
}

TEST(IoPickle, RefusesGlobalsOffTheWhitelist) {
  // pickle.dumps(os.system-reduce) style payloads, protocol 2 (GLOBAL) and 4 (STACK_GLOBAL).
  auto os_system = lit("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00ls\x85R.");
  std::string e = error_of([&] { unpickle(os_system, "evil.pkl"); });
  EXPECT_NE(e.find("os.system"), std::string::npos) << e;
  EXPECT_NE(e.find("refusing"), std::string::npos) << e;
  auto eval = lit("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93\x8c\x01" "1\x85R.");
  e = error_of([&] { unpickle(eval, "evil.pkl"); });
  EXPECT_NE(e.find("builtins.eval"), std::string::npos) << e;
  auto getattr = bytes_of("cbuiltins\ngetattr\n.");
  EXPECT_NE(error_of([&] { unpickle(getattr, "evil.pkl"); }).find("builtins.getattr"), std::string::npos);
  auto inst = bytes_of("(ios\nsystem\n.");  // INST opcode
  EXPECT_NE(error_of([&] { unpickle(inst, "evil.pkl"); }).find("refusing"), std::string::npos);
  // A whitelisted placeholder class may not be used to call anything: REDUCE on a non-global.
  auto call_int = bytes_of("K\x01)R.");
  EXPECT_NE(error_of([&] { unpickle(call_int, "odd.pkl"); }).find("calls a int"), std::string::npos);
  // Memo and stack misuse.
  EXPECT_NE(error_of([&] { unpickle(bytes_of("h\x05."), "m.pkl"); }).find("memo key 5"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle(bytes_of("a."), "s.pkl"); }).find("underflow"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle(bytes_of("K\x01" "K\x02" "a."), "s.pkl"); }).find("APPEND applied to a int"),
            std::string::npos);
}

TEST(IoPickle, SelfReferenceDoesNotHangOrLeak) {
  // l = []; l.append(l); {'x': l}  (protocol 2)
  auto data = lit("\x80\x02}q\x00X\x01\x00\x00\x00xq\x01]q\x02h\x02" "as.");
  Pickle pk = unpickle(data, "cycle.pkl");
  const PyValue* l = dict_get(pk.root, "x");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->items[0], l);
}

TEST(IoPth, WriteThenReadIsBitExact) {
  RawStateDict sd = sample_dict();
  std::ostringstream os;
  write_pth(sd, os, "mem.pth");
  std::string s = os.str();
  std::vector<uint8_t> b(s.begin(), s.end());
  RawStateDict back = read_pth(b, "mem.pth");
  expect_same(sd, back);
  for (size_t i = 0; i < sd.tensors.size(); ++i) EXPECT_EQ(sd.tensors[i].first, back.tensors[i].first);
  ZipReader z(b, "mem.pth");
  EXPECT_NE(z.find("archive/version"), nullptr);
  EXPECT_NE(z.find("archive/data/5"), nullptr);
  // Truncations: an error naming the file every time.
  for (size_t n : {size_t{0}, size_t{3}, b.size() / 3, b.size() / 2, b.size() - 23, b.size() - 1})
    EXPECT_NE(error_of([&] { read_pth(Bytes(b.data(), n), "cut.pth"); }).find("cut.pth"), std::string::npos) << n;
}

TEST(IoSafetensors, RoundTripAlignedWithMetadata) {
  RawStateDict sd = sample_dict();
  sd.metadata = {{"format", "pt"}, {"arch", "mambaout \"femto\""}};
  std::ostringstream os;
  write_safetensors(sd, os, "mem.safetensors");
  std::string s = os.str();
  std::vector<uint8_t> b(s.begin(), s.end());
  ASSERT_TRUE(looks_like_safetensors(b));
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  RawStateDict back = read_safetensors(b, "mem.safetensors");
  expect_same(sd, back);
  EXPECT_EQ(back.metadata, sd.metadata);
  EXPECT_EQ(back.tensors[0].first, "c.scalar");  // 8-byte elements first (alignment), then file order
  EXPECT_EQ(back.tensors[2].first, "a.weight");
}

TEST(IoSafetensors, FormatIsRecognisedWhateverTheHeaderLength) {
  // Header lengths whose first byte is 0x80 (128, 384, ...) looked like a legacy torch pickle (PROTO
  // opcode) and the file was refused as "legacy (pre-1.6) torch.save format", whatever its name.
  for (size_t len : {128u, 384u, 640u, 64u, 4096u}) {
    std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    h.append(len - h.size(), ' ');
    std::vector<uint8_t> b(8 + h.size() + 8, 0);
    const uint64_t n = h.size();
    std::memcpy(b.data(), &n, 8);
    std::memcpy(b.data() + 8, h.data(), h.size());
    for (const char* name : {"w.safetensors", "w.bin"}) {
      const std::string path = mo::test::tmp_path(name);
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
      EXPECT_EQ(format_for_read(path).name, "safetensors") << len << " " << name;
      EXPECT_EQ(read_checkpoint(path).tensors.size(), 1u) << len << " " << name;
    }
  }
}

TEST(IoSafetensors, InvalidHeadersAreClearErrors) {
  auto file = [](const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
    const uint64_t n = header.size();
    std::memcpy(b.data(), &n, 8);
    std::copy(header.begin(), header.end(), b.begin() + 8);
    return b;
  };
  auto err = [&](const std::string& header, size_t data_bytes) {
    return error_of([&] { read_safetensors(file(header, data_bytes), "x.safetensors"); });
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(err(ok, 8), "(no error)");
  EXPECT_NE(err(ok, 4).find("truncated"), std::string::npos);
  EXPECT_NE(err(ok, 12).find("trailing"), std::string::npos);
  EXPECT_NE(err(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8).find("do not hold"), std::string::npos);
  EXPECT_NE(err(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8).find("unsupported dtype 'Q7'"),
            std::string::npos);
  EXPECT_NE(err(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8).find("gap or overlap"),
            std::string::npos);
  EXPECT_NE(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],)"
                R"("data_offsets":[4,8]}})", 8).find("gap or overlap"), std::string::npos);
  EXPECT_NE(err(R"({"a":1,"a":2})", 0).find("duplicate"), std::string::npos);
  EXPECT_NE(err(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8).find("bad dimension"),
            std::string::npos);
  EXPECT_NE(err("{\"a\":", 0).find("invalid JSON"), std::string::npos);
  EXPECT_NE(err("{\"a\":" + std::string(40, '[') + std::string(40, ']') + "}", 0).find("invalid JSON"), std::string::npos);
  std::vector<uint8_t> huge(16, 0xff);  // header length 2^64-1
  EXPECT_NE(error_of([&] { read_safetensors(huge, "h.safetensors"); }).find("100 MB"), std::string::npos);
  auto good = file(ok, 8);
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_THROW(read_safetensors(Bytes(good.data(), n), "cut.safetensors"), Error) << n;
}

TEST(IoTensor, RawToTensorConversions) {
  RawTensor h;
  h.dtype = WireDType::f16;
  h.shape = {5};
  const uint16_t halves[5] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555};  // 1, -2, 2^-24, inf, 0.333252
  h.set_bytes({reinterpret_cast<const uint8_t*>(halves), reinterpret_cast<const uint8_t*>(halves) + 10});
  Tensor t = tensor_from_raw(h);
  EXPECT_EQ(t.dtype(), DType::f32);
  auto v = t.to_vector<float>();
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(v[3]));
  EXPECT_EQ(v[4], 0.333251953125f);
  RawTensor i;
  i.dtype = WireDType::i16;
  i.shape = {2};
  const int16_t ints[2] = {-5, 300};
  i.set_bytes({reinterpret_cast<const uint8_t*>(ints), reinterpret_cast<const uint8_t*>(ints) + 4});
  EXPECT_EQ(tensor_from_raw(i).to_vector<int64_t>(), (std::vector<int64_t>{-5, 300}));
  Tensor f = Tensor::from_vector<float>({1.5f, -2.25f, 3.0f, 4.0f}, {2, 2});
  Tensor ft = f.as_strided({2, 2}, {1, 2}, 0);  // transposed view -> contiguous bytes in view order
  RawTensor r = raw_from_tensor(ft);
  EXPECT_EQ(r.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(tensor_from_raw(r).to_vector<float>(), (std::vector<float>{1.5f, 3.0f, -2.25f, 4.0f}));
}
