// pth.h: torch.save's zip checkpoint format (PyTorch >= 1.6), read and write.
// Reading: zip (zip_reader.h) -> data.pkl (pickle_reader.h, data-only) -> pick the state_dict out of a
// plain dict, an OrderedDict, or a training checkpoint ({'state_dict': ..., 'epoch', 'arch',
// 'optimizer', 'args', ...} or {'model': ...}; the other entries are parsed as inert data and skipped)
// -> each tensor copied out of its storage record data/<key> honouring storage offset, size and stride
// (shared storages and non-contiguous views), with every extent overflow-checked and bounded by the record.
// Writing: the layout torch.save produces and torch.load reads: <archive>/data.pkl (pickle protocol 2,
// an OrderedDict of torch._utils._rebuild_tensor_v2 calls over torch.<T>Storage persistent ids),
// <archive>/data/<n>, <archive>/byteorder, <archive>/version.
#pragma once
#include <ostream>
#include <string>

#include "nn/io/byte_reader.h"
#include "nn/io/raw_tensor.h"

namespace mo::nn::io {

struct PthReadOptions {
  std::string entry;        // top-level key holding the state_dict (e.g. "state_dict_ema"); empty = auto
  bool verify_crc = true;   // check each record's CRC-32 (the fuzzer turns it off to reach deeper code)
};

// `what` names the file in errors. Tensor names are returned as stored (prefixes are not stripped).
// Contiguous views are windows of `file` (shared, not copied); strided ones are gathered once per
// distinct view. All named tensors together may hold at most 8x the file's size plus 64 MiB.
RawStateDict read_pth(SharedBytes file, const std::string& what, const PthReadOptions& opt = {});
RawStateDict read_pth(Bytes data, const std::string& what, const PthReadOptions& opt = {});  // copies `data`

void write_pth(const RawStateDict& sd, std::ostream& out, const std::string& what);

}  // namespace mo::nn::io
