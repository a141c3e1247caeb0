// cli.h: numbers from command-line option values, with the tools' error messages. std::stoi and friends
// throw "stoi" for "abc" and accept "12abc"; these name the option, the text and the accepted range:
// "--topk: expected an integer from 1 to 1000, got 'abc'".
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace mo::tools {

int64_t option_int(const std::string& option, const std::string& text,
                   int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
double option_float(const std::string& option, const std::string& text,
                    double lo = -std::numeric_limits<double>::infinity(),
                    double hi = std::numeric_limits<double>::infinity());

}  // namespace mo::tools
