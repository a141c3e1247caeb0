// mo_prepare: builds datasets in the JPEG folder layout the loader reads (data/fashion_mnist.h).
//   mo_prepare fashion-mnist --out DIR [--size 32] [--gray] [--quality 90] [--threads N] [--src DIR]
#include <chrono>
#include <cstdio>
#include <string>

#include "data/fashion_mnist.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  mo::data::PrepareOptions opt;
  std::string dataset;
  mo::tools::Cli cli("mo_prepare", "Builds a data set in the JPEG folder layout mo_train and mo_validate read.");
  CLI::App& app = cli.app;
  app.add_option("DATASET", dataset, "the data set to build (fashion-mnist)")
      ->required()
      ->check(mo::tools::one_of({"fashion-mnist"}));
  app.add_option("--out", opt.out, "the folder to write: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg")
      ->type_name("DIR")
      ->required();
  app.add_option("--size", opt.size, "image side in pixels")->capture_default_str()->check(mo::tools::int_range(8, 1024));
  app.add_flag("--gray", opt.gray, "grayscale JPEGs (default: RGB)");
  app.add_option("--quality", opt.quality, "JPEG quality")->capture_default_str()->check(mo::tools::int_range(1, 100));
  app.add_option("--threads", opt.threads, "encoding threads (0: all cores)")
      ->capture_default_str()
      ->check(mo::tools::int_range(0, 4096));
  app.add_option("--src", opt.src, "the folder of Debian's dataset-fashion-mnist IDX files")
      ->type_name("DIR")
      ->capture_default_str();
  app.footer("Writes 60,000 training and 10,000 validation images; does nothing when DIR already holds a complete\n"
             "run.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  return cli.run([&] {
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
    return 0;
  });
}
