// test_serve_browser.cpp: the real mo_serve page in headless Chromium, driven over chromedriver's W3C
// WebDriver HTTP API (JSON over HTTP, no Selenium): a photo uploaded through the page's <input type=file>
// shows the image and five class rows whose names and percentages are mo_predict's on the same file; a
// text file, an empty file and a truncated JPEG show a clear error on the page, and the page and server
// still classify afterwards; the page names the model and its input size, offers only JPEG files and
// shows a 28 px image enlarged, pixelated. mo_serve and chromedriver run on free ports, Chromium with a private
// user-data-dir and HOME; all of them are ended at the end, also on failure, and a watchdog process ends
// Chromium should this test process be killed. Skips where Debian's chromium and
// chromium-driver are not installed (apt-get install chromium chromium-driver).
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "autograd/check.h"
#include "data/jpeg.h"
#include "nn/io/checkpoint_io.h"
#include "nn/io/json_lite.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"
#include "tests/engine/browser_test_util.h"
#include "tools/common/http_server.h"

namespace fs = std::filesystem;
using namespace mo;
using namespace mo::test::browser;

namespace {

// ---------------------------------------------------------------------------------------------

std::string image(const std::string& name) { return std::string(MO_SOURCE_DIR) + "/tests/data/images/" + name; }

// The page's answer for the file named `name`: "done", "error" or "" (still busy / another file).
const char* kStateJs = R"JS(
  const r = document.getElementById('results'), p = document.getElementById('preview');
  if (r.dataset.file !== arguments[0] || r.dataset.state === 'busy' || !r.dataset.state) return '';
  if (r.dataset.state === 'done' && !p.complete) return '';
  return r.dataset.state;)JS";

std::string wait_for_answer(Browser& b, const std::string& name) {
  std::string js = std::string("return (function() {") + kStateJs + "}).apply(null, [" + tools::json_string(name) + "]);";
  return b.poll(js);
}

// Each row as "name (index)\tpct%\tbar width", one per line; then "error:" and the error text.
const char* kRowsJs = R"JS(
  const rows = Array.from(document.querySelectorAll('#results .row')).map(r =>
    r.querySelector('.name').textContent + '\t' + r.querySelector('.pct').textContent + '\t' +
    r.querySelector('.fill').style.width);
  const e = document.getElementById('error');
  return rows.join('\n') + '\nerror:' + e.textContent + '\t' + getComputedStyle(e).color + '\t' +
         (e.getBoundingClientRect().height > 0 ? 'shown' : 'hidden');)JS";

struct PageRows {
  std::vector<std::string> names, pcts, widths;
  std::string error, error_color, error_shown;
};

PageRows read_rows(Browser& b) {
  PageRows pr;
  for (const std::string& line : split(b.script(kRowsJs), '\n')) {
    if (line.empty()) continue;  // no rows
    std::vector<std::string> f = split(line, '\t');
    if (line.rfind("error:", 0) == 0) {
      pr.error = f[0].substr(6);
      if (f.size() == 3) pr.error_color = f[1], pr.error_shown = f[2];
    } else if (f.size() == 3) {
      pr.names.push_back(f[0]);
      pr.pcts.push_back(f[1]);
      pr.widths.push_back(f[2]);
    } else {
      ADD_FAILURE() << "unexpected row on the page: " << line;
    }
  }
  return pr;
}

class ServeBrowserTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    chromium_ = find_on_path("chromium");
    if (chromium_.empty()) chromium_ = find_on_path("chromium-browser");
    std::string driver = find_on_path("chromedriver");
    const std::string bin = std::string(MO_BINARY_DIR) + "/tools/";
    if (chromium_.empty() || driver.empty()) {
      skip_ = "chromium or chromedriver not found on PATH (apt-get install chromium chromium-driver)";
      return;
    }
    if (::access((bin + "mo_serve").c_str(), X_OK) != 0 || ::access((bin + "mo_predict").c_str(), X_OK) != 0) {
      skip_ = "mo_serve / mo_predict not built in " + bin;
      return;
    }
    dir_ = fs::temp_directory_path() / ("mo_serve_browser_" + std::to_string(::getpid()));
    fs::create_directories(dir_);

    // A small random model with 1000 classes (so the ImageNet names apply); the classifier's last layer
    // is scaled up so that the top-5 probabilities differ visibly rather than all being about 0.1%.
    weights_ = (dir_ / "tiny.safetensors").string();
    nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
    mc.num_classes = 1000;
    nn::MambaOut model(mc, 11);
    for (auto& [name, t] : model.named_parameters())
      if (name.rfind("head.fc2.", 0) == 0) {
        float* p = t.data<float>();
        for (int64_t i = 0; i < t.numel(); ++i) p[i] *= 200.0f;
      }
    nn::io::save_model(model, weights_);

    const std::string serve_log = (dir_ / "mo_serve.log").string();
    serve_pid_ = spawn({bin + "mo_serve", "--weights", weights_, "--model", "test_mambaout", "--port", "0", "--device",
                        "cpu", "--max-body-mb", "2"},
                       serve_log);
    ASSERT_GT(serve_pid_, 0);
    std::string port = wait_for_line(serve_pid_, serve_log, std::regex(R"(http://127\.0\.0\.1:(\d+)/)"));
    ASSERT_FALSE(port.empty()) << "mo_serve said:\n" << slurp(serve_log);
    serve_port_ = std::stoi(port);

    browser_ = new Browser;
    std::string why;
    start_error_ = browser_->start(driver, chromium_, dir_, &why) ? "" : why;
  }
  static void TearDownTestSuite() {
    delete browser_;  // quits Chromium and ends chromedriver
    browser_ = nullptr;
    if (serve_pid_ > 0) {
      ::kill(serve_pid_, SIGTERM);
      int st = 0;
      if (!wait_exit(serve_pid_, 30, &st)) {
        ::kill(serve_pid_, SIGKILL);
        ::waitpid(serve_pid_, &st, 0);
        ADD_FAILURE() << "mo_serve did not end on SIGTERM";
      } else {
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "mo_serve did not exit cleanly on SIGTERM: " << st;
      }
      serve_pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_GT(serve_port_, 0);
    ASSERT_NE(browser_, nullptr);
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    browser_->open(url());
    // the title names the served model once /health has answered
    ASSERT_EQ(browser_->poll("return document.readyState === 'complete' && document.getElementById('file') && "
                             "document.title !== 'mo_serve image classifier' ? document.title : '';"),
              "test_mambaout classifier");
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(serve_port_) + "/"; }

  // Uploads `file` through the page and waits for its answer ("done" or "error").
  std::string classify(const std::string& file) {
    if (!browser_->upload("#file", file)) return "upload failed";
    return wait_for_answer(*browser_, fs::path(file).filename().string());
  }

  // mo_predict's five lines for `file`: ("12.34%", "name (index)").
  std::vector<std::pair<std::string, std::string>> mo_predict(const std::string& file) {
    std::string cmd = std::string(MO_BINARY_DIR) + "/tools/mo_predict --weights " + weights_ +
                      " --model test_mambaout --device cpu '" +
                      file + "'";
    std::vector<std::pair<std::string, std::string>> out;
    auto [rc, text] = mo::test::run_command(cmd);
    EXPECT_EQ(rc, 0) << text;
    static const std::regex line(R"(^ +([0-9.]+%)  (.*)$)");
    for (const std::string& l : split(text, '\n')) {
      std::smatch m;
      if (std::regex_match(l, m, line)) out.push_back({m[1], m[2]});
    }
    EXPECT_EQ(out.size(), 5u) << text;
    return out;
  }

  static inline std::string skip_, start_error_, chromium_, weights_;
  static inline fs::path dir_;
  static inline pid_t serve_pid_ = -1;
  static inline int serve_port_ = 0;
  static inline Browser* browser_ = nullptr;
};

TEST_F(ServeBrowserTest, PhotoUploadShowsImageAndMoPredictTop5) {
  const std::string photo = image("chelsea.jpg");
  ASSERT_EQ(classify(photo), "done") << browser_->script("return document.body.innerText;");

  // the picture is shown at its own size (451x300 fits the page)
  EXPECT_EQ(browser_->script("const p = document.getElementById('preview'); "
                             "return p.naturalWidth + 'x' + p.naturalHeight + ' ' + getComputedStyle(p).display;"),
            "451x300 block");

  PageRows page = read_rows(*browser_);
  auto want = mo_predict(photo);
  ASSERT_EQ(page.names.size(), 5u) << browser_->script("return document.body.innerText;");
  ASSERT_EQ(want.size(), 5u);
  double prev_width = 101;
  for (size_t i = 0; i < 5; ++i) {
    std::printf("page: %8s  %-40s  mo_predict: %8s  %s\n", page.pcts[i].c_str(), page.names[i].c_str(),
                want[i].first.c_str(), want[i].second.c_str());
    EXPECT_EQ(page.names[i], want[i].second) << "rank " << i;
    EXPECT_EQ(page.pcts[i], want[i].first) << "rank " << i << " (" << want[i].second << ")";
    // the bar is as long as the percentage says (one decimal), longest first
    ASSERT_EQ(page.widths[i].back(), '%') << page.widths[i];
    double w = std::stod(page.widths[i]);
    EXPECT_NEAR(w, std::stod(want[i].first), 0.0501) << page.widths[i] << " vs " << want[i].first;
    EXPECT_LE(w, prev_width);
    prev_width = w;
  }
  // the random model's scaled head makes the top classes distinct, so the comparison is not of equal 0.10%s
  EXPECT_NE(page.pcts[0], page.pcts[4]);
  EXPECT_EQ(page.error, "");
  EXPECT_NE(browser_->script("return document.getElementById('meta').textContent;").find("test_mambaout"),
            std::string::npos);
  // the model and its input, from /health, above the picker, which offers only what decodes (JPEG, PNG, WebP)
  EXPECT_EQ(browser_->script("return document.getElementById('model').textContent;"),
            "test_mambaout (1000 classes) on cpu, fp32: input 224x224 px (shorter side to 224, bicubic, centre crop)");
  EXPECT_EQ(browser_->script("return document.getElementById('file').accept;"),
            ".jpg,.jpeg,.png,.webp,image/jpeg,image/png,image/webp");
  EXPECT_EQ(browser_->script("return getComputedStyle(document.getElementById('preview')).imageRendering;"), "auto");
}

// A 28x28 image (Fashion-MNIST's size) is shown enlarged by a whole factor, pixelated; then a photo is
// shown at its own size again.
TEST_F(ServeBrowserTest, SmallImagesAreShownEnlarged) {
  std::vector<uint8_t> px(28 * 28 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 37) % 256);
  const std::string tiny = (dir_ / "tiny28.jpg").string();
  data::write_file(tiny, data::encode_jpeg(px.data(), 28, 28, 3));
  ASSERT_EQ(classify(tiny), "done") << browser_->script("return document.body.innerText;");
  const char* js = "const p = document.getElementById('preview'); if (p.dataset.sized !== p.src) return ''; "
                   "const r = p.getBoundingClientRect(); "
                   "return p.naturalWidth + ' ' + Math.round(r.width) + 'x' + Math.round(r.height) + ' ' + "
                   "getComputedStyle(p).imageRendering;";
  EXPECT_EQ(browser_->poll(js), "28 308x308 pixelated");  // 11 x 28: the largest whole factor within 320 px
  ASSERT_EQ(classify(image("chelsea.jpg")), "done");
  EXPECT_EQ(browser_->poll(js), "451 451x300 auto");
}

TEST_F(ServeBrowserTest, BadUploadsShowAnErrorAndTheServerKeepsServing) {
  const std::string rocket = slurp(image("rocket.jpg"));
  ASSERT_GT(rocket.size(), 1000u);
  const fs::path text = dir_ / "notes.txt", empty = dir_ / "empty.jpg", half = dir_ / "half_rocket.jpg";
  std::ofstream(text) << "this is a text file, not a photo\n";
  std::ofstream(empty).flush();
  std::ofstream(half, std::ios::binary) << rocket.substr(0, rocket.size() / 2);

  struct Case {
    fs::path file;
    std::string says;  // part of the server's message the page must show
  };
  for (const Case& c : {Case{text, "cannot decode the upload as an image (JPEG, PNG or WebP)"}, Case{empty, "empty upload"},
                        Case{half, "cannot decode the upload as an image (JPEG, PNG or WebP)"}}) {
    SCOPED_TRACE(c.file.filename().string());
    ASSERT_EQ(classify(c.file.string()), "error") << browser_->script("return document.body.innerText;");
    PageRows page = read_rows(*browser_);
    EXPECT_NE(page.error.find(c.says), std::string::npos) << "the page shows: '" << page.error << "'";
    EXPECT_EQ(page.error_shown, "shown");
    EXPECT_EQ(page.error_color, "rgb(176, 0, 32)");  // #b00020, the page's error red
    EXPECT_TRUE(page.names.empty()) << "result rows shown beside an error";
  }

  // the same page then classifies a good photo: rows back, the error gone
  ASSERT_EQ(classify(image("coffee.jpg")), "done") << browser_->script("return document.body.innerText;");
  PageRows page = read_rows(*browser_);
  EXPECT_EQ(page.error, "");
  auto want = mo_predict(image("coffee.jpg"));
  ASSERT_EQ(page.names.size(), 5u);
  ASSERT_EQ(want.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(page.names[i], want[i].second) << "rank " << i;
    EXPECT_EQ(page.pcts[i], want[i].first) << "rank " << i;
  }
  // and the server answers a plain request too
  Reply r = http(serve_port_, "GET", "/", "");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_NE(r.body.find("mo_serve image classifier"), std::string::npos);
}

}  // namespace
