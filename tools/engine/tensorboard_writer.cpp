// tensorboard_writer.cpp: TFRecord framing with masked CRC32C around tb_event.proto Events.
#include "tools/engine/tensorboard_writer.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "autograd/check.h"
#include "tools/engine/crc32c.h"
#include "tools/engine/tb_event.pb.h"

namespace mo::tools {
namespace {

double now_seconds() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MO_CHECK(!ec, "TensorBoard: cannot create directory '{}': {}", dir, ec.message());
  char host[256] = "localhost";
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "localhost");
  double t = now_seconds();
  path_ = fmt::format("{}/events.out.tfevents.{}.{}.{}", dir, static_cast<int64_t>(t), host, getpid());
  f_ = std::fopen(path_.c_str(), "wb");
  MO_CHECK(f_ != nullptr, "TensorBoard: cannot create '{}': {}", path_, std::strerror(errno));
  tb::Event ev;
  ev.set_wall_time(t);
  ev.set_file_version("brain.Event:2");
  write_record(ev.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::write_record(const std::string& data) {
  uint64_t len = data.size();
  uint32_t len_crc = masked_crc32c(&len, sizeof(len));
  uint32_t data_crc = masked_crc32c(data.data(), data.size());
  bool ok = std::fwrite(&len, sizeof(len), 1, f_) == 1 && std::fwrite(&len_crc, sizeof(len_crc), 1, f_) == 1 &&
            (data.empty() || std::fwrite(data.data(), data.size(), 1, f_) == 1) &&
            std::fwrite(&data_crc, sizeof(data_crc), 1, f_) == 1;
  MO_CHECK(ok, "TensorBoard: write to '{}' failed: {}", path_, std::strerror(errno));
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  tb::Event ev;
  ev.set_wall_time(now_seconds());
  ev.set_step(step);
  tb::SummaryValue* v = ev.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(ev.SerializeAsString());
}

void TensorBoardWriter::flush() {
  MO_CHECK(std::fflush(f_) == 0, "TensorBoard: flush of '{}' failed: {}", path_, std::strerror(errno));
}

}  // namespace mo::tools
