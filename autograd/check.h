// check.h: error reporting for the whole project.
// MO_CHECK(cond, fmt, ...) throws mo::Error for user mistakes (bad shapes, dtypes, files, keys);
// MO_ASSERT aborts on broken internal invariants; *_CHECK macros wrap external libraries with file:line.
// Every mo::Error records where it was raised (file, line; __FILE__/__LINE__ rather than
// std::source_location because the .cu files build as C++17); MO_ERROR_LOCATION=1 appends it to the
// message, as TORCH_SHOW_CPP_STACKTRACES does for PyTorch. The message itself is unchanged otherwise.
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdexcept>
#include <string>

namespace mo {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
  Error(const std::string& msg, const char* file, int line);
  const char* file = nullptr;  // where it was raised (MO_CHECK / MO_FAIL), or null
  int line = 0;
};

[[noreturn]] void fail_internal(const char* file, int line, const std::string& msg);

}  // namespace mo

#define MO_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::mo::Error(fmt::format(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

#define MO_ASSERT(cond)                                                       \
  do {                                                                        \
    if (!(cond)) ::mo::fail_internal(__FILE__, __LINE__, "assertion " #cond); \
  } while (0)

#define MO_FAIL(...) throw ::mo::Error(fmt::format(__VA_ARGS__), __FILE__, __LINE__)
