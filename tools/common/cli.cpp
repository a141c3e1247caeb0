// cli.cpp: see cli.h.
#include "tools/common/cli.h"

#include "autograd/parse.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <utility>

#include <fmt/format.h>

#include "autograd/cuda_allocator.h"
#include "tools/common/build_info.h"

namespace mo::tools {

namespace {

std::string range_text(int64_t lo, int64_t hi) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  if (lo == kMin && hi == kMax) return "an integer";
  if (hi == kMax) return fmt::format("an integer >= {}", lo);
  if (lo == kMin) return fmt::format("an integer <= {}", hi);
  return fmt::format("an integer from {} to {}", lo, hi);
}

std::string range_text(double lo, double hi) {
  if (std::isinf(lo) && std::isinf(hi)) return "a number";
  if (std::isinf(hi)) return fmt::format("a number >= {}", lo);
  if (std::isinf(lo)) return fmt::format("a number <= {}", hi);
  return fmt::format("a number from {} to {}", lo, hi);
}

// "" when `text` is a whole integer in [lo, hi], else what is wrong with it.
std::string int_error(const std::string& text, int64_t lo, int64_t hi, int64_t* out = nullptr) {
  const std::optional<int64_t> v = parse_int(text);
  if (!v || *v < lo || *v > hi) return fmt::format("expected {}, got '{}'", range_text(lo, hi), text);
  if (out) *out = *v;
  return "";
}

std::string number_error(const std::string& text, double lo, double hi, double* out = nullptr) {
  const std::optional<double> v = parse_float(text);
  if (!v || *v < lo || *v > hi) return fmt::format("expected {}, got '{}'", range_text(lo, hi), text);
  if (out) *out = *v;
  return "";
}

// "a, b or c"
std::string or_list(const std::vector<std::string>& words) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i) s += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + words[i];
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// CLI11's wording of the common mistakes, in the tools' words.
std::string message_of(const CLI::ParseError& e) {
  std::string m = e.what();
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {
    // "Expected exactly 1 arguments to --batch, got 0" / "--batch: 1 required INT missing"
    const size_t to = m.find(" arguments to "), got = m.rfind(", got ");
    if (to != std::string::npos && got != std::string::npos && got > to)
      return fmt::format("{} needs a value", m.substr(to + 14, got - to - 14));
    const size_t colon = m.find(": ");
    if (colon != std::string::npos && m.find(" missing") != std::string::npos)
      return fmt::format("{} needs a value", m.substr(0, colon));
  }
  return m;
}

}  // namespace

Cli::Cli(std::string tool_name, const std::string& description) : tool(std::move(tool_name)), app(description, tool) {
  app.set_help_flag("-h,--help", "print this help and exit");
  app.set_version_flag("--version", [t = tool] { return version_text(t); }, "print the version and build flags and exit");
  app.allow_extras(true);  // unknown arguments are reported by parse(), with a suggestion
  app.get_formatter()->column_width(34);
  app.footer("Exit codes: 0 done, 1 error while running, 2 mistake on the command line.");
}

std::optional<int> Cli::parse(int argc, char** argv) {
  std::string error;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::fputs(e.what(), stdout);
    std::fputs("\n", stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    error = message_of(e);
  }
  // An unknown argument is named first: it is often why something else looks missing.
  const std::vector<std::string> extra = app.remaining();
  if (!extra.empty()) {
    const std::string& a = extra.front();
    if (a.size() > 1 && a[0] == '-') {
      const std::string name = a.substr(0, a.find('='));
      const std::string near = nearest_option(app, name);
      error = fmt::format("unknown option '{}'{}", name, near.empty() ? "" : "; did you mean '" + near + "'?");
    } else {
      error = fmt::format("unexpected argument '{}'", a);
    }
  }
  if (error.empty()) return std::nullopt;
  print_error(error);
  std::fprintf(stderr, "(%s --help lists the options)\n", tool.c_str());
  return 2;
}

int Cli::run(const std::function<int()>& body) const {
  try {
    return body();
  } catch (const UsageError& e) {
    print_error(e.what());
    std::fprintf(stderr, "(%s --help lists the options)\n", tool.c_str());
    return 2;
  } catch (const std::exception& e) {  // mo::Error and the standard library's (filesystem, allocation)
    print_error(e.what());
    return 1;
  }
}

void Cli::print_error(const std::string& message) const {
  std::string m = message;  // messages from lower layers may already start with "<tool>: " or "<tool> "
  if (m.size() > tool.size() && m.compare(0, tool.size(), tool) == 0 && (m[tool.size()] == ':' || m[tool.size()] == ' '))
    m = m.substr(m.compare(tool.size(), 2, ": ") == 0 ? tool.size() + 2 : tool.size() + 1);
  std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), m.c_str());
}

std::string build_flags() {
  auto on = [](bool b) { return b ? "on" : "off"; };
#ifdef MO_WITH_CUDA
  const bool cuda = true;
#else
  const bool cuda = false;
#endif
#ifdef MO_WITH_NCCL
  const bool nccl = true;
#else
  const bool nccl = false;
#endif
#ifdef MO_WITH_MPI
  const bool mpi = true;
#else
  const bool mpi = false;
#endif
  return fmt::format("CUDA {}, NCCL {}, MPI {}, cuDNN {}", on(cuda), on(nccl), on(mpi), on(MO_BUILD_CUDNN != 0));
}

std::string version_text(const std::string& tool) {
  return fmt::format("{} {} (git {})\nbuild: {}, {}", tool, MO_VERSION, MO_GIT_COMMIT, build_flags(), MO_BUILD_TYPE);
}

CLI::Validator int_range(int64_t lo, int64_t hi) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  return CLI::Validator([lo, hi](std::string& s) { return int_error(s, lo, hi); },
                        hi == kMax ? fmt::format("[{} - ...]", lo) : fmt::format("[{} - {}]", lo, hi));
}

CLI::Validator number_range(double lo, double hi) {
  return CLI::Validator([lo, hi](std::string& s) { return number_error(s, lo, hi); },
                        std::isinf(hi) ? fmt::format("[{} - ...]", lo) : fmt::format("[{} - {}]", lo, hi));
}

CLI::Validator one_of(std::vector<std::string> choices) {
  const std::string desc = fmt::format("{{{}}}", fmt::join(choices, ","));
  return CLI::Validator(
      [choices = std::move(choices)](std::string& s) -> std::string {
        if (std::find(choices.begin(), choices.end(), s) != choices.end()) return "";
        return fmt::format("expected {}, got '{}'", or_list(choices), s);
      },
      desc);
}

int64_t option_int(const std::string& option, const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const std::string err = int_error(text, lo, hi, &v);
  MO_CHECK(err.empty(), "{}: {}", option, err);
  return v;
}

double option_float(const std::string& option, const std::string& text, double lo, double hi) {
  double v = 0;
  const std::string err = number_error(text, lo, hi, &v);
  MO_CHECK(err.empty(), "{}: {}", option, err);
  return v;
}

std::string nearest_option(const CLI::App& app, const std::string& name) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const CLI::Option* o : app.get_options()) {
    std::vector<std::string> names;
    for (const auto& l : o->get_lnames()) names.push_back("--" + l);
    for (const auto& s : o->get_snames()) names.push_back("-" + s);
    for (const auto& n : names) {
      // a typo, or (one more) for a typo of the start of a longer name ("--bach" for "--batch-size")
      size_t d = edit_distance(name, n);
      if (name.size() > 4 && n.size() > name.size() + 1)
        d = std::min(d, edit_distance(name, n.substr(0, name.size() + 1)) + 1);
      if (d < best_d) best_d = d, best = n;
    }
  }
  const size_t limit = std::max<size_t>(1, name.size() / 3);  // "--bach" -> "--batch", not "--json" -> "--img"
  return best_d <= limit ? best : "";
}

Device device_option(const std::string& device, Device gpu) {
  MO_CHECK(device == "auto" || device == "cpu" || device == "cuda", "--device must be auto, cpu or cuda, got '{}'",
           device);
  MO_CHECK(device != "cuda" || gpu.is_cuda(), "--device cuda: no GPU is available");
  return device == "cpu" ? Device::cpu() : gpu;
}

Device device_option(const std::string& device) {
  return device_option(device, cuda_available() ? Device::cuda(0) : Device::cpu());
}

}  // namespace mo::tools
