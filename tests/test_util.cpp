// test_util.cpp: shared helpers for the test suites (see test_util.h).
#include "tests/test_util.h"
