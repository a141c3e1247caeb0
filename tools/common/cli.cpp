// cli.cpp: see cli.h.
#include "tools/common/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "autograd/check.h"
#include "autograd/cuda_allocator.h"

namespace mo::tools {

namespace {

std::string range_text(int64_t lo, int64_t hi) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  if (lo == kMin && hi == kMax) return "an integer";
  if (hi == kMax) return fmt::format("an integer >= {}", lo);
  if (lo == kMin) return fmt::format("an integer <= {}", hi);
  return fmt::format("an integer from {} to {}", lo, hi);
}

std::string range_text(double lo, double hi) {
  if (std::isinf(lo) && std::isinf(hi)) return "a number";
  if (std::isinf(hi)) return fmt::format("a number >= {}", lo);
  if (std::isinf(lo)) return fmt::format("a number <= {}", hi);
  return fmt::format("a number from {} to {}", lo, hi);
}

}  // namespace

int64_t option_int(const std::string& option, const std::string& text, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  const bool ok = !text.empty() && end == text.c_str() + text.size() && errno == 0 && v >= lo && v <= hi;
  MO_CHECK(ok, "{}: expected {}, got '{}'", option, range_text(lo, hi), text);
  return v;
}

double option_float(const std::string& option, const std::string& text, double lo, double hi) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  const bool ok = !text.empty() && end == text.c_str() + text.size() && errno == 0 && std::isfinite(v) &&
                  v >= lo && v <= hi;
  MO_CHECK(ok, "{}: expected {}, got '{}'", option, range_text(lo, hi), text);
  return v;
}

Device device_option(const std::string& device, Device gpu) {
  MO_CHECK(device == "auto" || device == "cpu" || device == "cuda", "--device must be auto, cpu or cuda, got '{}'",
           device);
  MO_CHECK(device != "cuda" || gpu.is_cuda(), "--device cuda: no GPU is available");
  return device == "cpu" ? Device::cpu() : gpu;
}

Device device_option(const std::string& device) {
  return device_option(device, cuda_available() ? Device::cuda(0) : Device::cpu());
}

}  // namespace mo::tools
