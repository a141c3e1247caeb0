// test_data_bad_input.cpp: broken files never crash the pipeline. Each kind (truncated JPEG, zero-byte
// file, non-JPEG named .jpg, absurd dimensions, unreadable file) is rejected by the decoder with a
// message, and in a Loader epoch it is replaced by another sample (deterministically), counted, and
// named in a stderr warning; the unreadable one (a dangling link) is left out by the folder scan, which
// names it.
#include <gtest/gtest.h>

#include "data/loader.h"
#include "tests/data/data_test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;

namespace {

// The five kinds of bad file, written into `dir`; returns their paths.
std::vector<std::string> write_bad_files(const fs::path& dir, const std::vector<uint8_t>& good) {
  std::vector<std::string> v;
  auto put = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    v.push_back((dir / name).string());
    std::ofstream(v.back(), std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  put("truncated.jpg", std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 3));
  put("empty.jpg", {});
  const std::string text = "this is not a JPEG but a text file named .jpg\n";
  put("text.jpg", std::vector<uint8_t>(text.begin(), text.end()));
  // absurd dimensions: patch the SOF0 frame header (FF C0 len(2) precision(1) height(2) width(2)) to 65000 x 65000
  std::vector<uint8_t> huge = good;
  for (size_t i = 0; i + 9 < huge.size(); ++i)
    if (huge[i] == 0xFF && (huge[i + 1] == 0xC0 || huge[i + 1] == 0xC2)) {
      huge[i + 5] = huge[i + 7] = 0xFD;
      huge[i + 6] = huge[i + 8] = 0xE8;
      break;
    }
  put("huge.jpg", huge);
  v.push_back((dir / "unreadable.jpg").string());  // a dangling symlink: listed, but cannot be opened
  fs::create_symlink(dir / "does_not_exist", v.back());
  return v;
}

}  // namespace

TEST(DataBadInput, DecoderRejectsEachKindWithAMessage) {
  TempDir tmp("bad_dec");
  fs::create_directories(tmp.path);
  auto good = slurp(test_photos()[0]);
  auto files = write_bad_files(tmp.path, good);
  JpegDecoder dec;
  Workspace ws;
  TrainTransform train({});
  EvalTransform eval({});
  Image out(224, 224);
  for (const auto& f : files) {
    std::vector<uint8_t> bytes;
    std::string err;
    if (!read_file(f, bytes, err)) {
      EXPECT_NE(f.find("unreadable"), std::string::npos) << f << ": " << err;
      continue;
    }
    Rng rng(1, 2);
    EXPECT_FALSE(eval(bytes.data(), bytes.size(), ws, out.view(), err)) << f;
    EXPECT_FALSE(err.empty()) << f;
    std::string err2;
    EXPECT_FALSE(train(bytes.data(), bytes.size(), rng, ws, out.view(), err2)) << f;
    std::printf("  %-16s %s\n", fs::path(f).filename().c_str(), err.c_str());
  }
  // and the decoder still works afterwards
  std::string err;
  EXPECT_TRUE(eval(good.data(), good.size(), ws, out.view(), err)) << err;
}

TEST(DataBadInput, LoaderReplacesCountsAndWarns) {
  TempDir tmp("bad_loader");
  make_dataset(tmp.str(), "val", 2, 4);
  make_dataset(tmp.str(), "train", 2, 6);
  auto good = slurp(test_photos()[1]);
  auto bad_val = write_bad_files(tmp.path / "val" / "class_1", good);
  auto bad_train = write_bad_files(tmp.path / "train" / "class_0", good);
  for (bool training : {false, true}) {
    LoaderConfig c;
    c.root = tmp.str();
    c.training = training;
    c.batch_size = 3;
    c.num_threads = 2;
    c.use_cuda = false;
    c.train.size = c.eval.size = 48;
    c.max_pixels = int64_t(1) << 24;
    ::testing::internal::CaptureStderr();
    Loader l(c);
    ASSERT_EQ(l.dataset().size(), training ? 16 : 12);
    int64_t seen = 0;
    Batch b;
    l.start_epoch(0);
    while (l.next(b)) {
      seen += b.images.size(0);
      for (float v : b.images.to_vector<float>()) ASSERT_TRUE(std::isfinite(v));
    }
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(seen, training ? 15 : 12);
    if (!training) {
      EXPECT_GE(l.bad_samples(), 4);  // each bad file once (a stand-in may itself be bad: more)
      for (const auto& f : bad_val) EXPECT_NE(log.find(f), std::string::npos) << "no warning names " << f << "\n" << log;
    } else {
      EXPECT_GE(l.bad_samples(), 1);
      EXPECT_NE(log.find("warning: data loader: skipping"), std::string::npos);
    }
    // the same epoch again gives the same stand-ins
    Loader again(c);
    ::testing::internal::CaptureStderr();
    again.start_epoch(0);
    l.start_epoch(0);
    Batch x, y;
    while (l.next(x)) {
      ASSERT_TRUE(again.next(y));
      ASSERT_EQ(x.labels.to_vector<int64_t>(), y.labels.to_vector<int64_t>());
      ASSERT_EQ(x.images.to_vector<float>(), y.images.to_vector<float>());
    }
    ::testing::internal::GetCapturedStderr();
  }
}
