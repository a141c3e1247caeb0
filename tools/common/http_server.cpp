// http_server.cpp: the socket loop, request parsing and multipart parsing behind http_server.h.
#include "tools/common/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "autograd/check.h"

namespace mo::tools {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void send_response(int fd, const HttpResponse& r) {
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + http_reason(r.status) +
                     "\r\nContent-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
                     "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n";
  if (send_all(fd, head.data(), head.size())) send_all(fd, r.body.data(), r.body.size());
}

// After an error response sent before the body was read: stop writing, then read and drop what the client
// still sends (bounded in time), so closing does not reset the connection before it reads the answer.
void drain_and_close(int fd) {
  ::shutdown(fd, SHUT_WR);
  char buf[65536];
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) break;
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) break;
  }
  ::close(fd);
}

}  // namespace

std::string HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

const char* http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    default: return "Unknown";
  }
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"') o += "\\\"";
    else if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\t') o += "\\t";
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += static_cast<char>(c);
  }
  return o + "\"";
}

HttpResponse json_error(int status, const std::string& message) {
  return {status, "application/json", "{\"error\": " + json_string(message) + "}"};
}

bool multipart_field(const std::string& content_type, const std::string& body, const std::string& field,
                     std::string& out, std::string& err) {
  std::string ct = lower(content_type);
  size_t b = ct.find("boundary=");
  if (ct.rfind("multipart/form-data", 0) != 0 || b == std::string::npos) {
    err = "Content-Type is not multipart/form-data with a boundary";
    return false;
  }
  std::string boundary = content_type.substr(b + 9);  // original case
  boundary = trim(boundary.substr(0, boundary.find(';')));
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  if (boundary.empty()) {
    err = "empty multipart boundary";
    return false;
  }
  const std::string delim = "--" + boundary;
  size_t pos = body.find(delim);
  if (pos == std::string::npos) {
    err = "multipart body has no boundary line";
    return false;
  }
  while (true) {
    pos += delim.size();
    if (body.compare(pos, 2, "--") == 0) break;  // closing delimiter
    if (body.compare(pos, 2, "\r\n") != 0) {
      err = "malformed multipart boundary line";
      return false;
    }
    pos += 2;
    size_t head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string::npos) {
      err = "truncated multipart part headers";
      return false;
    }
    std::string heads = body.substr(pos, head_end - pos);
    size_t data = head_end + 4;
    size_t next = body.find("\r\n" + delim, data);
    if (next == std::string::npos) {
      err = "truncated multipart body (no closing boundary)";
      return false;
    }
    // name="field" in the Content-Disposition header
    std::string name;
    size_t line = 0;
    while (line < heads.size()) {
      size_t eol = heads.find("\r\n", line);
      if (eol == std::string::npos) eol = heads.size();
      std::string h = heads.substr(line, eol - line);
      if (lower(h).rfind("content-disposition:", 0) == 0) {
        // name="..." but not filename="...": the parameter must follow ';' or a space
        for (size_t n = h.find("name=\""); n != std::string::npos; n = h.find("name=\"", n + 1)) {
          if (n > 0 && (h[n - 1] == ';' || h[n - 1] == ' ')) {
            size_t e = h.find('"', n + 6);
            if (e != std::string::npos) name = h.substr(n + 6, e - n - 6);
            break;
          }
        }
      }
      line = eol + 2;
    }
    if (name == field) {
      out = body.substr(data, next - data);
      return true;
    }
    pos = next + 2;
  }
  err = "multipart body has no field '" + field + "'";
  return false;
}

HttpServer::HttpServer(HttpServerOptions opt, HttpHandler handler) : opt_(std::move(opt)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string port = std::to_string(opt_.port);
  int rc = ::getaddrinfo(opt_.host.c_str(), port.c_str(), &hints, &res);
  MO_CHECK(rc == 0, "cannot resolve host '{}': {}", opt_.host, gai_strerror(rc));
  std::string last_err = "no address";
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_err = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      listen_fd_ = fd;
    } else {
      last_err = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  MO_CHECK(listen_fd_ >= 0, "cannot listen on {}:{}: {}", opt_.host, opt_.port, last_err);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  MO_CHECK(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0, "getsockname failed: {}",
           std::strerror(errno));
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  for (int i = 0; i < std::max(1, opt_.workers); ++i) workers_.emplace_back([this] { worker_loop(); });
  acceptor_ = std::thread([this] { accept_loop(); });
}

void HttpServer::wait() {
  if (acceptor_.joinable()) acceptor_.join();
}

void HttpServer::interrupt() {
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (acceptor_.joinable()) acceptor_.join();
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  for (int fd : queue_) ::close(fd);
  queue_.clear();
}

void HttpServer::accept_loop() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      break;  // listening socket shut down
    }
    timeval tv{opt_.io_timeout_s, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(fd);
    }
    cv_.notify_one();
  }
}

void HttpServer::worker_loop() {
  while (true) {
    int fd;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      fd = queue_.front();
      queue_.pop_front();
    }
    serve_connection(fd);
  }
}

void HttpServer::serve_connection(int fd) {
  std::string buf;
  char chunk[65536];
  size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > opt_.max_header) {
      send_response(fd, json_error(431, "request head larger than " + std::to_string(opt_.max_header) + " bytes"));
      return drain_and_close(fd);
    }
    ssize_t r = ::recv(fd, chunk, sizeof chunk, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (!buf.empty()) send_response(fd, json_error(400, "incomplete request head"));
      ::close(fd);
      return;
    }
    buf.append(chunk, static_cast<size_t>(r));
  }
  HttpRequest req;
  // request line
  size_t eol = buf.find("\r\n");
  std::string line = buf.substr(0, eol);
  size_t s1 = line.find(' '), s2 = line.rfind(' ');
  if (s1 == std::string::npos || s2 == s1 || line.compare(s2 + 1, 5, "HTTP/") != 0) {
    send_response(fd, json_error(400, "malformed request line"));
    return drain_and_close(fd);
  }
  req.method = line.substr(0, s1);
  std::string target = line.substr(s1 + 1, s2 - s1 - 1);
  size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) req.query = target.substr(q + 1);
  for (size_t p = eol + 2; p < head_end;) {
    size_t e = buf.find("\r\n", p);
    std::string h = buf.substr(p, e - p);
    size_t c = h.find(':');
    if (c != std::string::npos) req.headers[lower(trim(h.substr(0, c)))] = trim(h.substr(c + 1));
    p = e + 2;
  }
  size_t length = 0;
  std::string cl = req.header("content-length");
  if (!cl.empty()) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(cl.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || !std::isdigit(static_cast<unsigned char>(cl[0]))) {
      send_response(fd, json_error(400, "bad Content-Length '" + cl + "'"));
      return drain_and_close(fd);
    }
    if (v > opt_.max_body) {
      send_response(fd, json_error(413, "body of " + std::to_string(v) + " bytes is over the limit of " +
                                            std::to_string(opt_.max_body) + " bytes"));
      return drain_and_close(fd);
    }
    length = static_cast<size_t>(v);
  } else if (!req.header("transfer-encoding").empty()) {
    send_response(fd, json_error(411, "send the body with a Content-Length (chunked uploads are not supported)"));
    return drain_and_close(fd);
  }
  req.body = buf.substr(head_end + 4);
  if (req.body.size() > length) req.body.resize(length);  // one request per connection
  req.body.reserve(length);
  while (req.body.size() < length) {
    ssize_t r = ::recv(fd, chunk, std::min(sizeof chunk, length - req.body.size()), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      send_response(fd, json_error(r < 0 ? 408 : 400, "body ended after " + std::to_string(req.body.size()) +
                                                          " of " + std::to_string(length) + " bytes"));
      ::close(fd);
      return;
    }
    req.body.append(chunk, static_cast<size_t>(r));
  }
  HttpResponse resp;
  try {
    resp = handler_(req);
  } catch (const std::exception& e) {
    resp = json_error(500, e.what());
  }
  send_response(fd, resp);
  ::close(fd);  // the body was read to its end: nothing left to reset the connection over
}

}  // namespace mo::tools
