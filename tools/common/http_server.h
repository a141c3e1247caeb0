// http_server.h: a minimal HTTP/1.1 server on POSIX sockets for mo_serve: one accept thread hands
// connections to a small worker pool; each connection carries one request (Content-Length bodies only,
// no chunked uploads) and is closed after the response. Bodies over a size limit get 413 without being
// buffered. Also the small helpers the handlers need: JSON string escaping and multipart/form-data
// parsing of one file field.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mo::tools {

struct HttpRequest {
  std::string method, path, query;           // path without the query string
  std::map<std::string, std::string> headers;  // keys lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const;  // "" when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see HttpServer::port())
  int workers = 4;
  size_t max_body = size_t(20) << 20;   // larger Content-Length -> 413
  size_t max_header = size_t(64) << 10;  // larger request head -> 431
  int io_timeout_s = 15;                 // per read/write on a connection
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions opt, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws mo::Error naming host:port on failure), then starts the threads.
  void start();
  int port() const { return port_; }
  // Blocks until the accept thread ends (stop() or interrupt()).
  void wait();
  // Makes the accept thread end (only a shutdown() call: safe in a signal handler); then call stop().
  void interrupt();
  void stop();

 private:
  void accept_loop();
  void worker_loop();
  void serve_connection(int fd);

  HttpServerOptions opt_;
  HttpHandler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> queue_;
};

// The status line's reason phrase ("OK", "Not Found", ...).
const char* http_reason(int status);
// s as a JSON string literal, quotes included.
std::string json_string(const std::string& s);
// {"error": message} with `status`.
HttpResponse json_error(int status, const std::string& message);

// Finds the part named `field` in a multipart/form-data body. `content_type` is the request's header
// (it carries the boundary). False with `err` set when the body is malformed or has no such field.
bool multipart_field(const std::string& content_type, const std::string& body, const std::string& field,
                     std::string& out, std::string& err);

}  // namespace mo::tools
