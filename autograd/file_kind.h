// file_kind.h: what a stat() mode is, in words ("a named pipe (FIFO)", "a directory", ...), for the
// messages of the file readers that refuse anything but a regular file (data/jpeg.cpp, data/image_folder.cpp,
// nn/io/file_read.cpp). Here because data/ and nn/ do not know each other and both stand on autograd.
#pragma once
#include <sys/stat.h>

namespace mo {

inline const char* file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

}  // namespace mo
