// mo_prepare: builds datasets in the JPEG folder layout the loader reads (data/fashion_mnist.h).
//   mo_prepare fashion-mnist --out DIR [--size 32] [--gray] [--quality 90] [--threads N] [--src DIR]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "autograd/check.h"
#include "data/fashion_mnist.h"
#include "tools/common/cli.h"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: mo_prepare fashion-mnist --out DIR [--size 32] [--gray] [--quality 90] [--threads N]\n"
               "                  [--src /usr/share/datasets/fashion-mnist]\n"
               "Writes DIR/train/<class>/*.jpg (60,000) and DIR/val/<class>/*.jpg (10,000) from Debian's\n"
               "dataset-fashion-mnist IDX files; does nothing when DIR already holds a complete run.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "fashion-mnist") != 0) {
    usage();
    return 2;
  }
  mo::data::PrepareOptions opt;
  try {
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        MO_CHECK(i + 1 < argc, "{} needs a value", a);
        return argv[++i];
      };
      if (a == "--out") opt.out = value();
      else if (a == "--src") opt.src = value();
      else if (a == "--size") opt.size = static_cast<int>(mo::tools::option_int(a, value(), 8, 1024));
      else if (a == "--quality") opt.quality = static_cast<int>(mo::tools::option_int(a, value(), 1, 100));
      else if (a == "--threads") opt.threads = static_cast<int>(mo::tools::option_int(a, value(), 0, 4096));
      else if (a == "--gray") opt.gray = true;
      else if (a == "-h" || a == "--help") { usage(); return 0; }
      else MO_FAIL("unknown option '{}' (mo_prepare --help lists them)", a);
    }
    auto t0 = std::chrono::steady_clock::now();
    auto r = mo::data::prepare_fashion_mnist(opt);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r.already_complete)
      std::printf("%s already holds fashion-mnist (%lld train, %lld val); nothing to do\n", opt.out.c_str(),
                  (long long)r.train, (long long)r.val);
    else
      std::printf("wrote %lld JPEGs (%lld train, %lld val, %dx%d %s) to %s in %.1f s\n", (long long)r.written,
                  (long long)r.train, (long long)r.val, opt.size, opt.size, opt.gray ? "grayscale" : "RGB",
                  opt.out.c_str(), s);
  } catch (const std::exception& e) {
    const std::string msg = e.what(), self = "mo_prepare ";  // messages from data/ already start with it
    std::fprintf(stderr, "%s%s\n", msg.rfind(self, 0) == 0 ? "" : "mo_prepare: ", msg.c_str());
    return 1;
  }
  return 0;
}
