// raw_tensor.h: the format-neutral in-memory checkpoint that every reader produces and every writer
// consumes: an ordered list of (name, RawTensor), each a contiguous little-endian byte window with the
// dtype it had in the file (fp16 included, which mo::Tensor has no dtype for). Converting between
// formats goes through this type only, so pth -> safetensors -> pth is bit-exact and dtype-preserving.
// The windows of tensors read from one file point into one shared copy of the file, so many names
// over one storage cost no memory per name.
// This header and raw_tensor.cpp depend only on autograd/check.h (fmt), so the fuzz build can compile
// the readers without the rest of the library.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mo::nn::io {

// Element types found in checkpoints (torch storage classes / safetensors dtype codes).
enum class WireDType : uint8_t { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

struct WireDTypeInfo {
  WireDType dtype;
  const char* safetensors;    // "F32"
  const char* torch_storage;  // "FloatStorage"
  const char* torch_dtype;    // "float32" (for messages)
  size_t size;                // bytes per element
};
const WireDTypeInfo& wire_info(WireDType t);
std::optional<WireDType> wire_from_safetensors(std::string_view code);
std::optional<WireDType> wire_from_torch_storage(std::string_view class_name);  // "FloatStorage"

using SharedBytes = std::shared_ptr<const std::vector<uint8_t>>;

struct RawTensor {
  WireDType dtype = WireDType::f32;
  std::vector<int64_t> shape;
  // The tensor's numel * element size bytes (row-major, little-endian) are [offset, offset + nbytes)
  // of `buffer`, which tensors viewing the same bytes share (a whole file, or one gathered view).
  SharedBytes buffer;
  size_t offset = 0, nbytes = 0;
  std::span<const uint8_t> bytes() const;
  void set_bytes(std::vector<uint8_t> b);  // gives the tensor a buffer of its own
  int64_t numel() const;
};

struct RawStateDict {
  std::vector<std::pair<std::string, RawTensor>> tensors;  // file order
  // Small string facts: safetensors __metadata__, or 'arch'/'epoch' found next to a torch state_dict.
  std::vector<std::pair<std::string, std::string>> metadata;
  // What a read noticed that does not stop it (tensors with NaN/Inf values), one line each.
  std::vector<std::string> warnings;
  const RawTensor* find(const std::string& name) const;
};

// Product of the dims with overflow and sign checks; `what` names the tensor in the error.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);
// numel * element size, overflow-checked (at most 2^62 bytes).
uint64_t checked_nbytes(const std::vector<int64_t>& shape, WireDType dt, const std::string& what);
// Checks that t.bytes() holds exactly numel * element size bytes; `what` names the tensor.
void check_raw(const RawTensor& t, const std::string& what);
// Number of NaN/Inf values (floating dtypes; 0 for integer ones).
int64_t count_non_finite(const RawTensor& t);
std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]"

// IEEE half -> float (exact).
float half_to_float(uint16_t h);

}  // namespace mo::nn::io
