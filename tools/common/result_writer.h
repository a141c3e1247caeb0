// result_writer.h: the machine-readable output of mo_predict and mo_validate: JSON and CSV quoting, and
// an output file written to a temporary beside it and renamed into place when complete, so that a
// reader (a script polling for the file) never sees half of it and a failed run leaves no stale file.
#pragma once
#include <cstdio>
#include <string>

#include "nn/io/json_lite.h"

namespace mo::tools {

enum class ResultFormat { json, csv };
// By the extension of `path` (.json or .csv, any case); anything else is an error naming `option`.
ResultFormat result_format_of(const std::string& path, const std::string& option);

using nn::io::json_quote;                       // "a\"b" with JSON escapes (the one JSON string writer)
std::string json_number(double v);             // shortest exact form; NaN and Inf (not JSON) as null
std::string json_number(float v);              // the same, shortest for a float (0.1f: "0.1")
std::string csv_field(const std::string& s);   // quoted (RFC 4180) when it holds , " or a line break

class ResultFile {
 public:
  explicit ResultFile(std::string path);  // opens path.tmp<pid>; throws naming the path
  ~ResultFile();                          // removes the temporary unless commit() ran
  ResultFile(const ResultFile&) = delete;
  ResultFile& operator=(const ResultFile&) = delete;
  void write(const std::string& text);
  void commit();  // flush, close, rename into place; throws naming the path on a write error
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

}  // namespace mo::tools
