// http_server.cpp: http_server.h on cpp-httplib. httplib parses and answers; three pieces are ours:
// ConnectionPool (a thread per connection up to the limit, 503 beyond it), ConnStream (the socket with
// the per-request deadline and byte cap that httplib reads through) and Server::process_and_close_socket
// (the keep-alive loop: idle timeout, 408, close after every error). The checks on Host and
// Content-Length run before httplib reads a body.
#include "tools/common/http_server.h"
#include "nn/io/json_lite.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "autograd/check.h"

namespace mo::tools {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kWriteTimeoutS = 10;   // one write of a response
constexpr double kDrainS = 2;           // reading what a refused client still sends before closing
constexpr size_t kMaxHead = 64 << 10;   // request line + headers, counted in the per-request byte cap

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

const char* reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// A whole response for the cases httplib never gets to answer (408 before the request line ended, 503).
std::string raw_response(int status, const std::string& message) {
  std::string body = "{\"error\": " + json_string(message) + "}";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n" + body;
}

// The accepted socket as httplib's Stream: reads are buffered, wait at most until the request's deadline
// and stop at its byte cap; everything stops when the listening socket is closed (server stopping).
class ConnStream final : public httplib::Stream {
 public:
  ConnStream(int fd, const std::atomic<socket_t>& listening) : fd_(fd), listening_(listening) {}

  bool is_readable() const override { return pos_ < len_ || wait(POLLIN, deadline_) > 0; }
  bool is_writable() const override { return wait(POLLOUT, after(kWriteTimeoutS), /*stoppable=*/false) > 0; }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      if (got_ >= cap_) {
        over_cap_ = true;
        return -1;
      }
      int w = wait(POLLIN, deadline_);
      if (w == 0) timed_out_ = true;
      if (w <= 0) return -1;
      if (!fill(std::min(sizeof buf_, cap_ - got_))) return -1;
    }
    size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (wait(POLLOUT, after(kWriteTimeoutS), /*stoppable=*/false) <= 0) return -1;
    ssize_t w;
    do w = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w > 0) written_ += static_cast<size_t>(w);
    return w < 0 ? -1 : w;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

  // Waits up to idle_s for the first byte of the next request. False when none came, the client closed
  // the connection or the server is stopping.
  bool await_request(double idle_s) {
    if (pos_ < len_) return true;
    return wait(POLLIN, after(idle_s)) > 0 && fill(sizeof buf_);
  }
  // Starts the clock and the byte count of one request (bytes already buffered count towards it): at
  // most kMaxHead bytes until allow_body() says how long the body is.
  void begin_request(double timeout_s) {
    deadline_ = after(timeout_s);
    cap_ = kMaxHead;
    got_ = len_ - pos_;
    timed_out_ = over_cap_ = head_done_ = false;
    written_ = 0;
  }
  void allow_body(size_t n) {
    cap_ = kMaxHead + n;
    head_done_ = true;
  }
  bool write_all(const std::string& s) {
    for (size_t off = 0; off < s.size();) {
      ssize_t w = write(s.data() + off, s.size() - off);
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  }
  // After a refusal: stop writing, read and drop what the client still sends (bounded), then close, so
  // unread input does not make the kernel reset the connection before the client reads the answer.
  void drain() {
    ::shutdown(fd_, SHUT_WR);
    const auto end = after(kDrainS);
    while (wait(POLLIN, end) > 0) {
      char sink[65536];
      ssize_t r = ::recv(fd_, sink, sizeof sink, 0);
      if (r <= 0 && !(r < 0 && errno == EINTR)) break;
    }
  }

  bool timed_out() const { return timed_out_; }
  bool over_cap() const { return over_cap_; }
  bool head_done() const { return head_done_; }
  size_t written() const { return written_; }

 private:
  static Clock::time_point after(double s) {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  // 1: ready, 0: deadline passed, -1: error, hang-up without data, or the server is stopping.
  int wait(short events, Clock::time_point deadline, bool stoppable = true) const {
    while (true) {
      if (stoppable && listening_ == INVALID_SOCKET) return -1;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return 0;
      pollfd p{fd_, events, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 200)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return -1;
      if (r > 0) return (p.revents & events) ? 1 : -1;
    }
  }
  bool fill(size_t max) {
    ssize_t r;
    do r = ::recv(fd_, buf_, max, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0) return false;
    pos_ = 0;
    len_ = static_cast<size_t>(r);
    got_ += len_;
    return true;
  }
  template <class F>
  void address(F get, std::string& ip, int& port) const {
    sockaddr_storage ss{};
    socklen_t n = sizeof ss;
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&ss), &n) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      port = ntohs(a->sin6_port);
    } else if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
      port = ntohs(a->sin_port);
    }
    ip = text;
  }

  int fd_;
  const std::atomic<socket_t>& listening_;
  char buf_[16384];
  size_t pos_ = 0, len_ = 0, got_ = 0, cap_ = 0, written_ = 0;
  Clock::time_point deadline_ = Clock::now();
  bool timed_out_ = false, over_cap_ = false, head_done_ = false;
};

// What the request callbacks of one connection's thread need to know about it.
struct Connection {
  ConnStream* stream;
  bool close = false;  // end the connection after this response
};
thread_local Connection* t_conn = nullptr;
thread_local bool t_reject = false;  // this thread answers 503 to the connections it is handed

// httplib's TaskQueue: a thread per open connection, started on demand up to `limit` (idle ones wait
// for the next connection); connections beyond the limit, or when no thread can be started, go to one
// thread that answers 503 and closes them.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(size_t limit) : limit_(limit) {
    rejecter_ = std::thread([this] { reject_loop(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (busy_ + jobs_.size() >= limit_) return reject(std::move(fn));
    jobs_.push_back(std::move(fn));
    if (idle_ < jobs_.size()) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (const std::system_error&) {  // out of threads: refuse rather than queue behind others
        if (idle_ == 0) {
          reject(std::move(jobs_.back()));
          jobs_.pop_back();
          return;
        }
      }
    }
    cv_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    reject_cv_.notify_all();
    for (auto& t : threads_) t.join();
    rejecter_.join();
  }

 private:
  void reject(std::function<void()> fn) {  // mu_ held
    rejects_.push_back(std::move(fn));
    reject_cv_.notify_one();
  }
  void work() {
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      ++idle_;
      cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_;
      lk.unlock();
      fn();
      lk.lock();
      --busy_;
    }
  }
  void reject_loop() {
    t_reject = true;
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      reject_cv_.wait(lk, [&] { return stop_ || !rejects_.empty(); });
      if (rejects_.empty()) return;
      auto fn = std::move(rejects_.front());
      rejects_.pop_front();
      lk.unlock();
      fn();
      lk.lock();
    }
  }

  const size_t limit_;
  size_t busy_ = 0, idle_ = 0;
  bool stop_ = false;
  std::deque<std::function<void()>> jobs_, rejects_;
  std::vector<std::thread> threads_;
  std::thread rejecter_;
  std::mutex mu_;
  std::condition_variable cv_, reject_cv_;
};

bool loopback_address(int fd) {
  sockaddr_storage ss{};
  socklen_t n = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &n) != 0) return false;
  if (ss.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  return false;
}

// httplib::Server with our connection loop in place of its own (see the file note).
class Server final : public httplib::Server {
 public:
  explicit Server(const HttpServerOptions& opt) : opt_(opt) {}
  socket_t listening() const { return svr_sock_; }

 private:
  bool process_and_close_socket(socket_t sock) override {
    if (t_reject) {
      const std::string no = raw_response(503, "too many connections (the limit is " +
                                                    std::to_string(opt_.max_connections) + "): try again");
      (void)::send(sock, no.data(), no.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // a fresh socket has room
      ::shutdown(sock, SHUT_WR);
      char sink[65536];  // what has arrived already, without waiting: this thread answers every refusal
      while (::recv(sock, sink, sizeof sink, MSG_DONTWAIT) > 0) {
      }
      ::close(sock);
      return false;
    }
    // Headers and body leave in separate writes: with Nagle's algorithm on, the body waits for the ACK of
    // the headers, which a client delays by up to 40 ms (every answer at concurrency 1 took 48 ms).
    int one = 1;
    (void)::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ConnStream s(sock, svr_sock_);
    Connection conn{&s};
    t_conn = &conn;
    bool ret = false;
    for (size_t n = 0; n < keep_alive_max_count_ && s.await_request(opt_.idle_timeout_s); ++n) {
      s.begin_request(opt_.request_timeout_s);
      bool closed = false;
      ret = process_request(s, n + 1 == keep_alive_max_count_, closed, nullptr);
      if (!ret && s.written() == 0 && (s.timed_out() || s.over_cap())) {  // cut off inside the request line
        conn.close = true;
        s.write_all(s.timed_out() ? raw_response(408, timeout_message()) : raw_response(431, head_message()));
      }
      if (!ret || closed || conn.close) break;
    }
    t_conn = nullptr;
    if (conn.close) s.drain();
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }

 public:
  std::string timeout_message() const {
    return fmt::format("the request did not arrive whole within {} s", opt_.request_timeout_s);
  }
  static std::string head_message() { return fmt::format("request head larger than {} bytes", kMaxHead); }

 private:
  const HttpServerOptions& opt_;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions opt;
  HttpHandler handler;
  Server svr{opt};
  std::thread listener;
  std::atomic<bool> listener_done{false};
  int port = 0;
  bool loopback = false;

  // The refusals decided from the head alone, before any body is read.
  std::optional<HttpResponse> refuse(const httplib::Request& req) const {
    const size_t hosts = req.get_header_value_count("Host");
    if (hosts > 1) return json_error(400, "more than one Host header");
    if (hosts == 0 && req.version != "HTTP/1.0") return json_error(400, "an HTTP/1.1 request needs a Host header");
    if (loopback && hosts == 1 && !is_loopback_host(req.get_header_value("Host")))
      return json_error(403, "Host '" + req.get_header_value("Host") +
                                 "' is refused: this server listens on a loopback address and answers only "
                                 "Host localhost, 127.0.0.1 or [::1] (with an optional port)");
    const std::string coding = lower(trim(req.get_header_value("Content-Encoding")));
    if (req.get_header_value_count("Content-Encoding") > 1 || !(coding.empty() || coding == "identity"))
      return json_error(415, "Content-Encoding '" + req.get_header_value("Content-Encoding") +
                                 "' is not accepted: send the file's bytes as they are");
    if (req.has_header("Transfer-Encoding"))
      return json_error(411, "send the body with a Content-Length (Transfer-Encoding is not supported)");
    const size_t lengths = req.get_header_value_count("Content-Length");
    if (lengths > 1) return json_error(400, "more than one Content-Length header");
    if (lengths == 1) {
      std::string v = trim(req.get_header_value("Content-Length"));
      if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return json_error(400, "bad Content-Length '" + v + "'");
      v.erase(0, std::min(v.find_first_not_of('0'), v.size() - 1));        // leading zeros
      const unsigned long long n = v.size() > 18 ? ~0ull : std::stoull(v);  // 19 digits or more: over any limit
      if (n > opt.max_body)
        return json_error(413, "body of " + v + " bytes is over the limit of " + std::to_string(opt.max_body) + " bytes");
      if (t_conn) t_conn->stream->allow_body(static_cast<size_t>(n));
    } else if (req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
      return json_error(411, "send the body with a Content-Length");
    }
    return std::nullopt;
  }

  static void set(httplib::Response& res, const HttpResponse& r) {
    res.status = r.status;
    res.set_content(r.body, r.content_type);
  }

  void configure() {
    svr.set_keep_alive_max_count(100);
    svr.set_keep_alive_timeout(static_cast<time_t>(std::max(1.0, opt.idle_timeout_s)));  // the header's value
    svr.set_payload_max_length(opt.max_body);
    // SO_REUSEADDR (restart while old connections linger) but not httplib's default SO_REUSEPORT, with
    // which a second server on the same port would start too and silently take half the connections
    svr.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    svr.set_default_headers({{"Cache-Control", "no-store"}, {"X-Content-Type-Options", "nosniff"}});
    svr.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
      auto no = refuse(req);
      if (!no) return 100;
      set(res, *no);
      if (t_conn) t_conn->close = true;
      return no->status;
    });
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      auto no = refuse(req);
      if (!no) return httplib::Server::HandlerResponse::Unhandled;
      set(res, *no);
      if (t_conn) t_conn->close = true;
      return httplib::Server::HandlerResponse::Handled;
    });
    // every status >= 400 (ours and httplib's): a JSON body, 408 / 413 when our stream cut the request
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request&, httplib::Response& res) {
      if (t_conn) {
        t_conn->close = true;
        if (t_conn->stream->timed_out()) set(res, json_error(408, svr.timeout_message()));
        else if (t_conn->stream->over_cap())
          set(res, t_conn->stream->head_done() ? json_error(413, "body longer than its Content-Length allows")
                                               : json_error(431, Server::head_message()));
      }
      if (res.body.empty()) set(res, json_error(res.status, reason(res.status)));
      return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.status < 400 && !(t_conn && t_conn->close)) return;
      if (t_conn) t_conn->close = true;
      res.headers.erase("Keep-Alive");
      if (!res.has_header("Connection")) res.set_header("Connection", "close");
    });
    auto dispatch = [this](const httplib::Request& r, httplib::Response& res) {
      HttpRequest q;
      q.method = r.method;
      q.path = r.path;
      for (const auto& [k, v] : r.headers) q.headers.emplace(lower(k), v);
      q.body = r.body;
      for (const auto& [name, part] : r.files) q.files.emplace(name, part.content);  // the first of a name
      HttpResponse a;
      try {
        a = handler(q);
      } catch (const std::exception& e) {
        a = json_error(500, e.what());
      }
      set(res, a);
    };
    svr.Get(".*", dispatch);  // GET and HEAD
    svr.Post(".*", dispatch);
    svr.Put(".*", dispatch);
    svr.Patch(".*", dispatch);
    svr.Delete(".*", dispatch);
    svr.Options(".*", dispatch);
  }
};

std::string HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpServer::HttpServer(HttpServerOptions opt, HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(opt);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::port() const { return impl_->port; }
bool HttpServer::loopback() const { return impl_->loopback; }

void HttpServer::start() {
  Impl& m = *impl_;
  MO_CHECK(m.opt.max_connections >= 1, "max_connections must be at least 1, got {}", m.opt.max_connections);
  m.configure();
  errno = 0;
  m.port = m.opt.port == 0 ? m.svr.bind_to_any_port(m.opt.host)
                           : (m.svr.bind_to_port(m.opt.host, m.opt.port) ? m.opt.port : -1);
  MO_CHECK(m.port > 0, "cannot listen on {}:{}: {}", m.opt.host, m.opt.port,
           errno ? std::strerror(errno) : "not an address of this machine");
  ::listen(m.svr.listening(), 511);  // httplib listens with a backlog of 5: a burst of clients would wait
  m.loopback = loopback_address(m.svr.listening());
  std::unique_ptr<ConnectionPool> pool;
  try {
    pool = std::make_unique<ConnectionPool>(static_cast<size_t>(m.opt.max_connections));
    m.svr.new_task_queue = [p = pool.get()] { return p; };  // httplib owns it from here
    m.listener = std::thread([&m] {
      m.svr.listen_after_bind();
      m.listener_done = true;
    });
  } catch (const std::system_error& e) {
    MO_CHECK(false, "cannot start the server's threads: {}", e.what());
  }
  pool.release();
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.listener.joinable()) return;
  while (!m.svr.is_running() && !m.listener_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  m.svr.stop();
  m.listener.join();
}

std::string json_string(const std::string& s) { return nn::io::json_quote(s); }

HttpResponse json_error(int status, const std::string& message) {
  return {status, "application/json", "{\"error\": " + json_string(message) + "}"};
}

bool is_loopback_host(const std::string& host) {
  std::string h = lower(trim(host)), port;
  if (!h.empty() && h[0] == '[') {
    size_t e = h.find(']');
    if (e == std::string::npos) return false;
    port = h.substr(e + 1);
    h = h.substr(0, e + 1);
  } else if (size_t c = h.find(':'); c != std::string::npos) {
    port = h.substr(c);
    h = h.substr(0, c);
  }
  if (!port.empty() && (port.size() < 2 || port.size() > 6 || port[0] != ':' ||
                        !std::all_of(port.begin() + 1, port.end(), [](char c) { return c >= '0' && c <= '9'; })))
    return false;
  return h == "localhost" || h == "127.0.0.1" || h == "[::1]";
}

}  // namespace mo::tools
