// file_read.h: reading the files a user names (checkpoints, config.json, class-name lists) without ever
// blocking or reading without bound. A named pipe, socket, device or folder is refused by looking at
// the opened descriptor (opened non-blocking, so a FIFO with no writer cannot hang the open; fstat on
// the descriptor, so the file checked is the file read), and a file over `max_bytes` is refused before
// anything is allocated. Errors name `what` (usually the path).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mo::nn::io {

constexpr uint64_t kMaxCheckpointBytes = uint64_t{64} << 30;  // 64 GiB: larger than any MambaOut checkpoint
constexpr uint64_t kMaxTextBytes = uint64_t{16} << 20;        // config.json, class names

// An open descriptor of a regular file (blocking mode restored), closed by the destructor.
class RegularFile {
 public:
  RegularFile(const std::string& path, const std::string& what);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  // Up to n bytes from the current position; fewer only at the end of the file.
  size_t read_some(void* dst, size_t n);
  // Moves the descriptor into a stdio stream (the caller fcloses it).
  std::FILE* release_to_stdio();

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string what_;
};

std::vector<uint8_t> read_regular_file(const std::string& path, const std::string& what, uint64_t max_bytes);
std::string read_text_file(const std::string& path, const std::string& what, uint64_t max_bytes = kMaxTextBytes);

}  // namespace mo::nn::io
