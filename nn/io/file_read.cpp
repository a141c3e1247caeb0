// file_read.cpp: see file_read.h.
#include "nn/io/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "autograd/check.h"
#include "autograd/file_kind.h"

namespace mo::nn::io {

RegularFile::RegularFile(const std::string& path, const std::string& what) : what_(what) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  MO_CHECK(fd_ >= 0, "cannot open {}: {}", what, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    MO_FAIL("cannot read {}: {}", what, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    MO_FAIL("cannot read {}: {}, not a regular file", what, file_kind(st.st_mode));
  }
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  size_ = static_cast<uint64_t>(st.st_size);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

size_t RegularFile::read_some(void* dst, size_t n) {
  size_t got = 0;
  auto* p = static_cast<char*>(dst);
  while (got < n) {
    const ssize_t r = ::read(fd_, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    MO_CHECK(r >= 0, "cannot read {}: {}", what_, std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

std::FILE* RegularFile::release_to_stdio() {
  std::FILE* f = ::fdopen(fd_, "rb");
  MO_CHECK(f != nullptr, "cannot read {}: {}", what_, std::strerror(errno));
  fd_ = -1;
  return f;
}

std::vector<uint8_t> read_regular_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  RegularFile f(path, what);
  MO_CHECK(f.size() <= max_bytes, "cannot read {}: {} bytes, over the limit of {} bytes for this kind of file", what,
           f.size(), max_bytes);
  std::vector<uint8_t> data(static_cast<size_t>(f.size()));
  const size_t got = f.read_some(data.data(), data.size());
  MO_CHECK(got == data.size(), "cannot read {}: got {} of {} bytes (the file shrank while being read)", what, got,
           data.size());
  return data;
}

std::string read_text_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  std::vector<uint8_t> b = read_regular_file(path, what, max_bytes);
  return std::string(b.begin(), b.end());
}

}  // namespace mo::nn::io
