// onnx_test_util.h: runs scripts/io/onnx_run.py (onnxruntime) for the ONNX export tests, with the python3
// first on the PATH and onnxruntime from <build>/pyort (scripts/install_deps.sh installs it there with
// pip --target, so it and its numpy 2 stay out of every other Python's way).
#pragma once
#include <string>

#include "tests/test_util.h"

namespace mo::onnx_test {

inline std::string pyort_env() { return std::string("PYTHONPATH=") + MO_BINARY_DIR + "/pyort "; }

// python3 scripts/io/onnx_run.py MODEL IN.npy OUT.npy [--info INFO.json]; rc 3: onnxruntime missing.
inline mo::test::RunResult onnx_run(const std::string& model, const std::string& in, const std::string& out,
                                    const std::string& info = "") {
  return mo::test::run_command(pyort_env() + "python3 " + MO_SOURCE_DIR + "/scripts/io/onnx_run.py " + model + " " +
                               in + " " + out + (info.empty() ? "" : " --info " + info));
}

inline bool have_onnxruntime() {
  static int ok = -1;
  if (ok < 0) ok = mo::test::run_command(pyort_env() + "python3 -c 'import onnxruntime'").rc == 0;
  return ok == 1;
}

#define MO_SKIP_WITHOUT_ONNXRUNTIME()                                                                       \
  if (!mo::onnx_test::have_onnxruntime())                                                                  \
  GTEST_SKIP() << "onnxruntime cannot be imported by python3 with PYTHONPATH=" MO_BINARY_DIR "/pyort "      \
                  "(python3 -m pip install --target " MO_BINARY_DIR "/pyort onnxruntime)"

}  // namespace mo::onnx_test
