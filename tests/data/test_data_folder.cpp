// test_data_folder.cpp: ImageFolder (torchvision order, index cache and its invalidation, clear errors),
// mo_prepare's IDX reader and fashion-mnist conversion on a tiny synthetic IDX pair.
#include <gtest/gtest.h>
#include <zlib.h>

#include <thread>

#include "autograd/check.h"
#include "data/fashion_mnist.h"
#include "data/image_folder.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;

TEST(DataFolder, SortedClassesFilesAndCache) {
  TempDir tmp("folder");
  make_dataset(tmp.str(), "train", 3, 3, 16, 12);
  fs::create_directories(tmp.path / "train" / "class_1" / "sub");  // nested folder, walked like os.walk
  write_file((tmp.path / "train" / "class_1" / "sub" / "a.JPEG").string(), slurp(test_photos()[0]));
  write_file((tmp.path / "train" / "class_2" / "notes.txt").string(), {'x'});
  ImageFolder a(tmp.str(), "train");
  EXPECT_FALSE(a.loaded_from_cache());
  ASSERT_EQ(a.classes(), (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  ASSERT_EQ(a.size(), 10);
  EXPECT_EQ(a.path(0), (tmp.path / "train" / "class_0" / "img_0.jpg").string());
  EXPECT_EQ(a.path(6), (tmp.path / "train" / "class_1" / "sub" / "a.JPEG").string());
  EXPECT_EQ(a.label(6), 1);
  EXPECT_EQ(a.label(9), 2);

  ImageFolder b(tmp.str(), "train");
  EXPECT_TRUE(b.loaded_from_cache()) << b.cache_file();
  for (int64_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a.path(i), b.path(i));
    EXPECT_EQ(a.label(i), b.label(i));
  }
  // a new file changes its folder's time: the cache is rebuilt
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_file((tmp.path / "train" / "class_0" / "img_9.jpg").string(), slurp(test_photos()[0]));
  ImageFolder c(tmp.str(), "train");
  EXPECT_FALSE(c.loaded_from_cache());
  EXPECT_EQ(c.size(), 11);
  EXPECT_TRUE(ImageFolder(tmp.str(), "train").loaded_from_cache());
  // An index that names a path outside the folder ('..', absolute, '.' or empty components) is not
  // trusted: the folder is listed again.
  const std::string cache = c.cache_file();
  std::ifstream in(cache);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const size_t f = text.find("\nF 0 ");
  ASSERT_NE(f, std::string::npos) << text;
  for (const char* bad : {"../../../etc/passwd", "/etc/passwd", "class_0/./img_0.jpg", "class_0//img_0.jpg"}) {
    const size_t eol = text.find('\n', f + 1);
    const std::string edited = text.substr(0, f) + "\nF 0 " + bad + text.substr(eol);
    write_file(cache, std::vector<uint8_t>(edited.begin(), edited.end()));
    ImageFolder d(tmp.str(), "train");
    EXPECT_FALSE(d.loaded_from_cache()) << bad;
    for (int64_t i = 0; i < d.size(); ++i) EXPECT_EQ(d.path(i).find(".."), std::string::npos) << d.path(i);
  }
}

TEST(DataFolder, MissingOrEmptyFoldersAreClearErrors) {
  TempDir tmp("folder_err");
  auto message = [&](const std::string& split) {
    try {
      ImageFolder f(tmp.str(), split);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("val").find(tmp.str() + "/val"), std::string::npos) << message("val");
  fs::create_directories(tmp.path / "val");
  EXPECT_NE(message("val").find("no class folders"), std::string::npos) << message("val");
  fs::create_directories(tmp.path / "val" / "cat");
  EXPECT_NE(message("val").find("/val/cat"), std::string::npos) << message("val");
}

namespace {
void write_idx_gz(const std::string& path, std::vector<int> dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b{0, 0, 8, uint8_t(dims.size())};
  for (int d : dims) b.insert(b.end(), {uint8_t(d >> 24), uint8_t(d >> 16), uint8_t(d >> 8), uint8_t(d)});
  b.insert(b.end(), data.begin(), data.end());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, b.data(), unsigned(b.size())), int(b.size()));
  gzclose(f);
}
}  // namespace

TEST(DataFolder, PrepareFashionMnistFromIdx) {
  TempDir tmp("fmnist");
  const std::string src = tmp.str() + "/src", out = tmp.str() + "/out";
  fs::create_directories(src);
  auto images = [](int n) {
    std::vector<uint8_t> v(size_t(n) * 28 * 28);
    for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t((i * 7) % 251);
    return v;
  };
  std::vector<uint8_t> ytr, yte;
  for (int i = 0; i < 23; ++i) ytr.push_back(uint8_t(i % 10));
  for (int i = 0; i < 11; ++i) yte.push_back(uint8_t((i * 3) % 10));
  write_idx_gz(src + "/train-images-idx3-ubyte.gz", {23, 28, 28}, images(23));
  write_idx_gz(src + "/train-labels-idx1-ubyte.gz", {23}, ytr);
  write_idx_gz(src + "/t10k-images-idx3-ubyte.gz", {11, 28, 28}, images(11));
  write_idx_gz(src + "/t10k-labels-idx1-ubyte.gz", {11}, yte);
  IdxArray a = read_idx(src + "/train-images-idx3-ubyte.gz");
  EXPECT_EQ(a.dims, (std::vector<int>{23, 28, 28}));
  EXPECT_EQ(a.data, images(23));

  PrepareOptions o;
  o.src = src;
  o.out = out;
  o.size = 40;
  o.threads = 2;
  auto r = prepare_fashion_mnist(o);
  EXPECT_FALSE(r.already_complete);
  EXPECT_EQ(r.written, 34);
  ImageFolder train(out, "train"), val(out, "val");
  EXPECT_EQ(train.size(), 23);
  EXPECT_EQ(val.size(), 11);
  EXPECT_EQ(train.classes()[0], "ankle_boot");  // sorted by name, as torchvision numbers them
  auto bytes = slurp(train.path(0));
  JpegDecoder d;
  ASSERT_TRUE(d.open(bytes.data(), bytes.size()));
  EXPECT_EQ(d.width(), 40);
  EXPECT_TRUE(prepare_fashion_mnist(o).already_complete);  // idempotent
  o.gray = true;
  auto g = prepare_fashion_mnist(o);  // other options: rewritten
  EXPECT_FALSE(g.already_complete);
  EXPECT_EQ(g.written, 34);
  EXPECT_THROW(read_idx(src + "/missing.gz"), Error);
}

TEST(DataFolder, HostileIdxHeadersAreRefused) {
  TempDir tmp("fmnist_hostile");
  const std::string f = tmp.str() + "/x.gz";
  auto err = [&](std::vector<uint32_t> dims, size_t data_bytes) {
    std::vector<uint8_t> b{0, 0, 8, uint8_t(dims.size())};
    for (uint32_t d : dims) b.insert(b.end(), {uint8_t(d >> 24), uint8_t(d >> 16), uint8_t(d >> 8), uint8_t(d)});
    b.resize(b.size() + data_bytes, 7);
    gzFile g = gzopen(f.c_str(), "wb");
    gzwrite(g, b.data(), unsigned(b.size()));
    gzclose(g);
    return mo::test::error_of([&] { read_idx(f); });
  };
  // Was: sizes read as int (0xFFFFFFFF became -1) and multiplied modulo 2^64, so 0xFFFFFFFF x 0xFFFFFFFF x 1
  // "matched" one data byte and the conversion wrote a -1 x -1 image.
  EXPECT_NE(err({0xFFFFFFFFu, 0xFFFFFFFFu, 1}, 1).find("dimension 0 is 4294967295, more than the file holds"),
            std::string::npos);
  EXPECT_NE(err({65536, 65536, 65536}, 64).find("more than the file holds"), std::string::npos);
  EXPECT_NE(err({2, 3}, 5).find("has 5 data bytes, the header says 6"), std::string::npos);
  // a gzip bomb: over 1 GiB once decompressed (the real files are tens of MB) is refused as it is read
  {
    gzFile g = gzopen(f.c_str(), "wb1");
    const std::vector<uint8_t> head{0, 0, 8, 1, 0x40, 0, 0, 0x10}, zeros(1 << 20, 0);
    gzwrite(g, head.data(), unsigned(head.size()));
    for (int k = 0; k < 1025; ++k) gzwrite(g, zeros.data(), unsigned(zeros.size()));
    gzclose(g);
  }
  const std::string msg = mo::test::error_of([&] { read_idx(f); });
  EXPECT_NE(msg.find("holds more than 1024 MiB (uncompressed)"), std::string::npos) << msg;
}
