// tensorboard_writer.h: writes TensorBoard event files (events.out.tfevents.<time>.<host>) holding scalar
// summaries. Each record is TFRecord-framed: uint64 length, masked CRC32C of the length, the serialized
// Event, masked CRC32C of the data. Scalars are flushed to disk by flush() (the trainer calls it after
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

// Reads back every record of a TFRecord file, checking both CRCs; throws naming the file and offset.
std::vector<std::string> read_tfrecords(const std::string& path);

// The scalar values of an event file: (tag, step, value) in file order (for tests and tools).
struct ScalarEvent {
  std::string tag;
  int64_t step;
  float value;
};
std::vector<ScalarEvent> read_scalar_events(const std::string& path);

}  // namespace mo::tools
