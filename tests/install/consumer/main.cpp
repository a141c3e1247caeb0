// main.cpp: a program outside mo that uses the installed library. It builds mambaout_femto, loads the
// weights of a checkpoint when one is given (any file mo reads: .mo, .pth, .safetensors), runs a forward
// pass on a 1x3x64x64 input drawn from mo's Philox generator (seed 7) and prints the logits' shape and
// values. Usage: consumer [WEIGHTS]
#include <cstdio>
#include <vector>

#include "autograd/graph.h"
#include "autograd/rng.h"
#include "nn/mambaout.h"
#include "tools/engine/weights.h"

int main(int argc, char** argv) {
  try {
    mo::nn::MambaOut model(mo::nn::mambaout_config("mambaout_femto"), /*init_seed=*/0, /*initialize=*/argc < 2);
    if (argc >= 2) mo::tools::load_weights(model, argv[1]);
    model.eval();
    mo::Generator gen(7);
    std::vector<float> x(1 * 3 * 64 * 64);
    for (float& v : x) v = gen.normal();
    mo::NoGradGuard no_grad;
    mo::Tensor logits = model.forward(mo::Tensor::from_vector(x, {1, 3, 64, 64}));
    std::printf("logits %s\n", mo::shape_str(logits.shape()).c_str());
    for (float v : logits.to_vector<float>()) std::printf("%.9g\n", v);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: error: %s\n", e.what());
    return 1;
  }
}
