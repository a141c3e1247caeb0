// result_writer.cpp: JSON/CSV quoting and the atomically renamed output file (see result_writer.h).
#include "tools/common/result_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "autograd/check.h"

namespace mo::tools {

ResultFormat result_format_of(const std::string& path, const std::string& option) {
  const size_t dot = path.rfind('.');
  std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".json") return ResultFormat::json;
  if (ext == ".csv") return ResultFormat::csv;
  MO_FAIL("{} '{}': the file name must end in .json or .csv (that picks the format)", option, path);
}

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }
std::string json_number(float v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

ResultFile::ResultFile(std::string path) : path_(std::move(path)) {
  tmp_ = fmt::format("{}.tmp{}", path_, ::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  MO_CHECK(f_ != nullptr, "cannot write '{}': {}", path_, std::strerror(errno));
}

ResultFile::~ResultFile() {
  if (!f_) return;
  std::fclose(f_);
  std::remove(tmp_.c_str());
}

void ResultFile::write(const std::string& text) {
  MO_CHECK(f_ != nullptr, "'{}' is already closed", path_);
  MO_CHECK(std::fwrite(text.data(), 1, text.size(), f_) == text.size(), "cannot write '{}': {}", path_,
           std::strerror(errno));
}

void ResultFile::commit() {
  MO_CHECK(f_ != nullptr, "'{}' is already closed", path_);
  const bool ok = std::fflush(f_) == 0 && !std::ferror(f_);
  const int e = errno;
  std::fclose(f_);
  f_ = nullptr;
  if (!ok) std::remove(tmp_.c_str());
  MO_CHECK(ok, "cannot write '{}': {}", path_, std::strerror(e));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int re = errno;
    std::remove(tmp_.c_str());
    MO_FAIL("cannot write '{}': {}", path_, std::strerror(re));
  }
}

}  // namespace mo::tools
