// test_train_curves_browser.cpp: a training run's curves.svg in headless Chromium (WebDriver through
// browser_test_util.h): the file opens as an SVG document without XML errors, holds its panels and
// series, and drawn into a canvas it is not empty: the curves' colours cover many pixels and text and
// axes are there (dark pixels). Skips where Debian's chromium and chromium-driver are not installed
// (apt-get install chromium chromium-driver).
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/engine/browser_test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/common/omp_env.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::test::browser;

namespace {

// The SVG document drawn into a canvas at its own size: "<w>x<h> <pixels with a curve's colour> <dark
// pixels>", or "error: ..." (run asynchronously: the image loads first).
const char* kPixelsJs = R"JS(
  const done = arguments[arguments.length - 1];
  const img = new Image();
  img.onload = () => {
    try {
      const c = document.createElementNS('http://www.w3.org/1999/xhtml', 'canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let coloured = 0, dark = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] < 128) continue;
        const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
        if (mx - mn > 80) ++coloured;
        else if (mx < 100) ++dark;
      }
      done(c.width + 'x' + c.height + ' ' + coloured + ' ' + dark);
    } catch (e) { done('error: ' + e); }
  };
  img.onerror = () => done('error: the SVG does not load as an image');
  img.src = 'data:image/svg+xml;charset=utf-8,' +
            encodeURIComponent(new XMLSerializer().serializeToString(document.documentElement));)JS";

}  // namespace

TEST(CurvesBrowser, RunCurvesRenderInChromium) {
  std::string chromium = find_on_path("chromium");
  if (chromium.empty()) chromium = find_on_path("chromium-browser");
  const std::string driver = find_on_path("chromedriver");
  if (chromium.empty() || driver.empty())
    GTEST_SKIP() << "chromium or chromedriver not found on PATH (apt-get install chromium chromium-driver)";

  const std::string root = mo::tools::testing::make_image_folder("mo_curves_browser_data", 3, 12, 4);
  mo::tools::TrainConfig c = mo::tools::testing::small_config(root, mo::test::tmp_path("mo_curves_browser_run"));
  c.model_ema = true;
  c.model_ema_decay = 0.5;
  c.train.max_steps = 12;  // three evaluated epochs
  {
    std::FILE* devnull = std::fopen("/dev/null", "w");
    mo::tools::Trainer t(c, nullptr, devnull);
    t.fit();
    std::fclose(devnull);
  }
  const std::string svg = fs::absolute(c.train.output + "/curves.svg").string();
  ASSERT_TRUE(fs::exists(svg));

  Browser b;
  std::string why;
  ASSERT_TRUE(b.start(driver, chromium, mo::test::tmp_path("mo_curves_browser"), &why)) << why;
  b.open("file://" + svg);
  // An XML error would make Chromium show its error page (a <parsererror>) instead of the drawing.
  EXPECT_EQ(b.script("return document.documentElement.tagName + ' ' + "
                     "document.getElementsByTagName('parsererror').length + ' ' + "
                     "document.querySelectorAll('g.panel').length + ' ' + "
                     "document.querySelectorAll('g.series').length;"),
            "svg 0 4 7");  // loss: train, eval, EMA; top-1: eval, EMA; lr; images/s
  const std::string body =
      b.command("POST", "/execute/async", "{\"script\": " + json_quote(kPixelsJs) + ", \"args\": []}");
  std::string v;
  ASSERT_TRUE(json_string_field(body, "value", v)) << body;
  std::smatch m;
  ASSERT_TRUE(std::regex_match(v, m, std::regex(R"((\d+)x(\d+) (\d+) (\d+))"))) << v;
  EXPECT_EQ(m[1].str() + "x" + m[2].str(), "1040x640");
  EXPECT_GT(std::stol(m[3]), 2000) << v;  // the curves (2 px wide, 7 series over 4 panels)
  EXPECT_GT(std::stol(m[4]), 2000) << v;  // axes, ticks and text
  b.stop();
}
