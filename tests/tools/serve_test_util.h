// serve_test_util.h: what the mo_serve tests (test_serve.cpp, test_serve_http.cpp) share: raw HTTP over
// loopback sockets with bounded waits, a mo_serve child process on a free port, the suite fixture with one
// server (short deadlines, 2 MB bodies), and the comparison of an answer with mo_predict's output.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/jpeg.h"
#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"

namespace mo::test::serve {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A socket closed when it goes out of scope.
struct Socket {
  int fd = -1;
  Socket() = default;
  explicit Socket(int f) : fd(f) {}
  Socket(Socket&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

// A connection to 127.0.0.1:port whose reads and writes give up after 30 s (a hang fails the test).
inline Socket connect_to(int port) {
  Socket s(::socket(AF_INET, SOCK_STREAM, 0));
  if (s.fd < 0) return s;
  timeval tv{30, 0};
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Socket();
  return s;
}

inline void send_all(int fd, const std::string& data) {  // a server that answers early (413) may stop reading
  for (size_t off = 0; off < data.size();) {
    ssize_t w = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
}

struct Reply {
  int status = 0;
  std::string head, body;
};

// One response: its head, then Content-Length bytes of body, or (`to_close`) everything until the
// server closes the connection.
inline Reply read_reply(int fd, bool to_close = false) {
  Reply r;
  std::string all;
  char buf[65536];
  size_t want = std::string::npos;
  while (all.size() < want) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
    size_t e = all.find("\r\n\r\n");
    if (!to_close && want == std::string::npos && e != std::string::npos) {
      std::smatch m;
      std::string head = all.substr(0, e);
      if (std::regex_search(head, m, std::regex("\r\ncontent-length: *(\\d+)", std::regex::icase)))
        want = e + 4 + std::stoull(m[1]);
    }
  }
  size_t e = all.find("\r\n\r\n");
  if (e == std::string::npos || all.compare(0, 9, "HTTP/1.1 ") != 0) return r;
  r.status = std::stoi(all.substr(9, 3));
  r.head = all.substr(0, e);
  r.body = all.substr(e + 4);
  return r;
}

// One request on a fresh connection (`to_close`: then no more is sent, and the reply is read to the end).
inline Reply http(int port, const std::string& request, bool to_close = false) {
  Socket s = connect_to(port);
  if (s.fd < 0) return {};
  send_all(s.fd, request);
  if (to_close) ::shutdown(s.fd, SHUT_WR);
  return read_reply(s.fd, to_close);
}

inline Reply post(int port, const std::string& path, const std::string& body,
           const std::string& type = "application/octet-stream") {
  return http(port, "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + type +
                        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
}

inline Reply get(int port, const std::string& path, const std::string& host = "127.0.0.1") {
  return http(port, "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
}

// True when nothing has come back on fd and the server has not closed it.
inline bool still_waiting(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

inline std::string read_bytes(const std::string& path) {
  std::vector<uint8_t> v;
  std::string err;
  if (!data::read_file(path, v, err)) ADD_FAILURE() << err;
  return std::string(v.begin(), v.end());
}

struct Top {
  int64_t index;
  double prob;
};

inline std::vector<Top> parse_top5(const std::string& json) {
  std::vector<Top> out;
  static const std::regex re(R"re("index": (\d+), "name": "[^"]*", "prob": ([0-9.eE+-]+))re");
  for (std::sregex_iterator it(json.begin(), json.end(), re), end; it != end; ++it)
    out.push_back({std::stoll((*it)[1]), std::stod((*it)[2])});
  return out;
}

inline std::string image(const std::string& name) { return std::string(MO_SOURCE_DIR) + "/tests/data/images/" + name; }

// A mo_serve process on a free port of 127.0.0.1.
struct ServeProcess {
  pid_t pid = -1;
  int port = 0;
  std::string said;  // its output up to the line that says where it listens

  // Starts `mo_serve --weights W --port 0 --device cpu ARGS`; false when it does not say where it listens.
  bool start(const std::string& weights, const std::vector<std::string>& args) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return false;
    std::vector<std::string> argv_s = {std::string(MO_BINARY_DIR) + "/tools/mo_serve", "--weights", weights,
                                       "--port", "0", "--device", "cpu"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      ::dup2(pipefd[1], 1);
      ::close(pipefd[0]);
      ::close(pipefd[1]);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    ::close(pipefd[1]);
    static const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+)/)");
    std::smatch m;
    std::string line;
    char c;
    while (::read(pipefd[0], &c, 1) == 1) {  // up to the line that says where it listens
      if (c != '\n') {
        line += c;
        continue;
      }
      said += line + "\n";
      if (std::regex_search(line, m, listening)) break;
      line.clear();
    }
    ::close(pipefd[0]);
    if (m.empty()) return false;
    port = std::stoi(m[1]);
    return true;
  }
  // SIGTERM; true when it then exits with status 0.
  bool stop() {
    if (pid <= 0) return true;
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
};

// mo_predict on `file` with `options` prints the top-5 of `json` (a /predict answer): the same classes in
// the same order, and the same percentages to its two decimals.
inline void expect_mo_predicts(const std::string& weights, const std::string& options, const std::string& file,
                        const std::string& json) {
  std::string cmd = std::string(MO_BINARY_DIR) + "/tools/mo_predict --weights " + weights + " --device cpu " + options +
                    " " + file;
  auto [rc, out] = mo::test::run_command(cmd);
  ASSERT_EQ(rc, 0) << out;
  static const std::regex line(R"(\s+([0-9.]+)%\s+.* \((\d+)\))");
  std::vector<std::pair<std::string, int64_t>> pred;
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it)
    pred.push_back({(*it)[1], std::stoll((*it)[2])});
  std::vector<Top> got = parse_top5(json);
  ASSERT_EQ(pred.size(), got.size()) << out << "\n" << json;
  ASSERT_GE(got.size(), 5u) << json;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(pred[i].second, got[i].index) << "rank " << i << "\n" << out << "\n" << json;
    EXPECT_EQ(pred[i].first, fmt::format("{:.2f}", 100.0 * got[i].prob)) << "rank " << i << "\n" << out << "\n" << json;
  }
}

// The suite's server: a request must arrive within 3 s, a connection idle for 2 s is closed, 2 MB bodies.
inline constexpr double kRequestTimeout = 3, kIdleTimeout = 2;

inline void make_weights(const std::string& path) {
  nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
  mc.num_classes = 1000;
  nn::MambaOut model(mc, 7);
  nn::io::save_model(model, path);
}

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mo_serve_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    weights_ = (dir_ / "tiny.safetensors").string();
    make_weights(weights_);
    ASSERT_TRUE(server_.start(weights_, {"--model", "test_mambaout", "--max-body-mb", "2", "--request-timeout",
                                         fmt::format("{}", kRequestTimeout), "--idle-timeout",
                                         fmt::format("{}", kIdleTimeout)}))
        << "mo_serve said: " << server_.said;
    port_ = server_.port;
  }
  static void TearDownTestSuite() {
    EXPECT_TRUE(server_.stop()) << "mo_serve did not exit cleanly on SIGTERM";
    fs::remove_all(dir_);
  }
  static inline fs::path dir_;
  static inline std::string weights_;
  static inline ServeProcess server_;
  static inline int port_ = 0;
};

}  // namespace mo::test::serve
