// test_serve.cpp: the real mo_serve binary on a free port with a small random checkpoint: the page, the
// JSON top-5 of POST /predict (raw bytes and multipart) equal to mo_predict's and to the in-process
// inference path, for a checkpoint trained at 32 px too (its preprocessing, or the options'), batches
// equal to single images, GET /health, bad uploads answered with 4xx JSON while it keeps serving, the HTTP
// hardening: slow and idle clients do not delay a request, 408 for a request that does not arrive in
// time, the connection limit (503), HEAD without a body, repeated or malformed Content-Length, Host
// headers that are not loopback names (DNS rebinding), oversized bodies.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "autograd/graph.h"
#include "data/jpeg.h"
#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"
#include "tools/common/http_server.h"
#include "tools/common/trainer.h"
#include "tools/common/inference.h"

namespace fs = std::filesystem;
using namespace mo;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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
Socket connect_to(int port) {
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

void send_all(int fd, const std::string& data) {  // a server that answers early (413) may stop reading
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
Reply read_reply(int fd, bool to_close = false) {
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
Reply http(int port, const std::string& request, bool to_close = false) {
  Socket s = connect_to(port);
  if (s.fd < 0) return {};
  send_all(s.fd, request);
  if (to_close) ::shutdown(s.fd, SHUT_WR);
  return read_reply(s.fd, to_close);
}

Reply post(int port, const std::string& path, const std::string& body,
           const std::string& type = "application/octet-stream") {
  return http(port, "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + type +
                        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
}

Reply get(int port, const std::string& path, const std::string& host = "127.0.0.1") {
  return http(port, "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
}

// True when nothing has come back on fd and the server has not closed it.
bool still_waiting(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

std::string read_bytes(const std::string& path) {
  std::vector<uint8_t> v;
  std::string err;
  if (!data::read_file(path, v, err)) ADD_FAILURE() << err;
  return std::string(v.begin(), v.end());
}

struct Top {
  int64_t index;
  double prob;
};

std::vector<Top> parse_top5(const std::string& json) {
  std::vector<Top> out;
  static const std::regex re(R"re("index": (\d+), "name": "[^"]*", "prob": ([0-9.eE+-]+))re");
  for (std::sregex_iterator it(json.begin(), json.end(), re), end; it != end; ++it)
    out.push_back({std::stoll((*it)[1]), std::stod((*it)[2])});
  return out;
}

std::string image(const std::string& name) { return std::string(MO_SOURCE_DIR) + "/tests/data/images/" + name; }

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
void expect_mo_predicts(const std::string& weights, const std::string& options, const std::string& file,
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
constexpr double kRequestTimeout = 3, kIdleTimeout = 2;

void make_weights(const std::string& path) {
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

TEST_F(ServeTest, PageIsServed) {
  Reply r = get(port_, "/");
  ASSERT_EQ(r.status, 200) << r.head;
  EXPECT_NE(r.head.find("text/html"), std::string::npos);
  EXPECT_NE(r.body.find("fetch('/predict'"), std::string::npos);
  EXPECT_NE(r.body.find("</html>"), std::string::npos);
}

TEST_F(ServeTest, PredictMatchesMoPredictAndInference) {
  const std::string file = image("chelsea.jpg");
  Reply r = post(port_, "/predict", read_bytes(file));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.head.find("application/json"), std::string::npos);
  std::vector<Top> got = parse_top5(r.body);
  ASSERT_EQ(got.size(), 5u) << r.body;

  // the file stores no preprocessing: the defaults, as mo_predict's, said at start-up and in the answer
  EXPECT_NE(server_.said.find("preprocessing 224 px (default), crop_pct 1 (default), bicubic (default)"),
            std::string::npos) << server_.said;
  EXPECT_NE(r.body.find("\"preprocess\": {\"img_size\": 224, \"crop_pct\": 1, \"interpolation\": \"bicubic\", "
                        "\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}"),
            std::string::npos) << r.body;

  // in-process: the same weights and the eval transform
  tools::LoadedModel m = tools::load_model_for_eval(weights_, "test_mambaout", Device::cpu(), DType::f32);
  data::EvalTransformConfig tf = tools::eval_preprocess_for(m).transform;
  EXPECT_EQ(tf.size, 224);
  NoGradGuard ng;
  std::vector<double> p = tools::softmax(m.model->forward_nhwc(tools::load_images({file}, tf, Device::cpu(), DType::f32))
                                             .to_vector<float>());
  for (const Top& t : got) EXPECT_NEAR(t.prob, p[static_cast<size_t>(t.index)], 1e-6 * p[static_cast<size_t>(t.index)] + 1e-9);
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_GE(got[i].prob, got[i + 1].prob);
  EXPECT_EQ(*std::max_element(p.begin(), p.end()), p[static_cast<size_t>(got[0].index)]);

  expect_mo_predicts(weights_, "--model test_mambaout", file, r.body);
}

TEST_F(ServeTest, MultipartUploadGivesTheSameAnswer) {
  const std::string bytes = read_bytes(image("coffee.jpg"));
  Reply raw = post(port_, "/predict", bytes);
  ASSERT_EQ(raw.status, 200) << raw.body;
  const std::string b = "----moBoundary42";
  std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--" + b +
                     "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"coffee.jpg\"\r\n"
                     "Content-Type: image/jpeg\r\n\r\n" + bytes + "\r\n--" + b + "--\r\n";
  Reply mp = post(port_, "/predict", body, "multipart/form-data; boundary=" + b);
  ASSERT_EQ(mp.status, 200) << mp.body;
  std::vector<Top> a = parse_top5(raw.body), c = parse_top5(mp.body);
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(c.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(a[i].index, c[i].index);
    EXPECT_EQ(a[i].prob, c[i].prob);
  }
  // multipart without the "image" field; a part named by filename="image" only is not that field
  for (std::string part : {"name=\"other\"", "name=\"f\"; filename=\"image\""}) {
    std::string none = "--" + b + "\r\nContent-Disposition: form-data; " + part + "\r\n\r\nx\r\n--" + b + "--\r\n";
    Reply bad = post(port_, "/predict", none, "multipart/form-data; boundary=" + b);
    EXPECT_EQ(bad.status, 400) << part;
    EXPECT_NE(bad.body.find("no field 'image'"), std::string::npos) << bad.body;
  }
  // a truncated multipart body (no closing boundary)
  Reply cut = post(port_, "/predict", body.substr(0, body.size() / 2), "multipart/form-data; boundary=" + b);
  EXPECT_EQ(cut.status, 400) << cut.body;
  EXPECT_NE(cut.body.find("\"error\""), std::string::npos);
}

TEST_F(ServeTest, BadRequestsGet4xxJsonAndServerKeepsServing) {
  const std::string good = read_bytes(image("rocket.jpg"));
  Reply text = post(port_, "/predict", "this is not an image at all", "text/plain");
  EXPECT_EQ(text.status, 400) << text.body;
  EXPECT_NE(text.body.find("\"error\": "), std::string::npos) << text.body;

  Reply trunc = post(port_, "/predict", good.substr(0, good.size() / 2));
  EXPECT_EQ(trunc.status, 400) << trunc.body;
  EXPECT_NE(trunc.body.find("\"error\": "), std::string::npos) << trunc.body;

  Reply empty = post(port_, "/predict", "");
  EXPECT_EQ(empty.status, 400) << empty.body;

  Reply big = post(port_, "/predict", std::string(3u << 20, 'x'));  // the test server's limit is 2 MB
  EXPECT_EQ(big.status, 413) << big.head;
  EXPECT_NE(big.body.find("over the limit"), std::string::npos) << big.body;
  // announced but never sent: refused from the head, without waiting for the body
  for (const char* n : {"999999999999", "99999999999999999999999999999999"}) {
    Reply huge = http(port_, "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::string(n) + "\r\n\r\n");
    EXPECT_EQ(huge.status, 413) << n << "\n" << huge.head;
  }

  Reply missing = get(port_, "/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("\"error\""), std::string::npos);
  Reply get_predict = get(port_, "/predict");
  EXPECT_EQ(get_predict.status, 405);
  Reply put = http(port_, "PUT /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(put.status, 405);
  for (const char* junk : {"hello\r\n\r\n", "GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", "BREW / HTTP/1.1\r\n\r\n"}) {
    Reply garbage = http(port_, junk, /*to_close=*/true);
    EXPECT_EQ(garbage.status, 400) << junk;
    EXPECT_NE(garbage.body.find("\"error\""), std::string::npos) << junk;
  }

  Reply ok = post(port_, "/predict", good);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(parse_top5(ok.body).size(), 5u);
}

TEST_F(ServeTest, ConcurrentRequestsAllAnswered) {
  const std::string good = read_bytes(image("astronaut.jpg"));
  Reply ref = post(port_, "/predict", good);
  ASSERT_EQ(ref.status, 200);
  std::vector<Top> want = parse_top5(ref.body);
  std::vector<Reply> replies(6);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < replies.size(); ++i)
    ts.emplace_back([&, i] { replies[i] = i % 3 == 2 ? post(port_, "/predict", "junk") : post(port_, "/predict", good); });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < replies.size(); ++i) {
    if (i % 3 == 2) {
      EXPECT_EQ(replies[i].status, 400);
      continue;
    }
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    std::vector<Top> got = parse_top5(replies[i].body);
    ASSERT_EQ(got.size(), 5u);
    for (size_t k = 0; k < 5; ++k) EXPECT_EQ(got[k].index, want[k].index);
  }
}

// 64 clients sending one byte every 200 ms and 64 that send nothing hold connections while a normal
// request is answered within 1 s; all 128 are still open (not answered, not closed) when it is.
TEST_F(ServeTest, SlowAndIdleClientsDoNotDelayARequest) {
  const std::string good = read_bytes(image("coffee.jpg"));
  ASSERT_EQ(post(port_, "/predict", good).status, 200);  // warm
  std::vector<Socket> slow, idle;
  for (int i = 0; i < 64; ++i) {
    slow.push_back(connect_to(port_));
    idle.push_back(connect_to(port_));
    ASSERT_GE(slow.back().fd, 0);
    ASSERT_GE(idle.back().fd, 0);
  }
  const std::string dribble = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(4096, 'a');
  std::atomic<bool> done{false};
  std::thread drip([&] {
    for (size_t i = 0; !done; ++i) {
      for (const Socket& s : slow) ::send(s.fd, &dribble[i % dribble.size()], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto t0 = Clock::now();
  Reply r = post(port_, "/predict", good);
  const double took = seconds_since(t0);
  int open = 0;
  for (const auto* v : {&slow, &idle})
    for (const Socket& s : *v) open += still_waiting(s.fd);
  done = true;
  drip.join();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(took, 1.0) << "a request beside 64 slow and 64 idle connections took " << took << " s";
  EXPECT_EQ(open, 128) << "the slow and idle connections should still be open when the request is answered";
}

// A request that does not arrive whole within the deadline gets 408, wherever it stalls and even when
// its client keeps sending: in the request line, in the headers (a byte every 100 ms), in the body.
TEST_F(ServeTest, ASlowRequestGets408) {
  struct Case {
    std::string name, start, drip;
  };
  const std::vector<Case> cases = {
      {"request line", "POST /pre", ""},
      {"headers", "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", std::string(1000, 'a')},
      {"body", "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n", std::string(1000, 'x')},
  };
  std::vector<Reply> got(cases.size());
  std::vector<double> took(cases.size());
  std::vector<std::thread> ts;
  for (size_t k = 0; k < cases.size(); ++k)
    ts.emplace_back([&, k] {
      Socket s = connect_to(port_);
      auto t0 = Clock::now();
      send_all(s.fd, cases[k].start);
      for (size_t i = 0; i < cases[k].drip.size() && still_waiting(s.fd) && seconds_since(t0) < 30; ++i) {
        ::send(s.fd, &cases[k].drip[i], 1, MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      got[k] = read_reply(s.fd, /*to_close=*/true);
      took[k] = seconds_since(t0);
    });
  for (auto& t : ts) t.join();
  for (size_t k = 0; k < cases.size(); ++k) {
    EXPECT_EQ(got[k].status, 408) << cases[k].name << ": " << got[k].head;
    EXPECT_NE(got[k].body.find("did not arrive whole within 3 s"), std::string::npos) << got[k].body;
    EXPECT_GE(took[k], kRequestTimeout - 0.05) << cases[k].name;
  }
  EXPECT_EQ(post(port_, "/predict", read_bytes(image("coffee.jpg"))).status, 200);
}

TEST_F(ServeTest, IdleConnectionsAreClosedAndKeepAliveWorks) {
  Socket s = connect_to(port_);
  auto t0 = Clock::now();
  char c;
  EXPECT_EQ(::recv(s.fd, &c, 1, 0), 0) << "an idle connection should be closed by the server";
  EXPECT_GE(seconds_since(t0), kIdleTimeout - 0.05);

  // two requests on one connection, then it is closed after the idle time
  Socket k = connect_to(port_);
  for (int i = 0; i < 2; ++i) {
    send_all(k.fd, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    Reply r = read_reply(k.fd);
    EXPECT_EQ(r.status, 200) << "request " << i;
    EXPECT_NE(r.body.find("</html>"), std::string::npos);
  }
  EXPECT_EQ(::recv(k.fd, &c, 1, 0), 0);
}

TEST_F(ServeTest, HeadAnswersHeadersWithoutBody) {
  Reply g = get(port_, "/");
  ASSERT_EQ(g.status, 200);
  Reply h = http(port_, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", /*to_close=*/true);
  EXPECT_EQ(h.status, 200) << h.head;
  EXPECT_EQ(h.body, "") << "HEAD must not send a body";
  EXPECT_NE(h.head.find("Content-Length: " + std::to_string(g.body.size())), std::string::npos) << h.head;
  Reply hp = http(port_, "HEAD /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", true);
  EXPECT_EQ(hp.status, 405);
  EXPECT_EQ(hp.body, "");
}

// Two Content-Length headers (equal or not), a list, a sign, junk, chunked uploads and a POST without a
// length are refused before the body is read, and the rest of the bytes is not taken as a next request.
TEST_F(ServeTest, ContentLengthMustBeOneNumber) {
  const std::string jpeg = read_bytes(image("coffee.jpg"));
  const std::string n = std::to_string(jpeg.size());
  const std::string head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  struct Case {
    std::string headers;
    int status;
  };
  const std::vector<Case> cases = {
      {"Content-Length: " + n + "\r\nContent-Length: " + n + "\r\n", 400},
      {"Content-Length: 10\r\nContent-Length: " + n + "\r\n", 400},
      {"content-length: " + n + "\r\nCONTENT-LENGTH: 10\r\n", 400},
      {"Content-Length: " + n + ", " + n + "\r\n", 400},
      {"Content-Length: +" + n + "\r\n", 400},
      {"Content-Length: -1\r\n", 400},
      {"Content-Length: 0x10\r\n", 400},
      {"Content-Length: " + n + "abc\r\n", 400},
      {"Transfer-Encoding: chunked\r\n", 411},
      {"Content-Length: " + n + "\r\nTransfer-Encoding: chunked\r\n", 411},
      {"", 411},
  };
  for (const Case& c : cases) {
    // the body carries a second, valid request: it must not be answered
    std::string smuggled = "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    Reply r = http(port_, head + c.headers + "\r\n" + jpeg + smuggled, /*to_close=*/true);
    EXPECT_EQ(r.status, c.status) << c.headers << r.body;
    EXPECT_NE(r.body.find("\"error\""), std::string::npos) << c.headers;
    EXPECT_EQ(r.body.find("HTTP/1.1"), std::string::npos) << "a second answer on the connection: " << r.body;
  }
  Reply ok = http(port_, head + "Content-Length: " + n + "\r\n\r\n" + jpeg);
  EXPECT_EQ(ok.status, 200) << ok.body;
}

// Compressed uploads are refused (httplib would inflate a small gzip or brotli bomb into memory
// unbounded), as are heads over 64 KiB, in many lines or one.
TEST_F(ServeTest, EncodedBodiesAndHugeHeadsAreRefused) {
  const std::string jpeg = read_bytes(image("coffee.jpg"));
  const std::string head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(jpeg.size());
  for (const char* coding : {"gzip", "deflate", "br", "x-gzip", "GZIP", "gzip, br"}) {
    Reply r = http(port_, head + "\r\nContent-Encoding: " + coding + "\r\n\r\n" + jpeg, /*to_close=*/true);
    EXPECT_EQ(r.status, 415) << coding;
    EXPECT_NE(r.body.find("Content-Encoding"), std::string::npos) << r.body;
  }
  EXPECT_EQ(http(port_, head + "\r\nContent-Encoding: identity\r\n\r\n" + jpeg).status, 200);

  std::string many = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 80; ++i) many += "X-Pad-" + std::to_string(i) + ": " + std::string(1000, 'a') + "\r\n";
  Reply r = http(port_, many + "\r\n", /*to_close=*/true);
  EXPECT_EQ(r.status, 431) << r.head;
  Reply line = http(port_, "GET /" + std::string(70000, 'a') + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true);
  EXPECT_EQ(line.status, 431) << line.head;
  Reply uri = http(port_, "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true);
  EXPECT_EQ(uri.status, 414) << uri.head;
  EXPECT_EQ(get(port_, "/").status, 200);
}

TEST_F(ServeTest, OnlyLoopbackHostNamesAreAnswered) {
  const std::string p = std::to_string(port_);
  for (std::string host : std::vector<std::string>{"127.0.0.1", "127.0.0.1:" + p, "localhost", "LocalHost:" + p, "[::1]", "[::1]:" + p}) {
    Reply r = get(port_, "/", host);
    EXPECT_EQ(r.status, 200) << host;
  }
  for (std::string host : std::vector<std::string>{"evil.example", "evil.example:" + p, "localhost.evil.example", "127.0.0.1.nip.io",
                           "127.0.0.2", "0.0.0.0", "[::2]", "localhost:" + p + "x", "localhost:", "::1"}) {
    Reply r = get(port_, "/", host);
    EXPECT_EQ(r.status, 403) << "Host '" << host << "': " << r.head;
    EXPECT_NE(r.body.find("loopback"), std::string::npos) << r.body;
    Reply pr = http(port_, "POST /predict HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 4\r\n\r\nabcd");
    EXPECT_EQ(pr.status, 403) << host;
  }
  Reply two = http(port_, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n");
  EXPECT_EQ(two.status, 400);
  for (const char* none : {"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: \r\n\r\n"})
    EXPECT_EQ(http(port_, none).status, 400) << none;
}

// Beyond --max-connections a connection is answered 503 at once; when one closes, requests get through.
TEST(Serve, ConnectionLimit) {
  const std::string weights = mo::test::tmp_path("serve_limit.safetensors");
  make_weights(weights);
  ServeProcess srv;
  ASSERT_TRUE(srv.start(weights, {"--model", "test_mambaout", "--max-connections", "4", "--idle-timeout", "60"}))
      << srv.said;
  std::vector<Socket> held;
  for (int i = 0; i < 4; ++i) held.push_back(connect_to(srv.port));
  auto t0 = Clock::now();
  Reply r = get(srv.port, "/");
  EXPECT_EQ(r.status, 503) << r.head;
  EXPECT_NE(r.body.find("too many connections"), std::string::npos) << r.body;
  EXPECT_LT(seconds_since(t0), 10.0);
  held.pop_back();  // one slot frees once the server sees the close
  Reply ok;
  for (auto t1 = Clock::now(); ok.status != 200 && seconds_since(t1) < 30;) {
    ok = get(srv.port, "/");
    if (ok.status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ok.status, 200);
  held.clear();
  EXPECT_TRUE(srv.stop());
  fs::remove(weights);
}

TEST_F(ServeTest, HealthSaysModelDeviceUptimeAndRequests) {
  auto count = [](const std::string& j, const std::string& key) {
    std::smatch m;
    return std::regex_search(j, m, std::regex("\"" + key + "\": ([0-9.]+)")) ? std::stod(m[1]) : -1.0;
  };
  Reply a = get(port_, "/health");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_NE(a.head.find("application/json"), std::string::npos);
  for (const char* want : {"\"model\": \"test_mambaout\"", "\"classes\": 1000", "\"device\": \"cpu\"",
                           "\"precision\": \"fp32\"", "\"max_batch\": 1", "\"img_size\": 224"})
    EXPECT_NE(a.body.find(want), std::string::npos) << want << " in " << a.body;
  ASSERT_EQ(post(port_, "/predict", read_bytes(image("coffee.jpg"))).status, 200);
  ASSERT_EQ(post(port_, "/predict", "junk").status, 400);  // not a prediction served
  Reply b = get(port_, "/health");
  EXPECT_EQ(count(b.body, "requests"), count(a.body, "requests") + 1) << a.body << "\n" << b.body;
  EXPECT_GT(count(b.body, "uptime_s"), count(a.body, "uptime_s"));
  EXPECT_EQ(http(port_, "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").status, 405);
}

// A checkpoint trained at 32 px: mo_serve resizes as mo_predict does (the stored config) and gets its
// exact top-5, for an image of the folder and for a large photo; with --img-size / --crop-pct /
// --interpolation it agrees with mo_predict given the same options.
TEST(Serve, CheckpointTrainedAt32PxGivesMoPredictsTop5) {
  const std::string root = tools::testing::make_image_folder("serve_data32", 6, 4, 1);
  tools::TrainConfig c = tools::testing::small_config(root, mo::test::tmp_path("serve_run32"));
  c.model.num_classes = 6;
  c.sched.epochs = 1;
  c.sched.warmup_epochs = 0;
  c.sched.cooldown_epochs = 0;
  c.train.eval_every = 0;
  std::FILE* devnull = std::fopen("/dev/null", "w");
  std::string ckpt;
  {
    tools::Trainer t(c, nullptr, devnull);
    ckpt = t.fit().last_checkpoint;
  }
  std::fclose(devnull);
  ASSERT_FALSE(ckpt.empty());
  const std::vector<std::string> files = {root + "/val/class_4/0.jpg", image("chelsea.jpg")};

  ServeProcess srv;
  ASSERT_TRUE(srv.start(ckpt, {})) << srv.said;
  EXPECT_NE(srv.said.find("preprocessing 32 px (checkpoint), crop_pct 1 (checkpoint), bicubic (checkpoint)"),
            std::string::npos) << srv.said;
  for (const std::string& f : files) {
    Reply r = post(srv.port, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"img_size\": 32, \"crop_pct\": 1, \"interpolation\": \"bicubic\""), std::string::npos)
        << r.body;
    expect_mo_predicts(ckpt, "", f, r.body);
  }
  EXPECT_TRUE(srv.stop());

  ServeProcess opt;
  const std::vector<std::string> o = {"--img-size", "48", "--crop-pct", "0.875", "--interpolation", "bilinear"};
  ASSERT_TRUE(opt.start(ckpt, o)) << opt.said;
  EXPECT_NE(opt.said.find("preprocessing 48 px (option), crop_pct 0.875 (option), bilinear (option)"),
            std::string::npos) << opt.said;
  for (const std::string& f : files) {
    Reply r = post(opt.port, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"img_size\": 48, \"crop_pct\": 0.875, \"interpolation\": \"bilinear\""),
              std::string::npos) << r.body;
    expect_mo_predicts(ckpt, "--img-size 48 --crop-pct 0.875 --interpolation bilinear", f, r.body);
  }
  EXPECT_TRUE(opt.stop());
  fs::remove_all(root);
}

// --max-batch 4 with a 200 ms window on the CPU: concurrent requests run as batches (fewer batches than
// requests in /health) and each answer equals the unbatched one.
TEST(Serve, BatchedRequestsEqualSingleOnes) {
  const std::string weights = mo::test::tmp_path("serve_batch.safetensors");
  make_weights(weights);
  const std::vector<std::string> names = {"chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"};
  ServeProcess one, many;
  ASSERT_TRUE(one.start(weights, {"--model", "test_mambaout"})) << one.said;
  ASSERT_TRUE(many.start(weights, {"--model", "test_mambaout", "--max-batch", "4", "--batch-window-ms", "200"}))
      << many.said;
  std::vector<std::string> want;
  for (const std::string& n : names) want.push_back(post(one.port, "/predict", read_bytes(image(n))).body);
  std::vector<Reply> got(8);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < got.size(); ++i)
    ts.emplace_back([&, i] { got[i] = post(many.port, "/predict", read_bytes(image(names[i % 4]))); });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].status, 200) << got[i].body;
    std::vector<Top> a = parse_top5(want[i % 4]), b = parse_top5(got[i].body);
    ASSERT_EQ(a.size(), 5u);
    ASSERT_EQ(b.size(), 5u);
    for (size_t k = 0; k < 5; ++k) {
      EXPECT_EQ(a[k].index, b[k].index) << names[i % 4] << " rank " << k;
      EXPECT_NEAR(a[k].prob, b[k].prob, 1e-5 * a[k].prob) << names[i % 4] << " rank " << k;
    }
  }
  Reply h = get(many.port, "/health");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(h.body, m, std::regex("\"requests\": (\\d+), .*\"batches\": (\\d+)"))) << h.body;
  EXPECT_EQ(std::stoi(m[1]), 8);
  EXPECT_LT(std::stoi(m[2]), 8) << "no two requests were batched: " << h.body;
  EXPECT_TRUE(one.stop());
  EXPECT_TRUE(many.stop());
  fs::remove(weights);
}

// Mistakes on the command line end mo_serve at once with the option named; a port in use is an error
// (not a second server sharing it).
TEST_F(ServeTest, BadOptionsAndABusyPortAreErrors) {
  // `timeout`: a mo_serve that does start (say, sharing the busy port) fails the test instead of hanging it
  const std::string bin = "timeout 60 " + std::string(MO_BINARY_DIR) + "/tools/mo_serve --weights " + weights_ +
                          " --model test_mambaout --device cpu ";
  struct Case {
    std::string args, says;
  };
  for (const Case& c : std::vector<Case>{
           {"--port " + std::to_string(port_), "cannot listen on 127.0.0.1:" + std::to_string(port_) + ": Address already in use"},
           {"--precision bf16", "--precision bf16 needs a GPU"},
           {"--precision fp16", "--precision must be fp32 or bf16, got 'fp16'"},
           {"--interpolation nearest", "--interpolation must be bicubic or bilinear, got 'nearest'"},
           {"--img-size 8", "--img-size: expected an integer from 32 to 8192, got '8'"},
           {"--max-batch 0", "--max-batch: expected an integer from 1 to 1024, got '0'"},
           {"--max-connections x", "--max-connections: expected an integer"},
           {"--request-timeout 0", "--request-timeout: expected a number from 0.1"},
           {"--host no.such.host.invalid", "cannot listen on no.such.host.invalid:0"},
       }) {
    auto [rc, out] = mo::test::run_command(bin + (c.args.rfind("--port", 0) == 0 ? "" : "--port 0 ") + c.args);
    EXPECT_EQ(rc, 1) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.says), std::string::npos) << c.args << "\n" << out;
  }
  auto [rc, out] = mo::test::run_command(bin + "--workers 4");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("unknown argument --workers"), std::string::npos) << out;
  EXPECT_EQ(get(port_, "/").status, 200);
}

TEST(HttpHelpers, LoopbackHostAndJson) {
  for (const char* h : {"localhost", "LOCALHOST", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:1", "localhost:65535"})
    EXPECT_TRUE(tools::is_loopback_host(h)) << h;
  for (const char* h : {"", "::1", "[::1", "127.0.0.1:", "127.0.0.1:80:80", "127.1", "localhost.", "a.localhost",
                        "localhost:1234567", "localhost:-1", "127.0.0.1 x", "[::1]x"})
    EXPECT_FALSE(tools::is_loopback_host(h)) << h;
  EXPECT_EQ(tools::json_string("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
}

}  // namespace
