// config_schema.h: a typed key registry for YAML recipes. Each key ("optim.lr") is bound to a field of a
// C++ struct with a one-line help text. Loading walks the YAML tree and sets the bound fields; an unknown
// or misspelt key is an error naming the key, the file and line, and the nearest known key; a key given
// twice (also "optim.lr" beside "optim: {lr: }") is an error naming both lines. `--set
// key=value` overrides go through the same checks. dump() prints every value in effect as YAML.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace mo::tools {

// The one of `choices` nearest to `value` (edit distance, e.g. "gpuu" -> "gpu"), or "" when none is close.
std::string nearest_choice(const std::string& value, const std::vector<std::string>& choices);

class ConfigSchema {
 public:
  using Field = std::variant<bool*, int64_t*, double*, std::string*, std::vector<double>*>;

  // Register a key (dotted, e.g. "optim.lr") bound to `field`. Registration order is the print order.
  void add(const std::string& key, Field field, const std::string& help);

  // Apply a YAML file (its keys are checked; `file` is named in errors).
  void load_file(const std::string& file);
  // Apply YAML text (for tests); `origin` names it in errors.
  void load_string(const std::string& text, const std::string& origin);
  // Apply one "key=value" override (value is parsed as a YAML scalar or flow sequence).
  void set(const std::string& assignment);

  // Every key with its value in effect, as nested YAML (with the help texts as comments if asked).
  std::string dump(bool with_help = false) const;
  // The value of one key as text (as dump() writes it); throws naming the key if unknown.
  std::string value_str(const std::string& key) const;
  std::vector<std::string> keys() const;
  // The known key nearest to `key` (edit distance), or "" when nothing is close.
  std::string nearest(const std::string& key) const;

 private:
  struct Entry {
    std::string key, help;
    Field field;
  };
  const Entry* find(const std::string& key) const;
  void apply_node(const YAML::Node& node, const std::string& prefix, const std::string& origin,
                  std::map<std::string, int>& seen);  // key -> line
  void assign(const Entry& e, const YAML::Node& value, const std::string& where);
  std::vector<Entry> entries_;
};

}  // namespace mo::tools
