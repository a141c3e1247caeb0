// class_names.h: human-readable class names for mo_predict. The 1000 ImageNet-1k names ship as
// imagenet_classes.txt (torchvision's _IMAGENET_CATEGORIES, one per line, line i = class i), installed
// under <prefix>/share/mo/ and found relative to the executable.
#pragma once
#include <string>
#include <vector>

namespace mo::tools {

// One name per non-empty line; throws naming the file if it cannot be read.
std::vector<std::string> read_class_names(const std::string& path);

// Where imagenet_classes.txt is: $MO_DATA_DIR, <exe dir>/../share/mo, then the source tree above the
// executable (a build directory inside the checkout). Throws listing the places tried.
std::string find_imagenet_classes_file();

}  // namespace mo::tools
