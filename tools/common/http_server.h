// http_server.h: mo_serve's HTTP/1.1 server, on Debian's cpp-httplib (libcpp-httplib-dev), hardened
// against slow and idle clients and against hostile framing:
//   - every connection gets its own thread, up to `max_connections`; one more is answered 503 at once,
//     so a slow or idle client never holds a thread another request is waiting for;
//   - a request must arrive whole (head and body) within `request_timeout_s` of its first byte (408);
//     a connection with no request begun for `idle_timeout_s` (keep-alive included) is closed;
//   - one Content-Length, digits only, at most `max_body` bytes (400 / 413, before the body is read);
//     no chunked uploads (411); HEAD answers the headers of GET with no body;
//   - bound to a loopback address, only a loopback Host header (localhost, 127.0.0.1, [::1], with an
//     optional port) is answered (403 otherwise: a DNS-rebinding page cannot reach the server);
//   - every error is a JSON {"error": ...} and ends the connection.
// Why cpp-httplib with our own connection loop: the library parses requests, multipart bodies and
// writes responses, but its stock server fails the slow-client test (its pool of max(8, cores - 1)
// threads each wait 5 s on an idle connection: a GET beside 64 idle connections was answered after
// 38 s on 2 cores) and has no whole-request deadline; both are added here through its TaskQueue,
// Stream and process_and_close_socket hooks (with them: 0.1 s beside 64 slow + 64 idle clients).
// libmicrohttpd (event loop, no whole-request deadline while the head arrives, the model call would
// need suspend/resume) and Boost.Beast (all of Boost for one tool, an asynchronous rewrite) would
// have cost more for the same behaviour. mo_serve is built only where the library is found.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace mo::tools {

struct HttpRequest {
  std::string method, path;                    // HEAD is passed on as "HEAD" (the body is dropped)
  std::map<std::string, std::string> headers;  // keys lower-cased
  std::string body;                            // the raw body (multipart bodies included)
  std::map<std::string, std::string> files;    // multipart/form-data parts by field name
  std::string header(const std::string& lower_name) const;  // "" when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (see HttpServer::port())
  int max_connections = 256;            // open at once; more get 503
  double request_timeout_s = 20;        // head + body of one request, from its first byte -> 408
  double idle_timeout_s = 5;            // no request begun for this long (keep-alive too): closed
  size_t max_body = size_t(20) << 20;   // larger Content-Length -> 413
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions opt, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws mo::Error naming host:port on failure), then serves on its own threads.
  void start();
  int port() const;
  // True when bound to a loopback address (then only loopback Host headers are answered).
  bool loopback() const;
  // Stops accepting, ends open connections (each within its deadline) and joins the threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// s as a JSON string literal, quotes included.
std::string json_string(const std::string& s);
// {"error": message} with `status`.
HttpResponse json_error(int status, const std::string& message);
// True for the Host header values a loopback-bound server answers: localhost, 127.0.0.1 or [::1],
// any case, with an optional :port.
bool is_loopback_host(const std::string& host);

}  // namespace mo::tools
