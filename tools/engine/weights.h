// weights.h: loading model weights from any file the tools accept: our checkpoints (.mo, the fp32
// master weights) and PyTorch's (.pth/.pt/.bin torch.save, .safetensors; official or timm key names)
// through nn/io. Our format is registered with nn/io's format registry as "mo", so nn/io's readers
// (and mo_convert) see it too.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/io/checkpoint_io.h"
#include "nn/module.h"

namespace mo::tools {

// Adds the "mo" format (.mo, magic MOCKPT01) to nn/io's registry; safe to call more than once.
void register_mo_format();

// Copies the weights in `path` into `model`'s parameters (before the optimizer packs them). Key names are
// converted between the official and timm layouts; a missing or unexpected key is an error when strict.
// `keep_if_shape_differs`: parameters left at their initialisation when the file's have another shape
// (model.init onto another number of classes).
// Rows of the classifier weight (MambaOut: official head.fc2, timm head.fc; ViT: head), or 0 when there
// is none; a weight with no input features is refused, naming `what` (the file).
int64_t classifier_rows(const nn::io::RawStateDict& sd, const std::string& what);

nn::io::LoadReport load_weights(nn::Module& model, const std::string& path, bool strict = true,
                                const std::vector<std::string>& keep_if_shape_differs = {});

}  // namespace mo::tools
