// test_util.h: placeholder, filled below.
#pragma once
