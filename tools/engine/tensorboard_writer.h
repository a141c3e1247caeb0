// tensorboard_writer.h: writes TensorBoard event files (events.out.tfevents.<time>.<host>) holding scalar
// summaries. Each record is TFRecord-framed: uint64 length, masked CRC32C of the length, the serialized
// Event, masked CRC32C of the data (tests/engine/tensorboard_reader.h reads them back). Scalars are flushed to disk by flush() (the trainer calls it after
// each logging interval), so a killed run keeps what it logged.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace mo::tools {

class TensorBoardWriter {
 public:
  // Creates `dir` if needed and opens a new event file in it.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* f_ = nullptr;
};

}  // namespace mo::tools
