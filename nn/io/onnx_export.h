// onnx_export.h: writes a MambaOut or ViT model as an ONNX file (opset 17, IR version 8) with mo's own
// writer: the graph is built node by node from the model definition (nn/mambaout.h, nn/vit.h) and
// serialised through the ONNX IR subset in nn/io/onnx.proto; no Python, no tracing.
//
// The graph takes `input` (batch, 3, height, width): an RGB image batch, NCHW, normalised as the
// metadata says (x / 255 − mean) / std; batch, height and width are symbolic, so any batch and any
// image size the model accepts run (a ViT's height and width are fixed: its position embedding's). It
// returns `logits` (batch, num_classes). A ViT's attention is written out (MatMul, Softmax, MatMul; the
// causal mask an additive constant), its tokens (batch, tokens, width) as in mo. Inside, activations are
// channels-last as in mo (LayerNormalization over the last axis, MatMul for the linears); each
// convolution is a Conv wrapped in two Transposes; GELU is written with Erf (opset 17 has no Gelu).
// fp16 stores every weight, the input and the output as float16 and computes in float16.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "nn/mambaout.h"
#include "nn/vit.h"

namespace mo::nn::io {

enum class OnnxDType { fp32, fp16 };
// "fp32" | "fp16"; anything else is an error naming the value.
OnnxDType parse_onnx_dtype(const std::string& name);
const char* onnx_dtype_name(OnnxDType t);

struct OnnxExportOptions {
  OnnxDType dtype = OnnxDType::fp32;
  // The model's metadata_props, in order (e.g. architecture, num_classes, the eval preprocessing).
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string producer_version;
};

constexpr int kOnnxOpset = 17;
constexpr int kOnnxIrVersion = 8;

// The serialised ModelProto of `model` (parameters read from whatever device they are on).
std::string onnx_model_bytes(const MambaOut& model, const OnnxExportOptions& opt = {});
std::string onnx_model_bytes(const VisionTransformer& model, const OnnxExportOptions& opt = {});
// onnx_model_bytes written to path + ".tmp", then renamed to `path`; errors name the path.
void export_onnx(const MambaOut& model, const std::string& path, const OnnxExportOptions& opt = {});
void export_onnx(const VisionTransformer& model, const std::string& path, const OnnxExportOptions& opt = {});

}  // namespace mo::nn::io
