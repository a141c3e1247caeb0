// json_lite.h: a small strict JSON parser for safetensors headers. Objects keep their key order and
// reject duplicate keys; nesting is limited to 32 levels; numbers keep an exact int64 when they are
// integers. The values built are bounded by 16x the text plus 64 MiB. Errors name the source and the
// byte offset.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mo::nn::io {

struct Json {
  enum class Kind : uint8_t { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool b = false;
  bool is_int = false;  // number without fraction/exponent that fits int64
  int64_t i = 0;
  double d = 0;
  std::string s;
  std::vector<Json> array;          // array elements, or object member values
  std::vector<std::string> keys;    // object member names, parallel to `array`
  const Json* get(std::string_view key) const;  // object member or nullptr
};

Json parse_json(std::string_view text, const std::string& what);

// s as a JSON string literal, quotes included: \" \\ \n \r \t escaped, other control bytes as \u00XX,
// everything else (UTF-8 included) as is. The one writer of JSON strings in the tree.
std::string json_quote(std::string_view s);

}  // namespace mo::nn::io
