// browser_test_util.h: headless Chromium for the tests, driven over chromedriver's W3C WebDriver HTTP
// API (JSON over HTTP, no Selenium): child processes in their own groups that die with the test, a
// watchdog that ends Chromium should the test process be killed, a tiny HTTP client, and Browser (a
// WebDriver session: open a URL, run scripts, upload files). Used by test_serve_browser.cpp (mo_serve's
// page) and test_train_curves_browser.cpp (curves.svg). Needs Debian's chromium and chromium-driver.
#pragma once
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

#include <fmt/format.h>

#include "nn/io/json_lite.h"

namespace mo::test::browser {

namespace fs = std::filesystem;

// A JSON string literal for `s`.
inline std::string json_quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += static_cast<char>(c);
    else if (c < 0x20) o += fmt::format("\\u{:04x}", c);
    else o += static_cast<char>(c);
  }
  return o + "\"";
}

inline constexpr double kWaitS = 60;  // only against hangs: how long to poll for a page state or a process line

// ---------------------------------------------------------------------------------------------
// processes

inline std::string find_on_path(const std::string& name) {
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
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env = {}) {
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

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Polls `log` until `re` matches (returns the first group) or the process exits or kWaitS pass ("").
inline std::string wait_for_line(pid_t pid, const std::string& log, const std::regex& re) {
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
inline bool wait_exit(pid_t pid, double seconds, int* status) {
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
inline int kill_processes_with(const std::string& marker) {
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
inline int start_watchdog(pid_t pgid, const std::string& marker, pid_t* pid) {
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

inline Reply http(int port, const std::string& method, const std::string& path, const std::string& body,
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
inline bool json_string_field(const std::string& json, const std::string& key, std::string& out) {
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

inline std::vector<std::string> split(const std::string& s, char sep) {
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
      args += json_quote(a) + ", ";
    args += json_quote("--user-data-dir=" + profile_);
    Reply r = http(port_, "POST", "/session",
                   "{\"capabilities\": {\"alwaysMatch\": {\"browserName\": \"chrome\", \"goog:chromeOptions\": "
                   "{\"binary\": " + json_quote(chromium) + ", \"args\": [" + args + "]}}}}");
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
    std::string body = command("POST", "/execute/sync", "{\"script\": " + json_quote(js) + ", \"args\": []}");
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
  void open(const std::string& url) { command("POST", "/url", "{\"url\": " + json_quote(url) + "}"); }
  // Element Send Keys with a path: chromedriver's file upload into an <input type=file>.
  bool upload(const std::string& css, const std::string& file) {
    std::string body = command("POST", "/element", "{\"using\": \"css selector\", \"value\": " + json_quote(css) + "}");
    std::string id;
    if (!json_string_field(body, "element-6066-11e4-a52e-4f735466cecf", id)) {
      ADD_FAILURE() << "no element " << css << ": " << body;
      return false;
    }
    return !command("POST", "/element/" + id + "/value", "{\"text\": " + json_quote(file) + "}").empty();
  }

 private:
  pid_t pid_ = -1, watchdog_pid_ = -1;
  int port_ = 0, watchdog_fd_ = -1;
  std::string session_, dir_, profile_, log_;
};


}  // namespace mo::test::browser
