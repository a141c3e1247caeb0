// config_schema.cpp: YAML walking, type checks with file:line messages, nearest-key suggestions, dump.
#include "tools/engine/config_schema.h"

#include "autograd/parse.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/check.h"

namespace mo::tools {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string where_of(const std::string& origin, const YAML::Mark& m) {
  if (m.is_null()) return origin;
  return fmt::format("{}:{}", origin, m.line + 1);
}

std::string scalar_text(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << v;
  return e.c_str();
}

std::string format_double(double v) {
  std::string s = fmt::format("{}", v);
  // Keep a decimal point or exponent so the dump reads back as a number, not an integer.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string quote_if_needed(const std::string& s) {
  if (s.empty()) return "\"\"";
  bool plain = std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) ||
                                                                   c == '_' || c == '-' || c == '.' || c == '/'; });
  if (plain && !std::isdigit(static_cast<unsigned char>(s[0])) && s != "true" && s != "false" && s != "null" &&
      s != "yes" && s != "no")
    return s;
  // double-quoted, with YAML's escapes for what a quoted scalar would not keep as it is (a line break
  // folds into a space on reading)
  std::string q = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') q += '\\', q += c;
    else if (c == '\n') q += "\\n";
    else if (c == '\t') q += "\\t";
    else if (u < 0x20 || u == 0x7f) q += fmt::format("\\x{:02x}", u);
    else q += c;
  }
  return q + "\"";
}

std::string field_str(const ConfigSchema::Field& f) {
  struct V {
    std::string operator()(bool* p) const { return *p ? "true" : "false"; }
    std::string operator()(int64_t* p) const { return std::to_string(*p); }
    std::string operator()(double* p) const { return format_double(*p); }
    std::string operator()(std::string* p) const { return quote_if_needed(*p); }
    std::string operator()(std::vector<double>* p) const {
      std::string s = "[";
      for (size_t i = 0; i < p->size(); ++i) s += (i ? ", " : "") + format_double((*p)[i]);
      return s + "]";
    }
  };
  return std::visit(V{}, f);
}

double parse_double(const YAML::Node& v, const std::string& what) {
  MO_CHECK(v.IsScalar(), "{}: expected a number, got '{}'", what, scalar_text(v));
  const std::string& s = v.Scalar();
  const std::optional<double> d = parse_float(s, /*finite=*/false);
  MO_CHECK(d.has_value(), "{}: expected a number, got '{}'", what, s);
  MO_CHECK(std::isfinite(*d), "{}: expected a finite number, got '{}'", what, s);
  return *d;
}

}  // namespace

void ConfigSchema::add(const std::string& key, Field field, const std::string& help) {
  MO_ASSERT(find(key) == nullptr);
  entries_.push_back({key, help, field});
}

const ConfigSchema::Entry* ConfigSchema::find(const std::string& key) const {
  for (auto& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}

std::vector<std::string> ConfigSchema::keys() const {
  std::vector<std::string> k;
  for (auto& e : entries_) k.push_back(e.key);
  return k;
}

std::string nearest_choice(const std::string& value, const std::vector<std::string>& choices) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : choices)
    if (size_t d = edit_distance(value, c); d < best_d) best_d = d, best = c;
  return best_d <= std::max<size_t>(2, value.size() / 3) && best_d < value.size() ? best : "";
}

std::string ConfigSchema::nearest(const std::string& key) const {
  std::string best;
  size_t best_d = std::string::npos;
  auto leaf = [](const std::string& k) {
    const size_t dot = k.rfind('.');
    return dot == std::string::npos ? k : k.substr(dot + 1);
  };
  for (auto& e : entries_) {
    // Compare both the full dotted key and the last component (a right key in the wrong section).
    size_t d = std::min(edit_distance(key, e.key), edit_distance(leaf(key), leaf(e.key)) + 1);
    if (d < best_d) best_d = d, best = e.key;
  }
  size_t limit = std::max<size_t>(2, leaf(key).size() / 3);
  return best_d <= limit ? best : "";
}

void ConfigSchema::assign(const Entry& e, const YAML::Node& v, const std::string& where) {
  const std::string what = fmt::format("{}: key '{}'", where, e.key);
  MO_CHECK(!v.IsMap(), "{}: expected a value, got a mapping", what);
  struct Set {
    const YAML::Node& v;
    const std::string& what;
    void operator()(bool* p) const {
      MO_CHECK(v.IsScalar(), "{}: expected true or false, got '{}'", what, scalar_text(v));
      const std::string& s = v.Scalar();
      if (s == "true" || s == "True" || s == "yes" || s == "on" || s == "1") *p = true;
      else if (s == "false" || s == "False" || s == "no" || s == "off" || s == "0") *p = false;
      else MO_FAIL("{}: expected true or false, got '{}'", what, s);
    }
    void operator()(int64_t* p) const {
      // digits exactly (past 2^53 a double would round them), else a number that is a whole one ("1e3")
      if (v.IsScalar()) {
        const std::string& t = v.Scalar();
        int64_t n = 0;
        const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
        if (end == t.data() + t.size() && ec == std::errc()) return void(*p = n);
        MO_CHECK(!(end == t.data() + t.size() && ec == std::errc::result_out_of_range),
                 "{}: {} is outside the 64-bit integer range", what, t);
      }
      const double d = parse_double(v, what);
      MO_CHECK(d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == std::trunc(d),
               "{}: expected an integer, got '{}'", what, v.Scalar());
      *p = static_cast<int64_t>(d);
    }
    void operator()(double* p) const { *p = parse_double(v, what); }
    void operator()(std::string* p) const {
      MO_CHECK(v.IsScalar() || v.IsNull(), "{}: expected a string, got '{}'", what, scalar_text(v));
      *p = v.IsNull() ? "" : v.Scalar();
    }
    void operator()(std::vector<double>* p) const {
      MO_CHECK(v.IsSequence(), "{}: expected a list of numbers like [1, 2], got '{}'", what, scalar_text(v));
      std::vector<double> out;
      for (const auto& x : v) out.push_back(parse_double(x, what));
      *p = out;
    }
  };
  std::visit(Set{v, what}, e.field);
}

void ConfigSchema::apply_node(const YAML::Node& node, const std::string& prefix, const std::string& origin,
                              std::map<std::string, int>& seen) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string where = where_of(origin, it->first.Mark());
    MO_CHECK(it->first.IsScalar(), "{}: a key must be a plain name, got '{}'", where, scalar_text(it->first));
    const std::string name = it->first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    // YAML keys are unique; a repeated one (or "a.b" next to "a: {b: }") would silently win over the first.
    const int line = it->first.Mark().line + 1;
    auto [first, fresh] = seen.emplace(key, line);
    MO_CHECK(fresh, "{}: duplicate key '{}' (first at line {}, again at line {}): remove one of them", origin, key,
             first->second, line);
    if (const Entry* e = find(key)) {
      assign(*e, it->second, where);
      continue;
    }
    bool is_section = std::any_of(entries_.begin(), entries_.end(),
                                  [&](const Entry& e) { return e.key.rfind(key + ".", 0) == 0; });
    if (is_section) {
      MO_CHECK(it->second.IsMap() || it->second.IsNull(), "{}: '{}' is a section; expected its keys below it", where,
               key);
      if (it->second.IsMap()) apply_node(it->second, key, origin, seen);
      continue;
    }
    std::string near = nearest(key);
    MO_FAIL("{}: unknown key '{}'{}", where, key, near.empty() ? "" : fmt::format("; did you mean '{}'?", near));
  }
}

namespace {
// Where each document starts; nothing else of the events is needed.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& m) override { starts.push_back(m); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};
}  // namespace

void ConfigSchema::load_string(const std::string& text, const std::string& origin) {
  // The documents are counted with the parser, two at most: YAML::LoadAll loops for ever, growing, on a
  // document its parser cannot get past (yaml-cpp 0.7 on a ',' outside any [ ] or { }: every call yields
  // another empty document at the same place), e.g. a CSV file given as the recipe.
  YAML::Node root;
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts docs;
    for (int k = 0; k < 2 && parser.HandleNextDocument(docs); ++k) {
    }
    const auto& at = docs.starts;
    MO_CHECK(at.size() < 2 || at[1].pos != at[0].pos, "{}:{}: YAML syntax error at column {}: the parser cannot read "
             "past it (a ',' outside a [ ] or {{ }} list?); is this a YAML recipe?", origin, at[0].line + 1, at[0].column + 1);
    // A second document (after '---', e.g. two recipes pasted together) would otherwise be ignored.
    MO_CHECK(at.size() < 2, "{}:{}: a second YAML document (after '---'): a recipe is one document; merge them or "
             "use --set", origin, at.size() > 1 ? at[1].line + 1 : 0);
    root = YAML::Load(text);
  } catch (const YAML::Exception& ex) {
    MO_FAIL("{}:{}: YAML syntax error: {}", origin, ex.mark.line + 1, ex.msg);
  }
  if (!root || root.IsNull()) return;
  MO_CHECK(root.IsMap(), "{}: expected a mapping of keys at the top level", origin);
  std::map<std::string, int> seen;
  apply_node(root, "", origin, seen);
}

void ConfigSchema::load_file(const std::string& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(file, ec);
  MO_CHECK(!fs::is_directory(st), "config file '{}' is a directory, not a YAML recipe", file);
  // A named pipe would block the open for ever, a device never ends: a recipe is a small regular file.
  MO_CHECK(!fs::exists(st) || fs::is_regular_file(st), "config file '{}' is not a regular file (a named pipe, "
           "socket or device), not a YAML recipe", file);
  constexpr uintmax_t kMaxRecipeBytes = 1 << 20;
  const uintmax_t size = fs::exists(st) ? fs::file_size(file, ec) : 0;
  MO_CHECK(ec || size <= kMaxRecipeBytes, "config file '{}' is {} bytes: a YAML recipe is a small text file (at most "
           "1 MiB); is it the right file?", file, size);
  std::ifstream in(file);
  MO_CHECK(in.good(), "cannot open config file '{}'", file);
  std::stringstream ss;
  ss << in.rdbuf();
  load_string(ss.str(), file);
}

void ConfigSchema::set(const std::string& assignment) {
  auto eq = assignment.find('=');
  MO_CHECK(eq != std::string::npos && eq > 0, "--set '{}': expected key=value", assignment);
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  const Entry* e = find(key);
  if (!e) {
    std::string near = nearest(key);
    MO_FAIL("--set {}: unknown key '{}'{}", assignment, key,
            near.empty() ? "" : fmt::format("; did you mean '{}'?", near));
  }
  YAML::Node v;
  try {
    v = YAML::Load(text);
  } catch (const YAML::Exception& ex) {
    MO_FAIL("--set {}: cannot parse the value: {}", assignment, ex.msg);
  }
  if (std::holds_alternative<std::string*>(e->field) && !v.IsNull()) v = YAML::Node(text);  // strings verbatim
  assign(*e, v, "--set " + assignment);
}

std::string ConfigSchema::value_str(const std::string& key) const {
  const Entry* e = find(key);
  MO_CHECK(e != nullptr, "unknown config key '{}'", key);
  return field_str(e->field);
}

std::string ConfigSchema::dump(bool with_help) const {
  std::string out, section;
  for (auto& e : entries_) {
    auto dot = e.key.find('.');
    std::string sec = dot == std::string::npos ? "" : e.key.substr(0, dot);
    std::string leaf = dot == std::string::npos ? e.key : e.key.substr(dot + 1);
    if (sec != section) {
      section = sec;
      if (!sec.empty()) out += sec + ":\n";
    }
    std::string line = fmt::format("{}{}: {}", sec.empty() ? "" : "  ", leaf, field_str(e.field));
    if (with_help && !e.help.empty()) line = fmt::format("{:<44} # {}", line, e.help);
    out += line + "\n";
  }
  return out;
}

}  // namespace mo::tools
