// cli.h: the command line every tool shares, on CLI11. A tool makes a `Cli` with its name and a one-line
// description, declares its options on `cli.app` (the range and choice checks below sit on the option),
// then calls parse() and run():
//
//   mo::tools::Cli cli("mo_bench", "Synthetic-data speed of a MambaOut variant.");
//   cli.app.add_option("--batch", a.batch, "images per step")->check(mo::tools::int_range(1, 1 << 20));
//   if (auto rc = cli.parse(argc, argv)) return *rc;
//   return cli.run([&] { ...; return 0; });
//
// What every tool then does alike: -h/--help prints the help on stdout and exits 0; --version prints the
// version, the git commit and the build flags (CUDA, NCCL, MPI, cuDNN) on stdout and exits 0; a mistake on
// the command line prints "<tool>: error: <message>" and a pointer to --help on stderr and exits 2 (an
// unknown option adds "did you mean '--x'?"); an error while running (mo::Error or a standard exception)
// prints "<tool>: error: <message>" and exits 1. A bad value is named with its option and the accepted
// range: "--topk: expected an integer from 1 to 1000, got 'abc'". option_int/option_float give the same
// messages for values parsed by hand.
#pragma once
#if __has_include(<CLI/CLI.hpp>)
#include <CLI/CLI.hpp>
#else
#include <CLI11.hpp>  // the single-header distribution
#endif

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "autograd/tensor.h"

namespace mo::tools {

// A mistake on the command line found after parsing (two options that exclude each other, a value that
// does not fit another one): Cli::run exits 2 with its message, as for the mistakes CLI11 finds.
struct UsageError : Error {
  using Error::Error;
};

class Cli {
 public:
  Cli(std::string tool, const std::string& description);
  // std::nullopt: go on. Otherwise the exit code (0 after --help or --version, 2 after a mistake), the
  // text already printed.
  std::optional<int> parse(int argc, char** argv);
  // body's exit code, or 2 for a UsageError and 1 for any other exception, with its message printed.
  int run(const std::function<int()>& body) const;
  // Prints "<tool>: error: <message>" on stderr (the tool's prefix once, even if message carries it).
  void print_error(const std::string& message) const;

  const std::string tool;
  CLI::App app;
};

// "<tool> <version> (git <commit>)" and the build flags, as --version prints them.
std::string version_text(const std::string& tool);
// "CUDA on, NCCL off, MPI on, cuDNN off": what this build was compiled with.
std::string build_flags();

// Checks declared with an option: the text must be a whole integer (a finite number) in [lo, hi], or one
// of `choices`; the error names the option, the text and what is accepted.
CLI::Validator int_range(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max());
CLI::Validator number_range(double lo, double hi = std::numeric_limits<double>::infinity());
CLI::Validator one_of(std::vector<std::string> choices);

// The same checks for a value parsed by hand; they throw mo::Error "<option>: expected ..., got '<text>'".
int64_t option_int(const std::string& option, const std::string& text,
                   int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
double option_float(const std::string& option, const std::string& text,
                    double lo = -std::numeric_limits<double>::infinity(),
                    double hi = std::numeric_limits<double>::infinity());

// The option of `app` nearest to the mistyped `name` ("--bach" -> "--batch"), "" when none is close.
std::string nearest_option(const CLI::App& app, const std::string& name);

// --device auto|cpu|cuda: cpu, or `gpu` (the GPU this process would use; Device::cpu() where there is
// none). "cuda" without a GPU, or any other word, is an error naming the option.
Device device_option(const std::string& device, Device gpu);
// The same with GPU 0 where CUDA is available.
Device device_option(const std::string& device);

}  // namespace mo::tools
