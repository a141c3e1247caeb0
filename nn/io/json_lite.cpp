// json_lite.cpp: recursive-descent JSON (RFC 8259) with a depth limit; see json_lite.h.
#include "nn/io/json_lite.h"

#include <charconv>
#include <unordered_set>

#include "autograd/check.h"
#include "nn/io/byte_reader.h"

namespace mo::nn::io {

namespace {

class Parser {
 public:
  // The parsed values may take at most 16 times the text plus 64 MiB (about 100 bytes per value; a
  // header is mostly names and numbers several bytes long), so a header of "[0,0,0,..." cannot cost
  // memory out of proportion to the file.
  Parser(std::string_view t, const std::string& what)
      : t_(t), what_(what), budget_(checked_add<size_t>(checked_mul<size_t>(t.size(), 16, what), size_t{64} << 20, what)) {}
  Json document() {
    Json v = value(0);
    ws();
    if (p_ != t_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* msg) const { MO_FAIL("{}: invalid JSON header at byte {}: {}", what_, p_, msg); }
  void charge(size_t n) {
    if (n > budget_) MO_FAIL("{}: JSON header of {} bytes builds too many values (at byte {}); refusing", what_, t_.size(), p_);
    budget_ -= n;
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  char peek() {
    if (p_ >= t_.size()) fail("unexpected end");
    return t_[p_];
  }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++p_;
  }
  void literal(std::string_view w) {
    if (t_.substr(p_, w.size()) != w) fail("bad literal");
    p_ += w.size();
  }
  Json value(int depth) {
    if (depth > 32) fail("nested too deeply");
    charge(sizeof(Json));
    ws();
    Json v;
    char c = peek();
    if (c == '{') {
      v.kind = Json::Kind::object;
      ++p_;
      ws();
      if (peek() == '}') return ++p_, v;
      std::unordered_set<std::string> seen;
      while (true) {
        ws();
        std::string key = string();
        if (!seen.insert(key).second) MO_FAIL("{}: duplicate JSON key '{}' at byte {}", what_, key, p_);
        ws();
        expect(':');
        v.keys.push_back(std::move(key));
        v.array.push_back(value(depth + 1));
        ws();
        if (peek() == ',') ++p_;
        else return expect('}'), v;
      }
    }
    if (c == '[') {
      v.kind = Json::Kind::array;
      ++p_;
      ws();
      if (peek() == ']') return ++p_, v;
      while (true) {
        v.array.push_back(value(depth + 1));
        ws();
        if (peek() == ',') ++p_;
        else return expect(']'), v;
      }
    }
    if (c == '"') {
      v.kind = Json::Kind::string;
      v.s = string();
      return v;
    }
    if (c == 't' || c == 'f') {
      v.kind = Json::Kind::boolean;
      v.b = c == 't';
      literal(v.b ? "true" : "false");
      return v;
    }
    if (c == 'n') return literal("null"), v;
    return number();
  }
  Json number() {
    size_t start = p_;
    bool integral = true;
    if (peek() == '-') ++p_;
    if (p_ >= t_.size() || !isdigit(t_[p_])) fail("bad number");
    while (p_ < t_.size() && (isdigit(t_[p_]) || t_[p_] == '.' || t_[p_] == 'e' || t_[p_] == 'E' || t_[p_] == '+' ||
                              t_[p_] == '-')) {
      if (!isdigit(t_[p_])) integral = false;
      ++p_;
    }
    Json v;
    v.kind = Json::Kind::number;
    const char* b = t_.data() + start;
    const char* e = t_.data() + p_;
    if (integral) {
      auto [q, ec] = std::from_chars(b, e, v.i);
      v.is_int = ec == std::errc() && q == e;
      v.d = static_cast<double>(v.i);
    }
    if (!v.is_int) {
      auto [q, ec] = std::from_chars(b, e, v.d);
      if (ec != std::errc() || q != e) fail("bad number");
    }
    return v;
  }
  static bool isdigit(char c) { return c >= '0' && c <= '9'; }
  unsigned hex4() {
    if (t_.size() - p_ < 4) fail("truncated \\u escape");
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      char c = t_[p_++];
      u <<= 4;
      if (c >= '0' && c <= '9') u |= c - '0';
      else if (c >= 'a' && c <= 'f') u |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') u |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return u;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      char c = peek();
      ++p_;
      if (c == '"') return charge(out.size()), out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      char e = peek();
      ++p_;
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned u = hex4();
          if (u >= 0xd800 && u < 0xdc00) {  // surrogate pair
            if (t_.substr(p_, 2) != "\\u") fail("lone surrogate");
            p_ += 2;
            unsigned lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("bad surrogate pair");
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
          } else if (u >= 0xdc00 && u < 0xe000) {
            fail("lone surrogate");
          }
          utf8(out, u);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  static void utf8(std::string& out, unsigned u) {
    if (u < 0x80) {
      out += static_cast<char>(u);
    } else if (u < 0x800) {
      out += static_cast<char>(0xc0 | (u >> 6));
      out += static_cast<char>(0x80 | (u & 0x3f));
    } else if (u < 0x10000) {
      out += static_cast<char>(0xe0 | (u >> 12));
      out += static_cast<char>(0x80 | ((u >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (u & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (u >> 18));
      out += static_cast<char>(0x80 | ((u >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((u >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (u & 0x3f));
    }
  }

  std::string_view t_;
  const std::string& what_;
  size_t budget_;
  size_t p_ = 0;
};

}  // namespace

const Json* Json::get(std::string_view key) const {
  if (kind != Kind::object) return nullptr;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &array[i];
  return nullptr;
}

Json parse_json(std::string_view text, const std::string& what) { return Parser(text, what).document(); }

std::string json_quote(std::string_view s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"') o += "\\\"";
    else if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\t') o += "\\t";
    else if (c < 0x20) o += fmt::format("\\u{:04x}", c);
    else o += static_cast<char>(c);
  }
  return o + "\"";
}

}  // namespace mo::nn::io
