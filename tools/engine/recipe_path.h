// recipe_path.h: where mo_train finds its recipe. `mo_train femto` (a bare name) finds femto.yaml among
// the installed recipes, <exe dir>/../share/mo/recipes; in a build tree that folder links to the
// source tree's recipes/ (CMakeLists.txt), so the same rule serves a build-tree run.
#pragma once
#include <string>

namespace mo::tools {

// The recipe file to read for `recipe`: the path as given when it exists; otherwise, for a name
// without '/', <name> or <name>.yaml in the recipe folder. Throws naming what was tried and listing
// the recipes available.
std::string find_recipe(const std::string& recipe);

// <exe dir>/../share/mo/recipes.
std::string recipe_dir();

// The directory of the running executable (/proc/self/exe), which the installed files are found from.
std::string executable_dir();

}  // namespace mo::tools
