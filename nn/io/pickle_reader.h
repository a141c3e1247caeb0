// pickle_reader.h: a data-only unpickler for the data.pkl of torch.save archives. It never executes
// anything: globals are looked up in a fixed whitelist (collections.OrderedDict, the torch._utils tensor
// rebuilders, torch.*Storage, torch.Size, plus a few classes that timm train checkpoints carry in their
// skipped entries, such as argparse.Namespace, which become inert placeholder objects). Any other global
// (os.system, builtins.eval, ...) is refused with an error naming it. Opcodes of protocols 0-5 that
// only build data are supported; every length is bounds-checked.
//
// Values live in an arena owned by the Pickle result and point at each other with raw pointers, so
// shared and even cyclic references (possible via the memo) cannot leak.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nn/io/byte_reader.h"
#include "nn/io/raw_tensor.h"

namespace mo::nn::io {

struct PyValue {
  enum class Kind : uint8_t { none, boolean, integer, floating, str, bytes, tuple, list, dict, set, global, object,
                              storage, tensor };
  // What a whitelisted global is (Kind::global only).
  enum class Global : uint8_t { ordered_dict, rebuild_tensor_v2, rebuild_tensor, rebuild_parameter, storage_type,
                                torch_size, set, codecs_encode, opaque };
  Kind kind = Kind::none;
  Global global = Global::opaque;
  int64_t i = 0;   // boolean, integer
  double f = 0;    // floating
  std::string s;   // str/bytes contents; global "module.name"; object class name; storage key
  std::vector<PyValue*> items;  // tuple/list/set items; dict: key0, value0, key1, value1, ...; object: ctor args
  PyValue* state = nullptr;     // BUILD state of a dict or object (ignored, kept for completeness)
  // storage (persistent id) and storage_type globals
  WireDType dtype = WireDType::f32;
  int64_t storage_numel = 0;
  // tensor (from torch._utils._rebuild_tensor_v2)
  PyValue* storage = nullptr;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape, stride;
};

struct Pickle {
  std::vector<std::unique_ptr<PyValue>> arena;
  PyValue* root = nullptr;
};

// Unpickles `data`; `what` names the file in errors ("model.pth: data.pkl").
Pickle unpickle(Bytes data, const std::string& what);

// A short description of a value for error messages: "int", "str", "OrderedDict", "argparse.Namespace".
std::string describe(const PyValue* v);
// Dict lookup by string key (the last assignment wins, as in Python); nullptr when absent or not a dict.
const PyValue* dict_get(const PyValue* dict, std::string_view key);

}  // namespace mo::nn::io
