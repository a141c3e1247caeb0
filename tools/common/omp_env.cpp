// omp_env.cpp: re-exec with OMP_WAIT_POLICY=passive (see omp_env.h).
#include "tools/common/omp_env.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace mo::tools {

void ensure_passive_omp_wait(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  std::vector<std::string> args;
  if (argv != nullptr) {
    for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
  } else {  // called before main (a static initializer): the command line from /proc
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t b = 0, e; b < all.size(); b = e + 1) {
      e = all.find('\0', b);
      if (e == std::string::npos) e = all.size();
      args.push_back(all.substr(b, e - b));
    }
  }
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());
  av.push_back(nullptr);
  if (!args.empty()) execv("/proc/self/exe", av.data());
  // exec failed (no /proc?): carry on with the default policy.
  std::fprintf(stderr, "note: could not re-execute with OMP_WAIT_POLICY=passive; CPU runs may be slow\n");
}

}  // namespace mo::tools
