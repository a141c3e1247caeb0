// cli.h: numbers from command-line option values, with the tools' error messages. std::stoi and friends
// throw "stoi" for "abc" and accept "12abc"; these name the option, the text and the accepted range:
// "--topk: expected an integer from 1 to 1000, got 'abc'".
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "autograd/tensor.h"

namespace mo::tools {

int64_t option_int(const std::string& option, const std::string& text,
                   int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
double option_float(const std::string& option, const std::string& text,
                    double lo = -std::numeric_limits<double>::infinity(),
                    double hi = std::numeric_limits<double>::infinity());

// --device auto|cpu|cuda: cpu, or `gpu` (the GPU this process would use; Device::cpu() where there is
// none). "cuda" without a GPU, or any other word, is an error naming the option.
Device device_option(const std::string& device, Device gpu);
// The same with GPU 0 where CUDA is available.
Device device_option(const std::string& device);

}  // namespace mo::tools
