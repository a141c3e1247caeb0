// test_serve.cpp: the real mo_serve binary on a free port with a small random checkpoint: the page, the
// JSON top-5 of POST /predict (raw bytes and multipart) equal to mo_predict's and to the in-process
// inference path, and bad uploads (text, truncated JPEG, oversized body, wrong path) answered with 4xx JSON
// while the server keeps serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "tools/common/http_server.h"
#include "tools/common/inference.h"

namespace fs = std::filesystem;
using namespace mo;

namespace {

struct Reply {
  int status = 0;
  std::string head, body;
};

// One request on a fresh connection; reads until the server closes it.
Reply http(int port, const std::string& request) {
  Reply r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return r;
  }
  size_t off = 0;
  while (off < request.size()) {  // a server that answers early (413) may stop reading: ignore errors
    ssize_t w = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  std::string all;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t e = all.find("\r\n\r\n");
  if (e == std::string::npos || all.compare(0, 9, "HTTP/1.1 ") != 0) return r;
  r.status = std::stoi(all.substr(9, 3));
  r.head = all.substr(0, e);
  r.body = all.substr(e + 4);
  return r;
}

Reply post(int port, const std::string& path, const std::string& body,
           const std::string& type = "application/octet-stream") {
  return http(port, "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: " + type +
                        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
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

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mo_serve_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    weights_ = (dir_ / "tiny.safetensors").string();
    nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
    mc.num_classes = 1000;
    nn::MambaOut model(mc, 7);
    nn::io::save_model(model, weights_);

    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::dup2(pipefd[1], 1);
      ::close(pipefd[0]);
      ::close(pipefd[1]);
      std::string bin = std::string(MO_BINARY_DIR) + "/tools/mo_serve";
      ::execl(bin.c_str(), bin.c_str(), "--weights", weights_.c_str(), "--model", "test_mambaout", "--port", "0",
              "--device", "cpu", "--workers", "3", "--max-body-mb", "2", static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    ::close(pipefd[1]);
    std::string line;
    char c;
    while (::read(pipefd[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(pipefd[0]);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(http://127\.0\.0\.1:(\d+)/)"))) << "mo_serve said: " << line;
    port_ = std::stoi(m[1]);
  }
  static void TearDownTestSuite() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "mo_serve did not exit cleanly on SIGTERM: " << st;
    }
    fs::remove_all(dir_);
  }
  static inline fs::path dir_;
  static inline std::string weights_;
  static inline pid_t pid_ = -1;
  static inline int port_ = 0;
};

TEST_F(ServeTest, PageIsServed) {
  Reply r = http(port_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
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

  // in-process: the same weights and the eval transform (224, crop 1.0, bilinear)
  tools::LoadedModel m = tools::load_model_for_eval(weights_, "test_mambaout", Device::cpu(), DType::f32);
  data::EvalTransformConfig tf{224, 1.0, data::Interp::bilinear, false};
  NoGradGuard ng;
  std::vector<double> p = tools::softmax(m.model->forward_nhwc(tools::load_images({file}, tf, Device::cpu(), DType::f32))
                                             .to_vector<float>());
  for (const Top& t : got) EXPECT_NEAR(t.prob, p[static_cast<size_t>(t.index)], 1e-6 * p[static_cast<size_t>(t.index)] + 1e-9);
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_GE(got[i].prob, got[i + 1].prob);
  EXPECT_EQ(*std::max_element(p.begin(), p.end()), p[static_cast<size_t>(got[0].index)]);

  // the mo_predict binary on the same file and weights
  std::string cmd = std::string(MO_BINARY_DIR) + "/tools/mo_predict --weights " + weights_ +
                    " --model test_mambaout --device cpu --img-size 224 --crop-pct 1.0 --interpolation bilinear " + file;
  auto [rc, out] = mo::test::run_command(cmd);
  ASSERT_EQ(rc, 0) << out;
  std::regex line(R"(\s+([0-9.]+)%\s+.* \((\d+)\))");
  std::vector<std::pair<double, int64_t>> pred;
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it)
    pred.push_back({std::stod((*it)[1]), std::stoll((*it)[2])});
  ASSERT_EQ(pred.size(), 5u) << out;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(pred[i].second, got[i].index) << "rank " << i << "\n" << out << "\n" << r.body;
    EXPECT_NEAR(pred[i].first, 100.0 * got[i].prob, 0.005 + 1e-9);
  }
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
  // multipart without the "image" field
  std::string none = "--" + b + "\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--" + b + "--\r\n";
  Reply bad = post(port_, "/predict", none, "multipart/form-data; boundary=" + b);
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("\"error\""), std::string::npos);
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

  Reply missing = http(port_, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("\"error\""), std::string::npos);
  Reply get_predict = http(port_, "GET /predict HTTP/1.1\r\n\r\n");
  EXPECT_EQ(get_predict.status, 405);
  Reply garbage = http(port_, "hello\r\n\r\n");
  EXPECT_EQ(garbage.status, 400);

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

TEST(HttpHelpers, MultipartAndJson) {
  std::string out, err;
  std::string body = "--XY\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\nAB\r\nC\r\n--XY--\r\n";
  ASSERT_TRUE(tools::multipart_field("multipart/form-data; boundary=\"XY\"", body, "image", out, err)) << err;
  EXPECT_EQ(out, "AB\r\nC");
  EXPECT_FALSE(tools::multipart_field("multipart/form-data; boundary=XY", body.substr(0, 40), "image", out, err));
  EXPECT_FALSE(tools::multipart_field("text/plain", body, "image", out, err));
  // filename="image" must not match the field name
  std::string fn = "--XY\r\nContent-Disposition: form-data; name=\"f\"; filename=\"image\"\r\n\r\nZ\r\n--XY--\r\n";
  EXPECT_FALSE(tools::multipart_field("multipart/form-data; boundary=XY", fn, "image", out, err));
  EXPECT_EQ(tools::json_string("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
}

}  // namespace
