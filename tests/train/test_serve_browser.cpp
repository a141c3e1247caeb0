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
#include "tools/common/http_server.h"

namespace fs = std::filesystem;
using namespace mo;

namespace {

constexpr double kWaitS = 60;  // only against hangs: how long to poll for a page state or a process line

// ---------------------------------------------------------------------------------------------
// processes

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0 && fs::is_regular_file(p)) return p;
  }
  return "";
}

// Starts argv[0] in its own process group with stdout and stderr to `log` and the environment plus
// `env` ("KEY=value", replacing those keys); the child gets SIGKILL if this process dies first. Returns
// the pid (-1 on failure).
pid_t spawn(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  for (char** e = environ; *e; ++e) {
    bool replaced = false;
    for (const auto& o : env) replaced |= std::strncmp(*e, o.c_str(), o.find('=') + 1) == 0;
    if (!replaced) envp.push_back(*e);
  }
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) std::_Exit(126);
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ::execve(args[0], args.data(), envp.data());
  std::_Exit(127);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Polls `log` until `re` matches (returns the first group) or the process exits or kWaitS pass ("").
std::string wait_for_line(pid_t pid, const std::string& log, const std::regex& re) {
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < kWaitS) {
    std::string s = slurp(log);
    std::smatch m;
    if (std::regex_search(s, m, re)) return m[1];
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return "";
}

// Waits up to `seconds` for pid to exit; true and *status set when it did.
bool wait_exit(pid_t pid, double seconds, int* status) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > seconds) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// SIGKILLs every process whose command line contains `marker` (our private scratch folder, which holds
// the user-data-dir and HOME of the Chromium this test started: no other process names it), by pid.
int kill_processes_with(const std::string& marker) {
  int killed = 0;
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == ::getpid()) continue;
    std::string cmd = slurp(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmd.find(marker) != std::string::npos && ::kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++killed;
  }
  ::closedir(d);
  return killed;
}

// A watchdog for a process group that outlives this process on purpose: a shell in its own group
// that waits for EOF on a pipe only we hold open, then SIGKILLs group `pgid` and every process whose
// command line names `marker`. The pipe closes when Browser::stop() closes it or when this process
// dies in any way (a crash, ctest's timeout kill), so Chromium, which does not die with chromedriver,
// cannot be left running. Returns the pipe's write end (-1 on failure); *pid: the watchdog's.
int start_watchdog(pid_t pgid, const std::string& marker, pid_t* pid) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  const std::string script =
      "cat >/dev/null; kill -KILL -" + std::to_string(pgid) +
      " 2>/dev/null; for d in /proc/[0-9]*; do grep -qaF -- \"$0\" \"$d/cmdline\" 2>/dev/null && "
      "kill -KILL \"${d#/proc/}\" 2>/dev/null; done; exit 0";
  std::vector<std::string> argv = {"/bin/sh", "-c", script, marker};
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  *pid = ::fork();
  if (*pid < 0) {
    ::close(p[0]);
    ::close(p[1]);
    return -1;
  }
  if (*pid == 0) {
    ::setpgid(0, 0);
    ::dup2(p[0], 0);  // dup2 clears O_CLOEXEC on the copy
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 1), ::dup2(null, 2);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  ::close(p[0]);
  return p[1];
}

// ---------------------------------------------------------------------------------------------
// HTTP and the little JSON the WebDriver answers need

struct Reply {
  int status = 0;
  std::string body;
  std::string error;  // transport problem, when status is 0
};

Reply http(int port, const std::string& method, const std::string& path, const std::string& body,
           const std::string& type = "application/json; charset=utf-8") {
  Reply r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {0, "", "socket() failed"};
  timeval tv{120, 0};  // against hangs only
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return {0, "", "cannot connect to 127.0.0.1:" + std::to_string(port)};
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nConnection: close\r\n";
  if (method == "POST") req += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + (method == "POST" ? body : std::string());
  for (size_t off = 0; off < req.size();) {
    ssize_t w = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  std::string all;
  char buf[65536];
  size_t want = std::string::npos;  // header + Content-Length, once known
  while (all.size() < want) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
    size_t e = all.find("\r\n\r\n");
    if (want == std::string::npos && e != std::string::npos) {
      std::smatch m;
      std::string head = all.substr(0, e);
      if (std::regex_search(head, m, std::regex("\r\ncontent-length: *(\\d+)", std::regex::icase)))
        want = e + 4 + std::stoull(m[1]);
    }
  }
  ::close(fd);
  size_t e = all.find("\r\n\r\n");
  if (e == std::string::npos || all.compare(0, 9, "HTTP/1.1 ") != 0)
    return {0, "", "no HTTP answer from 127.0.0.1:" + std::to_string(port) + " to " + method + " " + path};
  r.status = std::stoi(all.substr(9, 3));
  r.body = all.substr(e + 4);
  return r;
}

// The string value of the first member named `key` (depth first, as it reads in the text) of a JSON
// reply; false when there is none, it is not a string, or the reply is not JSON.
bool json_string_field(const std::string& json, const std::string& key, std::string& out) {
  nn::io::Json doc;
  try {
    doc = nn::io::parse_json(json, "WebDriver reply");
  } catch (const mo::Error&) {
    return false;
  }
  std::function<const nn::io::Json*(const nn::io::Json&)> find = [&](const nn::io::Json& j) -> const nn::io::Json* {
    for (size_t i = 0; i < j.array.size(); ++i) {
      if (j.kind == nn::io::Json::Kind::object && j.keys[i] == key) return &j.array[i];
      if (const nn::io::Json* r = find(j.array[i])) return r;
    }
    return nullptr;
  };
  const nn::io::Json* v = find(doc);
  if (!v || v->kind != nn::io::Json::Kind::string) return false;
  out = v->s;
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep)) out.push_back(part);
  return out;
}

// ---------------------------------------------------------------------------------------------
// a WebDriver session in headless Chromium

class Browser {
 public:
  // Starts chromedriver on a free port and a headless Chromium session; *why says what failed.
  // Chromium's profile and HOME are in dir/chromium (its crash handler and caches write there, not to
  // ours); that folder's path is how stop() finds any Chromium process left.
  bool start(const std::string& chromedriver, const std::string& chromium, const fs::path& dir, std::string* why) {
    dir_ = (dir / "chromium").string();
    profile_ = dir_ + "/profile";
    log_ = (dir / "chromedriver.log").string();
    const std::string home = dir_ + "/home";
    fs::create_directories(profile_);
    fs::create_directories(home);
    pid_ = spawn({chromedriver, "--port=0"}, log_,
                 {"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/.config", "XDG_CACHE_HOME=" + home + "/.cache"});
    if (pid_ < 0) return *why = "cannot fork for chromedriver", false;
    watchdog_fd_ = start_watchdog(pid_, dir_, &watchdog_pid_);
    if (watchdog_fd_ < 0) return *why = "cannot start the watchdog for chromedriver", false;
    std::string port = wait_for_line(pid_, log_, std::regex(R"(started successfully on port (\d+))"));
    if (port.empty()) return *why = "chromedriver did not say its port:\n" + slurp(log_), false;
    port_ = std::stoi(port);
    std::string args;
    for (const char* a : {"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--window-size=1100,800", "--no-first-run", "--no-default-browser-check"})
      args += tools::json_string(a) + ", ";
    args += tools::json_string("--user-data-dir=" + profile_);
    Reply r = http(port_, "POST", "/session",
                   "{\"capabilities\": {\"alwaysMatch\": {\"browserName\": \"chrome\", \"goog:chromeOptions\": "
                   "{\"binary\": " + tools::json_string(chromium) + ", \"args\": [" + args + "]}}}}");
    if (r.status != 200 || !json_string_field(r.body, "sessionId", session_))
      return *why = "new WebDriver session failed (" + std::to_string(r.status) + r.error + "): " + r.body +
                    "\nchromedriver log:\n" + slurp(log_), false;
    return true;
  }

  // Quits the browser, ends chromedriver's process group and any Chromium process of our profile left.
  void stop() {
    if (!session_.empty()) http(port_, "DELETE", "/session/" + session_, "");
    session_.clear();
    if (pid_ > 0) {
      ::kill(-pid_, SIGTERM);
      int st = 0;
      if (!wait_exit(pid_, 10, &st)) {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
      }
      ::kill(-pid_, SIGKILL);  // anything left in its group
      pid_ = -1;
    }
    if (!dir_.empty()) kill_processes_with(dir_);
    if (watchdog_fd_ >= 0) {  // nothing left for it to end: let it go
      ::close(watchdog_fd_);
      watchdog_fd_ = -1;
      int st = 0;
      if (!wait_exit(watchdog_pid_, 30, &st)) ::kill(watchdog_pid_, SIGKILL), ::waitpid(watchdog_pid_, &st, 0);
    }
  }
  ~Browser() { stop(); }

  // One WebDriver command; a non-200 answer is a test failure (and "" is returned).
  std::string command(const std::string& method, const std::string& path, const std::string& body = "{}") {
    Reply r = http(port_, method, "/session/" + session_ + path, body);
    if (r.status != 200) {
      ADD_FAILURE() << method << " " << path << " -> " << r.status << r.error << ": " << r.body;
      return "";
    }
    return r.body;
  }
  // Runs a script in the page; false (and a test failure) unless it returned a string.
  bool run_script(const std::string& js, std::string& v) {
    std::string body = command("POST", "/execute/sync", "{\"script\": " + tools::json_string(js) + ", \"args\": []}");
    if (body.empty()) return false;
    if (json_string_field(body, "value", v)) return true;
    ADD_FAILURE() << "script gave no string: " << body;
    return false;
  }
  std::string script(const std::string& js) {
    std::string v;
    run_script(js, v);
    return v;
  }
  // Polls the script until it returns something other than "" (kWaitS at most); its last answer.
  std::string poll(const std::string& js) {
    auto t0 = std::chrono::steady_clock::now();
    std::string v;
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < kWaitS) {
      if (!run_script(js, v) || !v.empty()) return v;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return v;
  }
  void open(const std::string& url) { command("POST", "/url", "{\"url\": " + tools::json_string(url) + "}"); }
  // Element Send Keys with a path: chromedriver's file upload into an <input type=file>.
  bool upload(const std::string& css, const std::string& file) {
    std::string body = command("POST", "/element", "{\"using\": \"css selector\", \"value\": " + tools::json_string(css) + "}");
    std::string id;
    if (!json_string_field(body, "element-6066-11e4-a52e-4f735466cecf", id)) {
      ADD_FAILURE() << "no element " << css << ": " << body;
      return false;
    }
    return !command("POST", "/element/" + id + "/value", "{\"text\": " + tools::json_string(file) + "}").empty();
  }

 private:
  pid_t pid_ = -1, watchdog_pid_ = -1;
  int port_ = 0, watchdog_fd_ = -1;
  std::string session_, dir_, profile_, log_;
};

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
    ASSERT_EQ(browser_->poll("return document.readyState === 'complete' && document.getElementById('file') ? "
                             "document.title : '';"),
              "MambaOut classifier");
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
  // the model and its input, from /health, above the picker, which offers only JPEG files
  EXPECT_EQ(browser_->script("return document.getElementById('model').textContent;"),
            "test_mambaout (1000 classes) on cpu, fp32: input 224x224 px (shorter side to 224, bicubic, centre crop)");
  EXPECT_EQ(browser_->script("return document.getElementById('file').accept;"), ".jpg,.jpeg,image/jpeg");
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
  for (const Case& c : {Case{text, "cannot decode the upload as a JPEG image"}, Case{empty, "empty upload"},
                        Case{half, "cannot decode the upload as a JPEG image"}}) {
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
  EXPECT_NE(r.body.find("MambaOut classifier"), std::string::npos);
}

}  // namespace
