// tensor_convert.h: RawTensor (the readers' byte windows, raw_tensor.h) to and from mo::Tensor, with
// the byte count checked against the shape before anything is allocated or copied.
#pragma once
#include "autograd/tensor.h"
#include "nn/io/raw_tensor.h"

namespace mo::nn::io {

// f32/bf16/f64/i64/u8 map to themselves; f16 -> f32 (exact); i32/i16/i8 -> i64; bool -> u8.
Tensor tensor_from_raw(const RawTensor& t);
RawTensor raw_from_tensor(const Tensor& t);  // any device, layout; f32/bf16/f64/i64/u8

}  // namespace mo::nn::io
