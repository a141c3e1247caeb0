// test_class_names.cpp: the shipped ImageNet class-name list (tools/common/class_names.h), found next to
// the program or in the source tree, and a missing class-name file refused.
#include <gtest/gtest.h>

#include <string>

#include "autograd/check.h"
#include "tools/common/class_names.h"

using namespace mo::tools;

TEST(ClassNames, ImageNetList) {
  auto names = read_class_names(std::string(MO_SOURCE_DIR) + "/tools/common/imagenet_classes.txt");
  ASSERT_EQ(names.size(), 1000u);
  EXPECT_EQ(names[0], "tench");
  EXPECT_EQ(names[207], "golden retriever");
  EXPECT_EQ(names[999], "toilet tissue");
  // Found relative to this test executable (a build directory inside the checkout) or the install tree.
  EXPECT_EQ(read_class_names(find_imagenet_classes_file()).size(), 1000u);
  EXPECT_THROW(read_class_names("/nonexistent/classes.txt"), mo::Error);
}
