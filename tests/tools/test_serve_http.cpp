// test_serve_http.cpp: mo_serve's HTTP hardening (tools/common/http_server.h), on the real binary: 64
// slow and 64 idle clients do not delay a request, 408 for a request that does not arrive in time, idle
// connections closed, keep-alive, the connection limit (503), HEAD without a body, repeated or malformed
// Content-Length (and the request smuggled behind it), compressed bodies and huge heads, Host headers
// that are not loopback names (DNS rebinding).
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/tools/serve_test_util.h"
#include "tools/common/http_server.h"

using namespace mo;
using namespace mo::test::serve;

namespace {

class ServeHttpTest : public ServeTest {};

TEST_F(ServeHttpTest, SlowAndIdleClientsDoNotDelayARequest) {
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

TEST_F(ServeHttpTest, ASlowRequestGets408) {
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

TEST_F(ServeHttpTest, IdleConnectionsAreClosedAndKeepAliveWorks) {
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

TEST_F(ServeHttpTest, HeadAnswersHeadersWithoutBody) {
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

TEST_F(ServeHttpTest, ContentLengthMustBeOneNumber) {
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

TEST_F(ServeHttpTest, EncodedBodiesAndHugeHeadsAreRefused) {
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

TEST_F(ServeHttpTest, OnlyLoopbackHostNamesAreAnswered) {
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

TEST(ServeHttp, ConnectionLimit) {
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

TEST(HttpHelpers, LoopbackHostAndJson) {
  for (const char* h : {"localhost", "LOCALHOST", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:1", "localhost:65535"})
    EXPECT_TRUE(tools::is_loopback_host(h)) << h;
  for (const char* h : {"", "::1", "[::1", "127.0.0.1:", "127.0.0.1:80:80", "127.1", "localhost.", "a.localhost",
                        "localhost:1234567", "localhost:-1", "127.0.0.1 x", "[::1]x"})
    EXPECT_FALSE(tools::is_loopback_host(h)) << h;
  EXPECT_EQ(tools::json_string("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
}

}  // namespace
