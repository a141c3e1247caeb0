// class_names.cpp: reading class-name files and finding the installed ImageNet list.
#include "tools/common/class_names.h"

#include <sstream>

#include "nn/io/file_read.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "autograd/check.h"
#include "tools/engine/recipe_path.h"

namespace fs = std::filesystem;

namespace mo::tools {

std::vector<std::string> read_class_names(const std::string& path) {
  std::istringstream in(nn::io::read_text_file(path, "class-name file '" + path + "'"));
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  MO_CHECK(!names.empty(), "'{}' holds no class names", path);
  return names;
}

std::string find_imagenet_classes_file() {
  const char* name = "imagenet_classes.txt";
  std::vector<fs::path> tried;
  if (const char* d = std::getenv("MO_DATA_DIR")) tried.push_back(fs::path(d) / name);
  fs::path exe = executable_dir();
  tried.push_back(exe / ".." / "share" / "mo" / name);
  for (fs::path p = exe; !p.empty() && tried.size() < 8; p = p.parent_path()) {
    tried.push_back(p / "tools" / "common" / name);
    if (p == p.parent_path()) break;
  }
  for (auto& p : tried)
    if (fs::is_regular_file(p)) return fs::weakly_canonical(p).string();
  std::string list;
  for (auto& p : tried) list += "\n  " + p.string();
  MO_FAIL("cannot find {} (set MO_DATA_DIR to its directory); tried:{}", name, list);
}

}  // namespace mo::tools
