// fuzz_recipe.cpp: libFuzzer target for the training recipe (tools/engine/config_schema.h and
// train_config.h): arbitrary YAML through the typed key registry, a `--set` override taken from the
// first line, the range checks and the dump of every value. Every refusal must be mo's error with a
// message (what the programs print as "error: ..."); nothing else may escape, and an accepted recipe
// must dump and load back to the same dump.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "autograd/check.h"
#include "tools/engine/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::tools;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t nl = text.find('\n');
  try {
    TrainConfig c;
    ConfigSchema s = make_schema(c);
    s.load_string(text, "recipe.yaml");
    if (nl != std::string::npos && text.find('=') < nl) s.set(text.substr(0, nl));
    c.validate();
    const std::string dump = s.dump();
    TrainConfig c2;
    ConfigSchema s2 = make_schema(c2);
    s2.load_string(dump, "dump.yaml");
    if (s2.dump() != dump) std::abort();  // what is printed reads back as the same recipe
  } catch (const mo::Error& e) {
    if (std::string(e.what()).empty()) std::abort();
  }
  return 0;
}
