// safetensors.h: the safetensors format (8-byte little-endian header length, a JSON header mapping each
// name to {dtype, shape, data_offsets} plus an optional "__metadata__" string map, then the data).
// The reader applies the same validation as the reference implementation: header length within the
// file and at most 100 MB, known dtypes, offsets that tile the data block exactly (no gaps, overlaps or
// trailing bytes), byte counts equal to numel * element size. Tensors come back in data-offset order.
// The writer pads the header with spaces to a multiple of 8 and orders the data by element size
// (largest first, file order otherwise kept) so every tensor is naturally aligned.
#pragma once
#include <ostream>
#include <string>

#include "nn/io/byte_reader.h"
#include "nn/io/raw_tensor.h"

namespace mo::nn::io {

bool looks_like_safetensors(Bytes head);  // a plausible header length followed by '{' (first bytes suffice)

// Tensors come back as windows of `file` (shared, not copied).
RawStateDict read_safetensors(SharedBytes file, const std::string& what);
RawStateDict read_safetensors(Bytes data, const std::string& what);  // copies `data`
void write_safetensors(const RawStateDict& sd, std::ostream& out, const std::string& what);

}  // namespace mo::nn::io
