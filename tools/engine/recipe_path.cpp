// recipe_path.cpp: resolving mo_train's recipe argument (a path or a bare recipe name).
#include "tools/engine/recipe_path.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "autograd/check.h"

namespace fs = std::filesystem;

namespace mo::tools {

std::string executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::string recipe_dir() { return (fs::path(executable_dir()) / ".." / "share" / "mo" / "recipes").lexically_normal(); }

namespace {

std::string available(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    if (it->path().extension() == ".yaml") names.push_back(it->path().stem().string());
  if (names.empty()) return fmt::format("no recipes in {}", dir.string());
  std::sort(names.begin(), names.end());
  return fmt::format("available in {}: {}", dir.string(), fmt::join(names, ", "));
}

}  // namespace

std::string find_recipe(const std::string& recipe) {
  MO_CHECK(!recipe.empty(), "empty recipe name");
  std::error_code ec;
  if (fs::exists(fs::symlink_status(recipe, ec))) return recipe;
  const fs::path dir = recipe_dir();
  MO_CHECK(recipe.find('/') == std::string::npos, "cannot open config file '{}': no such file ({})", recipe,
           available(dir));
  std::vector<fs::path> tried = {dir / recipe};
  if (fs::path(recipe).extension() != ".yaml" && fs::path(recipe).extension() != ".yml")
    tried.push_back(dir / (recipe + ".yaml"));
  for (const fs::path& p : tried)
    if (fs::is_regular_file(p, ec)) return p.string();
  MO_FAIL("recipe '{}' not found: not a file here, nor {} ({})", recipe, tried.back().string(), available(dir));
}

}  // namespace mo::tools
