// check.h: error reporting for the whole project.
// MO_CHECK(cond, fmt, ...) throws mo::Error for user mistakes (bad shapes, dtypes, files, keys);
// MO_ASSERT aborts on broken internal invariants; *_CHECK macros wrap external libraries with file:line.
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdexcept>
#include <string>

namespace mo {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_internal(const char* file, int line, const std::string& msg);

}  // namespace mo

#define MO_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::mo::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

#define MO_ASSERT(cond)                                                       \
  do {                                                                        \
    if (!(cond)) ::mo::fail_internal(__FILE__, __LINE__, "assertion " #cond); \
  } while (0)

#define MO_FAIL(...) throw ::mo::Error(fmt::format(__VA_ARGS__))
