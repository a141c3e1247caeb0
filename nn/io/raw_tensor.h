// raw_tensor.h: the format-neutral in-memory checkpoint that every reader produces and every writer
// consumes: an ordered list of (name, RawTensor), each a contiguous little-endian byte buffer with the
// dtype it had in the file (fp16 included, which mo::Tensor has no dtype for). Converting between
// formats goes through this type only, so pth -> safetensors -> pth is bit-exact and dtype-preserving.
// This header and raw_tensor.cpp depend only on autograd/check.h (fmt), so the fuzz build can compile
// the readers without the rest of the library.
#pragma once
#include <cstdint>
#include <optional>
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

struct RawTensor {
  WireDType dtype = WireDType::f32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // numel * element size, row-major, little-endian
  int64_t numel() const;
};

struct RawStateDict {
  std::vector<std::pair<std::string, RawTensor>> tensors;  // file order
  // Small string facts: safetensors __metadata__, or 'arch'/'epoch' found next to a torch state_dict.
  std::vector<std::pair<std::string, std::string>> metadata;
  const RawTensor* find(const std::string& name) const;
};

// Product of the dims with overflow and sign checks; `what` names the tensor in the error.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);
std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]"

// IEEE half -> float (exact).
float half_to_float(uint16_t h);

}  // namespace mo::nn::io
