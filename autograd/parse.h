// parse.h: the one strict reading of numbers from text for the whole tree (command-line options,
// recipe values, environment variables, metadata, index files). The whole text must be the number:
// no leading or trailing junk, not empty, base 10, an optional leading '+'; out-of-range integers and
// overflowing floats are failures, not clamped values. Callers add their own range checks and message.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>

namespace mo {

inline std::optional<int64_t> parse_int(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty() || s.front() == '-' && s.size() == 1) return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A finite or infinite/NaN double as written ("inf", "nan" included); `finite` refuses those.
inline std::optional<double> parse_float(std::string_view s, bool finite = true) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  if (finite && !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace mo
