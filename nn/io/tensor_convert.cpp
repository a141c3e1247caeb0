// tensor_convert.cpp: RawTensor <-> mo::Tensor (see tensor_convert.h). Depends on autograd only, so the
// fuzz build can run the readers' output through it.
#include "nn/io/tensor_convert.h"

#include <cstring>

namespace mo::nn::io {

Tensor tensor_from_raw(const RawTensor& r) {
  check_raw(r, "tensor_from_raw");  // the readers guarantee it; a hand-made RawTensor may not
  const int64_t n = r.numel();
  switch (r.dtype) {
    case WireDType::f32:
    case WireDType::bf16:
    case WireDType::f64:
    case WireDType::i64:
    case WireDType::u8:
    case WireDType::boolean: {
      const DType dt = r.dtype == WireDType::f32    ? DType::f32
                       : r.dtype == WireDType::bf16 ? DType::bf16
                       : r.dtype == WireDType::f64  ? DType::f64
                       : r.dtype == WireDType::i64  ? DType::i64
                                                    : DType::u8;
      Tensor t = Tensor::empty(r.shape, dt);
      if (n > 0) std::memcpy(t.raw_data(), r.bytes().data(), r.nbytes);
      return t;
    }
    case WireDType::f16: {
      Tensor t = Tensor::empty(r.shape, DType::f32);
      float* d = t.data<float>();
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, r.bytes().data() + 2 * k, 2);
        d[k] = half_to_float(h);
      }
      return t;
    }
    case WireDType::i32:
    case WireDType::i16:
    case WireDType::i8: {
      Tensor t = Tensor::empty(r.shape, DType::i64);
      int64_t* d = t.data<int64_t>();
      const size_t es = wire_info(r.dtype).size;
      for (int64_t k = 0; k < n; ++k) {
        const uint8_t* p = r.bytes().data() + es * static_cast<size_t>(k);
        if (es == 4) { int32_t v; std::memcpy(&v, p, 4); d[k] = v; }
        else if (es == 2) { int16_t v; std::memcpy(&v, p, 2); d[k] = v; }
        else { d[k] = static_cast<int8_t>(*p); }
      }
      return t;
    }
  }
  MO_FAIL("tensor_from_raw: unknown dtype");
}

RawTensor raw_from_tensor(const Tensor& t) {
  Tensor c = t.detach().cpu().contiguous();
  RawTensor r;
  switch (c.dtype()) {
    case DType::f32: r.dtype = WireDType::f32; break;
    case DType::bf16: r.dtype = WireDType::bf16; break;
    case DType::f64: r.dtype = WireDType::f64; break;
    case DType::i64: r.dtype = WireDType::i64; break;
    case DType::u8: r.dtype = WireDType::u8; break;
  }
  r.shape = c.shape();
  std::vector<uint8_t> b(c.nbytes());
  if (!b.empty()) std::memcpy(b.data(), c.raw_data(), b.size());
  r.set_bytes(std::move(b));
  return r;
}

}  // namespace mo::nn::io
