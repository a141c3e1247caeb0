// pth.cpp: torch.save zip checkpoints: state_dict selection, tensor materialization from storage
// records (bounds-checked strided copies), and the protocol-2 pickle writer. See pth.h.
#include "nn/io/pth.h"

#include <cstring>
#include <unordered_map>

#include "nn/io/pickle_reader.h"
#include "nn/io/zip_reader.h"
#include "nn/io/zip_writer.h"

namespace mo::nn::io {

namespace {

using Kind = PyValue::Kind;

// Keys under which checkpoints keep their weights, tried in this order (timm, torchvision, DDP scripts).
constexpr const char* kWrapperKeys[] = {"state_dict", "model", "model_state_dict", "module"};

bool is_tensor_dict(const PyValue* d) {
  if (d->kind != Kind::dict) return false;
  for (size_t k = 1; k < d->items.size(); k += 2)
    if (d->items[k]->kind != Kind::tensor) return false;
  return true;
}

std::string top_keys(const PyValue* d) {
  std::string s;
  for (size_t k = 0; k + 1 < d->items.size() && k < 40; k += 2)
    s += (s.empty() ? "" : ", ") + (d->items[k]->kind == Kind::str ? "'" + d->items[k]->s + "'" : describe(d->items[k]));
  return "[" + s + "]";
}

const PyValue* select_state_dict(const PyValue* root, const PthReadOptions& opt, const std::string& what,
                                 RawStateDict& out) {
  MO_CHECK(root->kind == Kind::dict, "{}: holds a pickled {}, not a dict of tensors (a state_dict)", what,
           describe(root));
  const PyValue* sd = nullptr;
  if (!opt.entry.empty()) {
    sd = dict_get(root, opt.entry);
    MO_CHECK(sd != nullptr, "{}: no entry '{}' at the top level; the keys are {}", what, opt.entry, top_keys(root));
    MO_CHECK(sd->kind == Kind::dict, "{}: entry '{}' is a {}, not a state_dict", what, opt.entry, describe(sd));
  } else if (is_tensor_dict(root)) {
    return root;
  } else {
    for (const char* key : kWrapperKeys) {
      const PyValue* v = dict_get(root, key);
      if (v && v->kind == Kind::dict) {
        sd = v;
        break;
      }
    }
    MO_CHECK(sd != nullptr, "{}: found no state_dict: the top-level dict has non-tensor entries and none of the keys "
             "'state_dict', 'model', 'model_state_dict', 'module'; its keys are {}", what, top_keys(root));
  }
  // Facts from the wrapper worth keeping (timm train.py checkpoints).
  if (const PyValue* a = dict_get(root, "arch"); a && a->kind == Kind::str) out.metadata.emplace_back("arch", a->s);
  if (const PyValue* e = dict_get(root, "epoch"); e && e->kind == Kind::integer)
    out.metadata.emplace_back("epoch", std::to_string(e->i));
  return sd;
}

// Everything the named tensors of one file may add up to (many names over one storage, overlapping or
// expanded views): 8 times the file plus 64 MiB. Real checkpoints stay far below it (tied weights
// are a few names over one storage); above it a small file would cost memory without bound.
constexpr uint64_t kAliasFactor = 8, kAliasSlack = uint64_t{64} << 20;

// Where the tensor views of one file come from: the file (shared by every contiguous view) and the
// gathered copies of strided views, one per distinct (storage, offset, size, stride).
struct Materializer {
  SharedBytes file;
  uint64_t logical = 0, limit = 0;  // bytes of all named tensors so far, and their bound
  std::unordered_map<std::string, SharedBytes> gathered;
};

// A view's element offsets over its storage, with the dims of size 1 (whose strides never matter)
// left out. Every extent is overflow-checked; returns the largest element index the view touches.
int64_t last_index(const PyValue* t, const std::string& what) {
  MO_CHECK(t->storage_offset >= 0, "{}: negative storage offset {}", what, t->storage_offset);
  int64_t last = t->storage_offset;
  for (size_t d = 0; d < t->shape.size(); ++d) {
    MO_CHECK(t->stride[d] >= 0, "{}: negative stride in {}", what, shape_string(t->stride));
    if (t->shape[d] <= 1) continue;
    last = checked_add(last, checked_mul(t->shape[d] - 1, t->stride[d], what, "view extent"), what, "view extent");
  }
  return last;
}

RawTensor materialize(const PyValue* t, Bytes storage, Materializer& m, const std::string& what) {
  RawTensor out;
  out.dtype = t->dtype;
  out.shape = t->shape;
  MO_CHECK(t->shape.size() == t->stride.size(), "{}: size {} and stride {} differ in rank", what,
           shape_string(t->shape), shape_string(t->stride));
  const int64_t n = checked_numel(t->shape, what);
  const uint64_t nbytes = checked_nbytes(t->shape, t->dtype, what);
  const int64_t es = static_cast<int64_t>(wire_info(t->dtype).size);
  if (n == 0) return out;
  const int64_t storage_numel = t->storage->storage_numel;
  const int64_t last = last_index(t, what);
  MO_CHECK(last < storage_numel,
           "{}: view (offset {}, size {}, stride {}) reaches element {} but its storage has only {} elements", what,
           t->storage_offset, shape_string(t->shape), shape_string(t->stride), last, storage_numel);
  m.logical = checked_add(m.logical, nbytes, what, "total tensor size");
  MO_CHECK(m.logical <= m.limit,
           "{}: the tensors named so far would need {} bytes, more than {} times the file's {} bytes (plus 64 MiB): "
           "too many names or views over the same storage; refusing", what, m.logical, kAliasFactor,
           m.file->size());
  const size_t base = static_cast<size_t>(storage.data() - m.file->data());  // the record's place in the file
  // Row-major contiguous (size-1 dims aside): a window of the file, shared with every other view of it.
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t d = t->shape.size(); d > 0; --d) {
    if (t->shape[d - 1] != 1 && t->stride[d - 1] != expect) contiguous = false;
    expect *= t->shape[d - 1];  // a suffix product of the shape: at most n
  }
  out.nbytes = static_cast<size_t>(nbytes);
  if (contiguous) {
    out.buffer = m.file;
    out.offset = base + static_cast<size_t>(checked_mul(t->storage_offset, es, what));
    return out;
  }
  // Strided: gather once per distinct view. Odometer over the dims of size > 1; `off` stays in [0, last].
  const std::string key = fmt::format("{}/{}/{}/{}/{}", t->storage->s, wire_info(t->dtype).torch_dtype,
                                      t->storage_offset, shape_string(t->shape), shape_string(t->stride));
  if (auto it = m.gathered.find(key); it != m.gathered.end()) {
    out.buffer = it->second;
    return out;
  }
  std::vector<int64_t> size, stride;
  for (size_t d = 0; d < t->shape.size(); ++d)
    if (t->shape[d] > 1) size.push_back(t->shape[d]), stride.push_back(t->stride[d]);
  std::vector<uint8_t> buf(static_cast<size_t>(nbytes));
  std::vector<int64_t> idx(size.size(), 0);
  const uint8_t* src = storage.data();
  int64_t off = t->storage_offset;
  for (int64_t lin = 0; lin < n; ++lin) {
    std::memcpy(buf.data() + lin * es, src + off * es, static_cast<size_t>(es));
    for (size_t d = size.size(); d > 0; --d) {
      if (++idx[d - 1] < size[d - 1]) {
        off += stride[d - 1];
        break;
      }
      off -= stride[d - 1] * (size[d - 1] - 1);
      idx[d - 1] = 0;
    }
  }
  out.buffer = m.gathered.emplace(key, std::make_shared<const std::vector<uint8_t>>(std::move(buf))).first->second;
  return out;
}

// Finds "<archive>/data.pkl" and returns "<archive>/".
std::string archive_prefix(const ZipReader& z, const std::string& what) {
  std::string prefix;
  int found = 0;
  for (const auto& e : z.entries()) {
    const std::string& n = e.name;
    if (n == "data.pkl" || (n.size() > 9 && n.ends_with("/data.pkl") && n.find('/') == n.size() - 9)) {
      prefix = n.substr(0, n.size() - 8);
      ++found;
    }
    MO_CHECK(!n.ends_with("/constants.pkl"), "{}: this is a TorchScript archive (torch.jit.save), not a torch.save "
             "checkpoint; save model.state_dict() with torch.save instead", what);
  }
  MO_CHECK(found == 1, "{}: not a torch.save checkpoint: {} 'data.pkl' records in the zip archive", what, found);
  return prefix;
}

// --- writer -------------------------------------------------------------------------------------

struct PickleOut {
  std::vector<uint8_t> b;
  void op(char c) { b.push_back(static_cast<uint8_t>(c)); }
  void raw(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
  void global(const std::string& module, const std::string& name) {
    op('c');
    raw(module + "\n" + name + "\n");
  }
  void str(const std::string& s) {  // BINUNICODE
    op('X');
    for (int k = 0; k < 4; ++k) b.push_back(static_cast<uint8_t>(s.size() >> (8 * k)));
    raw(s);
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      b.push_back(static_cast<uint8_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      for (int k = 0; k < 4; ++k) b.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * k)));
    } else {  // LONG1, 8 bytes two's complement
      b.push_back(0x8a);
      b.push_back(8);
      for (int k = 0; k < 8; ++k) b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * k)));
    }
  }
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
};

}  // namespace

RawStateDict read_pth(Bytes data, const std::string& what, const PthReadOptions& opt) {
  return read_pth(std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end()), what, opt);
}

RawStateDict read_pth(SharedBytes file, const std::string& what, const PthReadOptions& opt) {
  const Bytes data(*file);
  if (!looks_like_zip(data)) {
    MO_CHECK(!(data.size() >= 2 && data[0] == 0x80 && data[1] <= 5),
             "{}: legacy (pre-1.6) torch.save format; re-save it with a current torch.save", what);
    MO_FAIL("{}: not a torch.save checkpoint (no zip signature; {} bytes)", what, data.size());
  }
  ZipReader z(data, what);
  const std::string prefix = archive_prefix(z, what);
  if (const auto* bo = z.find(prefix + "byteorder")) {
    Bytes b = z.read(*bo, opt.verify_crc);
    std::string order(reinterpret_cast<const char*>(b.data()), b.size());
    MO_CHECK(order == "little", "{}: byte order '{}' is not supported (little-endian only)", what, order);
  }
  Pickle pk = unpickle(z.read(prefix + "data.pkl", opt.verify_crc), what + ": data.pkl");
  RawStateDict out;
  const PyValue* sd = select_state_dict(pk.root, opt, what, out);
  Materializer m{file, 0, checked_add(checked_mul<uint64_t>(data.size(), kAliasFactor, what), kAliasSlack, what), {}};
  std::unordered_map<std::string, Bytes> records;  // storage key -> bytes (each CRC-checked once)
  std::unordered_map<std::string, size_t> index;   // tensor name -> position in out.tensors
  out.tensors.reserve(sd->items.size() / 2);
  for (size_t k = 0; k + 1 < sd->items.size(); k += 2) {
    const PyValue* key = sd->items[k];
    const PyValue* val = sd->items[k + 1];
    MO_CHECK(key->kind == Kind::str, "{}: state_dict entry {} has a {} key, not a string", what, k / 2, describe(key));
    const std::string tw = what + ": tensor '" + key->s + "'";
    MO_CHECK(val->kind == Kind::tensor, "{}: state_dict entry '{}' is a {}, not a tensor", what, key->s, describe(val));
    const PyValue* st = val->storage;
    auto it = records.find(st->s);
    if (it == records.end()) {
      const auto* e = z.find(prefix + "data/" + st->s);
      MO_CHECK(e != nullptr, "{}: its storage record 'data/{}' is missing from the archive", tw, st->s);
      it = records.emplace(st->s, z.read(*e, opt.verify_crc)).first;
    }
    const uint64_t es = wire_info(st->dtype).size;
    MO_CHECK(checked_mul<uint64_t>(static_cast<uint64_t>(st->storage_numel), es, tw, "storage size") ==
                 it->second.size(),
             "{}: storage 'data/{}' should hold {} {} elements but has {} bytes", tw, st->s, st->storage_numel,
             wire_info(st->dtype).torch_dtype, it->second.size());
    RawTensor t = materialize(val, it->second, m, tw);
    // A later duplicate key replaces the earlier one, as in Python.
    auto [pos, fresh] = index.emplace(key->s, out.tensors.size());
    if (fresh) out.tensors.emplace_back(key->s, std::move(t));
    else out.tensors[pos->second].second = std::move(t);
  }
  return out;
}

void write_pth(const RawStateDict& sd, std::ostream& out, const std::string& what) {
  PickleOut p;
  p.b = {0x80, 2};  // PROTO 2
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.op('(');
  for (size_t i = 0; i < sd.tensors.size(); ++i) {
    const auto& [name, t] = sd.tensors[i];
    const std::string tw = what + ": tensor '" + name + "'";
    check_raw(t, tw);
    const int64_t n = checked_numel(t.shape, tw);
    p.str(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');  // persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
    p.str("storage");
    p.global("torch", wire_info(t.dtype).torch_storage);
    p.str(std::to_string(i));
    p.str("cpu");
    p.integer(n);
    p.op('t');
    p.op('Q');
    p.integer(0);  // storage offset
    p.int_tuple(t.shape);
    std::vector<int64_t> stride(t.shape.size());
    int64_t acc = 1;
    for (size_t d = t.shape.size(); d > 0; --d) stride[d - 1] = acc, acc *= t.shape[d - 1];  // <= numel
    p.int_tuple(stride);
    p.b.push_back(0x89);  // requires_grad = False
    p.global("collections", "OrderedDict");  // backward_hooks = OrderedDict()
    p.op(')');
    p.op('R');
    p.op('t');
    p.op('R');
  }
  p.op('u');  // SETITEMS
  p.op('.');
  ZipWriter z(out, what);
  z.add("archive/data.pkl", p.b);
  const std::string order = "little";
  z.add("archive/byteorder", Bytes(reinterpret_cast<const uint8_t*>(order.data()), order.size()));
  for (size_t i = 0; i < sd.tensors.size(); ++i) z.add("archive/data/" + std::to_string(i), sd.tensors[i].second.bytes());
  const std::string version = "3\n";
  z.add("archive/version", Bytes(reinterpret_cast<const uint8_t*>(version.data()), version.size()));
  z.finish();
}

}  // namespace mo::nn::io
