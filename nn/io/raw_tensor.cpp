// raw_tensor.cpp: dtype tables shared by the torch and safetensors readers/writers, checked sizes,
// the NaN/Inf counter and the fp16 decoder (see raw_tensor.h).
#include "nn/io/raw_tensor.h"

#include <bit>
#include <cstring>

#include "autograd/check.h"
#include "nn/io/byte_reader.h"

namespace mo::nn::io {

static_assert(std::endian::native == std::endian::little, "checkpoint bytes are read as little-endian");

namespace {
constexpr WireDTypeInfo kTable[] = {
    {WireDType::f32, "F32", "FloatStorage", "float32", 4},   {WireDType::f16, "F16", "HalfStorage", "float16", 2},
    {WireDType::bf16, "BF16", "BFloat16Storage", "bfloat16", 2}, {WireDType::f64, "F64", "DoubleStorage", "float64", 8},
    {WireDType::i64, "I64", "LongStorage", "int64", 8},      {WireDType::i32, "I32", "IntStorage", "int32", 4},
    {WireDType::i16, "I16", "ShortStorage", "int16", 2},     {WireDType::i8, "I8", "CharStorage", "int8", 1},
    {WireDType::u8, "U8", "ByteStorage", "uint8", 1},        {WireDType::boolean, "BOOL", "BoolStorage", "bool", 1},
};
}  // namespace

const WireDTypeInfo& wire_info(WireDType t) {
  for (const auto& e : kTable)
    if (e.dtype == t) return e;
  MO_FAIL("wire_info: unknown dtype code {}", static_cast<int>(t));
}

std::optional<WireDType> wire_from_safetensors(std::string_view code) {
  for (const auto& e : kTable)
    if (code == e.safetensors) return e.dtype;
  return std::nullopt;
}

std::optional<WireDType> wire_from_torch_storage(std::string_view class_name) {
  for (const auto& e : kTable)
    if (class_name == e.torch_storage) return e.dtype;
  return std::nullopt;
}

int64_t RawTensor::numel() const { return checked_numel(shape, "tensor"); }

std::span<const uint8_t> RawTensor::bytes() const {
  if (!buffer) return {};
  MO_ASSERT(offset <= buffer->size() && nbytes <= buffer->size() - offset);
  return {buffer->data() + offset, nbytes};
}

void RawTensor::set_bytes(std::vector<uint8_t> b) {
  offset = 0;
  nbytes = b.size();
  buffer = std::make_shared<const std::vector<uint8_t>>(std::move(b));
}

const RawTensor* RawStateDict::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  MO_CHECK(shape.size() <= 64, "{}: rank {} is too large", what, shape.size());
  for (int64_t d : shape) MO_CHECK(d >= 0, "{}: negative dimension in shape {}", what, shape_string(shape));
  int64_t n = 1;
  for (int64_t d : shape) n = checked_mul(n, d, what, "the element count");
  MO_CHECK(n <= (int64_t{1} << 62), "{}: shape {} has too many elements", what, shape_string(shape));
  return n;
}

uint64_t checked_nbytes(const std::vector<int64_t>& shape, WireDType dt, const std::string& what) {
  const auto n = static_cast<uint64_t>(checked_numel(shape, what));
  const uint64_t b = checked_mul<uint64_t>(n, wire_info(dt).size, what, "the byte size");
  MO_CHECK(b <= (uint64_t{1} << 62), "{}: shape {} of {} needs {} bytes, more than any file holds", what,
           shape_string(shape), wire_info(dt).torch_dtype, b);
  return b;
}

void check_raw(const RawTensor& t, const std::string& what) {
  const uint64_t want = checked_nbytes(t.shape, t.dtype, what);
  MO_CHECK(t.bytes().size() == want, "{}: has {} bytes but shape {} of {} needs {}", what, t.bytes().size(),
           shape_string(t.shape), wire_info(t.dtype).torch_dtype, want);
}

int64_t count_non_finite(const RawTensor& t) {
  // Non-finite <=> every exponent bit set; read each element's high bits little-endian.
  uint64_t exp_mask = 0;
  size_t es = wire_info(t.dtype).size;
  switch (t.dtype) {
    case WireDType::f32: exp_mask = 0x7f800000u; break;
    case WireDType::f16: exp_mask = 0x7c00u; break;
    case WireDType::bf16: exp_mask = 0x7f80u; break;
    case WireDType::f64: exp_mask = 0x7ff0000000000000ull; break;
    default: return 0;
  }
  const std::span<const uint8_t> b = t.bytes();
  int64_t bad = 0;
  for (size_t at = 0; at + es <= b.size(); at += es) {
    uint64_t u = 0;
    std::memcpy(&u, b.data() + at, es);  // little-endian host (asserted above)
    bad += (u & exp_mask) == exp_mask;
  }
  return bad;
}

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;  // +-0
  } else {        // subnormal: normalize
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace mo::nn::io
