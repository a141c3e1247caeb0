// check.cpp: the abort path for broken internal invariants, and the source location of errors.
#include "autograd/check.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mo {

namespace {
// The path from the source tree's top folder on (".../ops/linear/linear.cpp" -> "ops/linear/linear.cpp").
std::string short_path(const char* file) {
  std::string f = file;
  for (const char* top : {"/autograd/", "/ops/", "/nn/", "/data/", "/dist/", "/tools/", "/tests/"}) {
    size_t at = f.rfind(top);
    if (at != std::string::npos) return f.substr(at + 1);
  }
  return f;
}
std::string located(const std::string& msg, const char* file, int line) {
  const char* e = std::getenv("MO_ERROR_LOCATION");
  if (file == nullptr || e == nullptr || std::strcmp(e, "1") != 0) return msg;
  return msg + " [raised at " + short_path(file) + ":" + std::to_string(line) + "]";
}
}  // namespace

Error::Error(const std::string& msg, const char* f, int l) : std::runtime_error(located(msg, f, l)), file(f), line(l) {}

void fail_internal(const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "mo internal error at %s:%d: %s\n", file, line, msg.c_str());
  std::abort();
}
}  // namespace mo
