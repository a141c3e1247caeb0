// pickle_reader.cpp: the opcode loop, the global whitelist and the few "calls" it allows (all of them
// pure data constructors). See pickle_reader.h. Opcode reference: CPython Lib/pickletools.py.
#include "nn/io/pickle_reader.h"

#include <charconv>
#include <cstdlib>
#include <unordered_map>

namespace mo::nn::io {

namespace {

using Kind = PyValue::Kind;
using G = PyValue::Global;

struct Allowed {
  const char* module;
  const char* name;
  G kind;
};
// The whitelist. torch.*Storage classes are matched separately (wire_from_torch_storage).
constexpr Allowed kAllowed[] = {
    {"collections", "OrderedDict", G::ordered_dict},
    {"torch._utils", "_rebuild_tensor_v2", G::rebuild_tensor_v2},
    {"torch._utils", "_rebuild_tensor", G::rebuild_tensor},
    {"torch._utils", "_rebuild_parameter", G::rebuild_parameter},
    {"torch._utils", "_rebuild_parameter_with_state", G::rebuild_parameter},
    {"torch", "Size", G::torch_size},
    {"builtins", "set", G::set},
    {"builtins", "frozenset", G::set},
    {"__builtin__", "set", G::set},
    {"_codecs", "encode", G::codecs_encode},
    // Inert placeholders: objects that appear in the skipped parts of training checkpoints.
    {"torch", "device", G::opaque},
    {"torch", "float32", G::opaque},
    {"torch", "float16", G::opaque},
    {"torch", "bfloat16", G::opaque},
    {"torch", "float64", G::opaque},
    {"torch", "int64", G::opaque},
    {"torch", "int32", G::opaque},
    {"torch", "int16", G::opaque},
    {"torch", "int8", G::opaque},
    {"torch", "uint8", G::opaque},
    {"torch", "bool", G::opaque},
    {"torch", "strided", G::opaque},
    {"argparse", "Namespace", G::opaque},
    {"numpy", "dtype", G::opaque},
    {"numpy", "ndarray", G::opaque},
    {"numpy.core.multiarray", "scalar", G::opaque},
    {"numpy.core.multiarray", "_reconstruct", G::opaque},
    {"numpy._core.multiarray", "scalar", G::opaque},
    {"numpy._core.multiarray", "_reconstruct", G::opaque},
};

class Unpickler {
 public:
  // The values built may take at most 16 times the pickle plus 64 MiB: a state_dict's data.pkl needs
  // a few hundred bytes of values per tensor, but one-byte opcodes (']', '}') each make a value.
  Unpickler(Bytes data, const std::string& what)
      : r_(data, what),
        what_(what),
        budget_(checked_add<size_t>(checked_mul<size_t>(data.size(), 16, what), size_t{64} << 20, what)) {}
  Pickle run();

 private:
  void charge(size_t n) {
    MO_CHECK(n <= budget_, "{}: pickle of {} bytes builds too many values (at offset {}); refusing", what_, r_.size(),
             r_.pos());
    budget_ -= n;
  }
  PyValue* make(Kind k) {
    charge(sizeof(PyValue) + 2 * sizeof(void*));  // the value, its arena slot and allocation overhead
    out_.arena.push_back(std::make_unique<PyValue>());
    out_.arena.back()->kind = k;
    return out_.arena.back().get();
  }
  PyValue* make_int(int64_t v, Kind k = Kind::integer) {
    PyValue* p = make(k);
    p->i = v;
    return p;
  }
  PyValue* make_str(std::string_view s, Kind k = Kind::str) {
    charge(s.size());
    PyValue* p = make(k);
    p->s = std::string(s);
    return p;
  }
  void push(PyValue* v) { stack_.push_back(v); }
  PyValue* pop() {
    MO_CHECK(stack_.size() > floor(), "{}: pickle stack underflow at offset {}", what_, r_.pos());
    PyValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyValue* top() {
    MO_CHECK(stack_.size() > floor(), "{}: pickle stack underflow at offset {}", what_, r_.pos());
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<PyValue*> pop_mark() {
    MO_CHECK(!marks_.empty(), "{}: pickle MARK expected at offset {}", what_, r_.pos());
    std::vector<PyValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  uint64_t len(uint64_t n) {  // a length read from the file: must fit in what is left
    r_.need(n);
    return n;
  }
  int64_t parse_int(std::string_view s) {
    int64_t v = 0;
    MO_CHECK(text_int(s, v), "{}: bad integer '{}' in pickle at offset {}", what_, s, r_.pos());
    return v;
  }
  // Protocol-0 integers ("123", "-5L"); false when not a decimal that fits in 64 bits.
  static bool text_int(std::string_view s, int64_t& v) {
    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size();
  }
  PyValue* int_value(std::string_view s) {  // INT / LONG opcodes; huge values become placeholders
    int64_t v = 0;
    if (text_int(s, v)) return make_int(v);
    const bool digits = s.find_first_not_of("+-0123456789L") == std::string_view::npos && !s.empty();
    MO_CHECK(digits, "{}: bad integer '{}' in pickle at offset {}", what_, s, r_.pos());
    return make_str("int (more than 64 bits)", Kind::object);
  }
  PyValue* long_bytes(uint64_t n) {
    Bytes b = r_.take(len(n));
    if (n > 8) return make_str("int (more than 64 bits)", Kind::object);
    uint64_t u = 0;
    for (size_t k = n; k > 0; --k) u = (u << 8) | b[k - 1];
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
    return make_int(static_cast<int64_t>(u));
  }
  PyValue* memo_get(uint64_t k) {
    auto it = memo_.find(k);
    MO_CHECK(it != memo_.end(), "{}: pickle memo key {} is not defined (offset {})", what_, k, r_.pos());
    return it->second;
  }
  void memo_put(uint64_t k) { memo_[k] = top(); }
  PyValue* global(std::string_view module, std::string_view name);
  PyValue* call(PyValue* callable, PyValue* args);
  PyValue* persistent_load(PyValue* pid);
  void set_items(PyValue* dict, const std::vector<PyValue*>& kv);
  void check_kind(const PyValue* v, Kind k, const char* op) {
    MO_CHECK(v->kind == k, "{}: pickle {} applied to a {} (offset {}); only plain data is allowed", what_, op,
             describe(v), r_.pos());
  }

  ByteReader r_;
  std::string what_;
  size_t budget_;
  Pickle out_;
  std::vector<PyValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyValue*> memo_;
};

PyValue* Unpickler::global(std::string_view module, std::string_view name) {
  PyValue* g = make_str(fmt::format("{}.{}", module, name), Kind::global);
  if (module == "torch") {
    if (auto dt = wire_from_torch_storage(name)) {
      g->global = G::storage_type;
      g->dtype = *dt;
      return g;
    }
  }
  for (const auto& a : kAllowed) {
    if (module == a.module && name == a.name) {
      g->global = a.kind;
      return g;
    }
  }
  MO_FAIL("{}: refusing to load: the pickle refers to global '{}.{}', which is not on the data-only whitelist "
          "(OrderedDict, torch tensor rebuilders, torch.*Storage, ...). The file may be malicious or not a "
          "state_dict",
          what_, module, name);
}

PyValue* Unpickler::call(PyValue* callable, PyValue* args) {
  MO_CHECK(callable->kind == Kind::global, "{}: pickle calls a {} (offset {}); only whitelisted globals may be called",
           what_, describe(callable), r_.pos());
  MO_CHECK(args->kind == Kind::tuple, "{}: pickle call of '{}' with a {} instead of an argument tuple", what_,
           callable->s, describe(args));
  const auto& a = args->items;
  auto arg = [&](size_t k, Kind kind) {
    MO_CHECK(k < a.size() && a[k]->kind == kind, "{}: bad argument {} of {} in pickle (offset {})", what_, k,
             callable->s, r_.pos());
    return a[k];
  };
  switch (callable->global) {
    case G::ordered_dict: {
      PyValue* d = make(Kind::dict);
      if (a.size() == 1 && a[0]->kind == Kind::list) {  // OrderedDict([(k, v), ...])
        for (PyValue* kv : a[0]->items) {
          MO_CHECK(kv->kind == Kind::tuple && kv->items.size() == 2, "{}: bad OrderedDict item in pickle", what_);
          set_items(d, kv->items);
        }
      } else {
        MO_CHECK(a.empty(), "{}: unsupported OrderedDict arguments in pickle", what_);
      }
      return d;
    }
    case G::rebuild_tensor_v2:
    case G::rebuild_tensor: {
      PyValue* t = make(Kind::tensor);
      t->storage = arg(0, Kind::storage);
      t->storage_offset = arg(1, Kind::integer)->i;
      MO_CHECK(arg(2, Kind::tuple)->items.size() <= 64 && arg(3, Kind::tuple)->items.size() <= 64,
               "{}: tensor of rank {} in pickle (offset {})", what_, a[2]->items.size(), r_.pos());
      for (PyValue* d : arg(2, Kind::tuple)->items) t->shape.push_back(d->kind == Kind::integer ? d->i : -1);
      for (PyValue* d : arg(3, Kind::tuple)->items) t->stride.push_back(d->kind == Kind::integer ? d->i : -1);
      t->dtype = t->storage->dtype;
      return t;
    }
    case G::rebuild_parameter:
      return arg(0, Kind::tensor);
    case G::torch_size:
      return arg(0, Kind::tuple);
    case G::set: {
      PyValue* s = make(Kind::set);
      if (!a.empty()) charge(arg(0, Kind::list)->items.size() * sizeof(PyValue*)), s->items = a[0]->items;
      return s;
    }
    case G::codecs_encode:  // protocol-2 bytes: _codecs.encode(str, 'latin1'); the text is kept as is
      return make_str(arg(0, Kind::str)->s, Kind::bytes);
    case G::opaque: {
      PyValue* o = make_str(callable->s, Kind::object);
      charge(a.size() * sizeof(PyValue*));  // a memoized argument tuple may be passed again and again
      o->items = a;
      return o;
    }
    case G::storage_type:
      break;
  }
  MO_FAIL("{}: pickle calls '{}', which is not callable here (offset {})", what_, callable->s, r_.pos());
}

// torch's zip format: ('storage', torch.FloatStorage, key, location, numel).
PyValue* Unpickler::persistent_load(PyValue* pid) {
  MO_CHECK(pid->kind == Kind::tuple && pid->items.size() == 5 && pid->items[0]->kind == Kind::str &&
               pid->items[0]->s == "storage",
           "{}: unsupported persistent id in pickle (expected ('storage', type, key, location, numel))", what_);
  const auto& it = pid->items;
  MO_CHECK(it[1]->kind == Kind::global && it[1]->global == G::storage_type,
           "{}: persistent id names {} instead of a torch storage class", what_, describe(it[1]));
  MO_CHECK(it[2]->kind == Kind::str || it[2]->kind == Kind::integer, "{}: bad storage key in persistent id", what_);
  MO_CHECK(it[4]->kind == Kind::integer && it[4]->i >= 0, "{}: bad storage size in persistent id", what_);
  PyValue* s = make(Kind::storage);
  s->s = it[2]->kind == Kind::str ? it[2]->s : std::to_string(it[2]->i);
  s->dtype = it[1]->dtype;
  s->storage_numel = it[4]->i;
  return s;
}

void Unpickler::set_items(PyValue* dict, const std::vector<PyValue*>& kv) {
  check_kind(dict, Kind::dict, "SETITEM");
  MO_CHECK(kv.size() % 2 == 0, "{}: odd number of items for SETITEMS in pickle (offset {})", what_, r_.pos());
  charge(kv.size() * sizeof(PyValue*));
  dict->items.insert(dict->items.end(), kv.begin(), kv.end());
}

Pickle Unpickler::run() {
  while (true) {
    const size_t at = r_.pos();
    const uint8_t op = r_.u8();
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t v = r_.u8();
        MO_CHECK(v <= 5, "{}: unsupported pickle protocol {}", what_, v);
        break;
      }
      case 0x95: r_.u64(); break;  // FRAME: the framed opcodes follow inline
      case '.': {                  // STOP
        out_.root = pop();
        return std::move(out_);
      }
      case '(': marks_.push_back(stack_.size()); break;
      case '0':  // POP (a MARK on top counts as the item)
        if (!marks_.empty() && stack_.size() == marks_.back()) marks_.pop_back();
        else pop();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      case 'N': push(make(Kind::none)); break;
      case 0x88: push(make_int(1, Kind::boolean)); break;
      case 0x89: push(make_int(0, Kind::boolean)); break;
      case 'I': {
        std::string_view l = r_.line();
        if (l == "00" || l == "01") push(make_int(l == "01", Kind::boolean));
        else push(int_value(l));
        break;
      }
      case 'L': push(int_value(r_.line())); break;
      case 'J': push(make_int(r_.i32())); break;
      case 'K': push(make_int(r_.u8())); break;
      case 'M': push(make_int(r_.u16())); break;
      case 0x8a: push(long_bytes(r_.u8())); break;
      case 0x8b: {
        int32_t n = r_.i32();
        MO_CHECK(n >= 0, "{}: negative LONG4 length in pickle at offset {}", what_, at);
        push(long_bytes(static_cast<uint64_t>(n)));
        break;
      }
      case 'F': {
        std::string l(r_.line());
        char* end = nullptr;
        double d = std::strtod(l.c_str(), &end);
        MO_CHECK(end && *end == '\0' && !l.empty(), "{}: bad float '{}' in pickle at offset {}", what_, l, at);
        PyValue* v = make(Kind::floating);
        v->f = d;
        push(v);
        break;
      }
      case 'G': {
        PyValue* v = make(Kind::floating);
        v->f = r_.f64_be();
        push(v);
        break;
      }
      case 'T': {
        int32_t n = r_.i32();
        MO_CHECK(n >= 0, "{}: negative string length in pickle at offset {}", what_, at);
        push(make_str(r_.take_str(len(static_cast<uint64_t>(n)))));
        break;
      }
      case 'U': push(make_str(r_.take_str(r_.u8()))); break;
      case 'X': push(make_str(r_.take_str(len(r_.u32())))); break;
      case 0x8c: push(make_str(r_.take_str(r_.u8()))); break;
      case 0x8d: push(make_str(r_.take_str(len(r_.u64())))); break;
      case 'V': push(make_str(r_.line())); break;  // UNICODE (raw-unicode-escape; kept verbatim)
      case 'B': push(make_str(r_.take_str(len(r_.u32())), Kind::bytes)); break;
      case 'C': push(make_str(r_.take_str(r_.u8()), Kind::bytes)); break;
      case 0x8e:
      case 0x96: push(make_str(r_.take_str(len(r_.u64())), Kind::bytes)); break;
      case ')': push(make(Kind::tuple)); break;
      case 't': {
        PyValue* t = make(Kind::tuple);
        t->items = pop_mark();
        push(t);
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {
        PyValue* t = make(Kind::tuple);
        t->items.resize(op - 0x84);
        for (size_t k = t->items.size(); k > 0; --k) t->items[k - 1] = pop();
        push(t);
        break;
      }
      case ']': push(make(Kind::list)); break;
      case 'l': {
        PyValue* l = make(Kind::list);
        l->items = pop_mark();
        push(l);
        break;
      }
      case 'a': {
        PyValue* v = pop();
        check_kind(top(), Kind::list, "APPEND");
        top()->items.push_back(v);
        break;
      }
      case 'e': {
        std::vector<PyValue*> items = pop_mark();
        check_kind(top(), Kind::list, "APPENDS");
        top()->items.insert(top()->items.end(), items.begin(), items.end());
        break;
      }
      case '}': push(make(Kind::dict)); break;
      case 'd': {
        PyValue* d = make(Kind::dict);
        set_items(d, pop_mark());
        push(d);
        break;
      }
      case 's': {
        PyValue* v = pop();
        PyValue* k = pop();
        set_items(top(), {k, v});
        break;
      }
      case 'u': {
        std::vector<PyValue*> kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 0x8f: push(make(Kind::set)); break;
      case 0x90: {
        std::vector<PyValue*> items = pop_mark();
        check_kind(top(), Kind::set, "ADDITEMS");
        top()->items.insert(top()->items.end(), items.begin(), items.end());
        break;
      }
      case 0x91: {
        PyValue* s = make(Kind::set);
        s->items = pop_mark();
        push(s);
        break;
      }
      case 'p': memo_put(static_cast<uint64_t>(parse_int(r_.line()))); break;
      case 'q': memo_put(r_.u8()); break;
      case 'r': memo_put(r_.u32()); break;
      case 0x94: memo_put(memo_.size()); break;
      case 'g': push(memo_get(static_cast<uint64_t>(parse_int(r_.line())))); break;
      case 'h': push(memo_get(r_.u8())); break;
      case 'j': push(memo_get(r_.u32())); break;
      case 'c': {
        std::string module(r_.line());
        std::string name(r_.line());
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyValue* name = pop();
        PyValue* module = pop();
        MO_CHECK(module->kind == Kind::str && name->kind == Kind::str, "{}: STACK_GLOBAL needs two strings", what_);
        push(global(module->s, name->s));
        break;
      }
      case 'R':
      case 0x81: {  // REDUCE, NEWOBJ
        PyValue* args = pop();
        PyValue* callable = pop();
        push(call(callable, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();      // kwargs
        PyValue* args = pop();
        PyValue* cls = pop();
        push(call(cls, args));
        break;
      }
      case 'b': {  // BUILD: only plain containers and placeholder objects take a state
        PyValue* st = pop();
        PyValue* obj = top();
        MO_CHECK(obj->kind == Kind::dict || obj->kind == Kind::object,
                 "{}: pickle BUILD on a {} (offset {}); only plain data is allowed", what_, describe(obj), at);
        obj->state = st;
        break;
      }
      case 'Q': push(persistent_load(pop())); break;
      case 'i':
      case 'o':
      case 0x82:
      case 0x83:
      case 0x84:
        MO_FAIL("{}: refusing to load: pickle opcode '{}' (0x{:02x}) at offset {} builds arbitrary objects", what_,
                op >= 0x20 && op < 0x7f ? std::string(1, static_cast<char>(op)) : "EXT", op, at);
      default:
        MO_FAIL("{}: unsupported or invalid pickle opcode 0x{:02x} at offset {}", what_, op, at);
    }
  }
}

}  // namespace

Pickle unpickle(Bytes data, const std::string& what) { return Unpickler(data, what).run(); }

std::string describe(const PyValue* v) {
  switch (v->kind) {
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::str: return "str";
    case Kind::bytes: return "bytes";
    case Kind::tuple: return "tuple";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::set: return "set";
    case Kind::global: return "global " + v->s;
    case Kind::object: return v->s + " object";
    case Kind::storage: return "storage";
    case Kind::tensor: return "tensor";
  }
  return "?";
}

const PyValue* dict_get(const PyValue* dict, std::string_view key) {
  if (!dict || dict->kind != Kind::dict) return nullptr;
  for (size_t k = dict->items.size(); k >= 2; k -= 2) {
    const PyValue* kk = dict->items[k - 2];
    if (kk->kind == Kind::str && kk->s == key) return dict->items[k - 1];
  }
  return nullptr;
}

}  // namespace mo::nn::io
