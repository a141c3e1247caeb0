// weights.cpp: our checkpoint format as an nn/io format, and the one call the tools use to load weights.
#include "tools/common/weights.h"

#include <cstring>
#include <mutex>

#include "tools/common/checkpoint.h"

namespace mo::tools {

void register_mo_format() {
  static std::once_flag once;
  std::call_once(once, [] {
    nn::io::register_format(
        {"mo",
         {".mo"},
         [](nn::io::Bytes head) { return head.size() >= 8 && std::memcmp(head.data(), "MOCKPT01", 8) == 0; },
         [](const std::string& path, const nn::io::ReadOptions& opt) {
           MO_CHECK(opt.entry.empty(), "{}: an entry name does not apply to mo checkpoints", path);
           CheckpointState s = load_checkpoint(path, /*with_optimizer=*/false);
           nn::io::RawStateDict sd;
           for (const auto& [n, t] : s.model) sd.tensors.emplace_back(n, nn::io::raw_from_tensor(t));
           if (!s.model_name.empty()) sd.metadata.emplace_back("arch", s.model_name);
           sd.metadata.emplace_back("epoch", std::to_string(s.epoch));
           return sd;
         },
         [](const nn::io::RawStateDict& sd, const std::string& path) {
           CheckpointState s;  // weights only: no optimizer state, so not resumable
           for (const auto& [k, v] : sd.metadata)
             if (k == "arch") s.model_name = v;
           for (const auto& [n, t] : sd.tensors) s.model.emplace_back(n, nn::io::tensor_from_raw(t));
           save_checkpoint(path, s);
         }});
  });
}

nn::io::LoadReport load_weights(nn::Module& model, const std::string& path, bool strict,
                                const std::vector<std::string>& keep_if_shape_differs) {
  register_mo_format();
  nn::io::LoadOptions opt;
  opt.strict = strict;
  opt.keep_if_shape_differs = keep_if_shape_differs;
  return nn::io::load_into_model(model, path, opt);
}

}  // namespace mo::tools
