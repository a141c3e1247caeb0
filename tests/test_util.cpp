// test_util.cpp: see test_util.h.
#include "tests/test_util.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace mo::test {

Tensor randn(const Shape& shape, uint64_t seed, DType dt, double std, double mean) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(mean, std);
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = nd(rng);
  return Tensor::from_vector(v, shape).to(dt);
}

Tensor rand_uniform(const Shape& shape, uint64_t seed, double lo, double hi, DType dt) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> ud(lo, hi);
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = ud(rng);
  return Tensor::from_vector(v, shape).to(dt);
}

double rel_error(const Tensor& a, const Tensor& b, double floor) {
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double mx = floor, err = 0;
  for (size_t i = 0; i < vb.size(); ++i) mx = std::max(mx, std::abs(vb[i]));
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    err = std::max(err, d);
  }
  return err / mx;
}

::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  if (!a.defined() || !b.defined()) {
    if (a.defined() == b.defined()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": one side undefined (" << (a.defined() ? a.str() : "undefined")
                                         << " vs " << (b.defined() ? b.str() : "undefined") << ")";
  }
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << what << ": shapes differ " << a.str() << " vs " << b.str();
  double e = rel_error(a, b);
  if (e <= tol) return ::testing::AssertionSuccess();
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  size_t worst = 0;
  double diff = -1, scale = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d) || d > diff) {
      diff = std::isnan(d) ? INFINITY : d;
      worst = i;
      if (std::isnan(d)) break;
    }
    scale = std::max(scale, std::abs(vb[i]));
  }
  return ::testing::AssertionFailure() << what << ": relative error " << e << " > " << tol << " (" << a.str() << " vs "
                                       << b.str() << "; worst at " << worst << ": " << va[worst] << " vs "
                                       << vb[worst] << ", max |ref| " << scale << ")";
}

::testing::AssertionResult bit_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  if (!a.defined() && !b.defined()) return ::testing::AssertionSuccess();
  if (a.defined() != b.defined() || a.shape() != b.shape())
    return ::testing::AssertionFailure() << what << ": " << (a.defined() ? a.str() : "undefined") << " vs "
                                         << (b.defined() ? b.str() : "undefined");
  auto differ = [&](auto zero) -> ::testing::AssertionResult {
    using T = decltype(zero);
    auto va = a.to_vector<T>(), vb = b.to_vector<T>();
    for (size_t i = 0; i < va.size(); ++i)
      if (std::memcmp(&va[i], &vb[i], sizeof(T)) != 0)
        return ::testing::AssertionFailure() << what << ": differs at " << i << ": " << va[i] << " vs " << vb[i];
    return ::testing::AssertionSuccess();
  };
  if (a.dtype() == DType::f64 || b.dtype() == DType::f64) return differ(0.0);
  return differ(0.0f);
}

::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     std::vector<Tensor> inputs, double eps, double tol, int max_checks) {
  for (auto& t : inputs)
    if (t.defined() && t.requires_grad() && t.dtype() != DType::f64)
      return ::testing::AssertionFailure() << "gradcheck needs float64 inputs, got " << t.str();
  Tensor y = f(inputs);
  Tensor r = randn(y.shape(), 1234, DType::f64);
  auto dot = [&](const Tensor& out) {
    auto a = out.to_vector<double>(), b = r.to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
  };
  for (auto& t : inputs)
    if (t.defined() && t.requires_grad()) t.set_grad(Tensor());
  y.backward(r);
  std::mt19937 rng(7);
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    if (!g.defined()) return ::testing::AssertionFailure() << "input " << k << " got no gradient";
    auto gv = g.to_vector<double>();
    int64_t n = x.numel();
    std::vector<int64_t> idx;
    if (n <= max_checks) {
      for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    } else {
      std::uniform_int_distribution<int64_t> ud(0, n - 1);
      for (int i = 0; i < max_checks; ++i) idx.push_back(ud(rng));
    }
    double* p = x.data<double>();
    for (int64_t i : idx) {
      double orig = p[i];
      double fp, fm;
      {
        NoGradGuard ng;
        p[i] = orig + eps;
        fp = dot(f(inputs));
        p[i] = orig - eps;
        fm = dot(f(inputs));
        p[i] = orig;
      }
      double num = (fp - fm) / (2 * eps);
      double err = std::abs(num - gv[i]) / std::max(1.0, std::abs(num));
      if (err > tol)
        return ::testing::AssertionFailure() << "input " << k << " element " << i << ": analytic " << gv[i]
                                             << " numeric " << num << " (err " << err << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// .npy

Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MO_CHECK(f.good(), "load_npy: cannot open {}", path);
  char magic[6];
  f.read(magic, 6);
  MO_CHECK(f.good() && std::string(magic + 1, 5) == "NUMPY", "load_npy: {} is not a .npy file", path);
  uint8_t ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, ' ');
  f.read(header.data(), hlen);
  auto field = [&](const std::string& key) {
    auto p = header.find("'" + key + "'");
    MO_CHECK(p != std::string::npos, "load_npy: {} header lacks {}", path, key);
    return header.substr(header.find(':', p) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  MO_CHECK(field("fortran_order").find("False") != std::string::npos, "load_npy: {} is Fortran-ordered", path);
  std::string sh = field("shape");
  sh = sh.substr(sh.find('(') + 1, sh.find(')') - sh.find('(') - 1);
  Shape shape;
  size_t pos = 0;
  while (pos < sh.size()) {
    size_t c = sh.find(',', pos);
    std::string tok = sh.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    if (tok.find_first_of("0123456789") != std::string::npos) shape.push_back(std::stoll(tok));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  DType dt;
  if (descr == "<f4") dt = DType::f32;
  else if (descr == "<f8") dt = DType::f64;
  else if (descr == "<i8") dt = DType::i64;
  else if (descr == "|u1") dt = DType::u8;
  else MO_FAIL("load_npy: {} has unsupported dtype {}", path, descr);
  Tensor t = Tensor::empty(shape, dt);
  f.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  MO_CHECK(f.gcount() == static_cast<std::streamsize>(t.nbytes()), "load_npy: {} is truncated", path);
  return t;
}

void save_npy(const std::string& path, const Tensor& t_in) {
  Tensor t = t_in.cpu().contiguous();
  const char* descr = t.dtype() == DType::f32 ? "<f4" : t.dtype() == DType::f64 ? "<f8" : t.dtype() == DType::i64 ? "<i8" : "|u1";
  MO_CHECK(t.dtype() != DType::bf16, "save_npy: bf16 is not a numpy dtype");
  std::string shape;
  for (auto d : t.shape()) shape += std::to_string(d) + ",";
  if (t.dim() > 1) shape.pop_back();
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(header.data(), header.size());
  f.write(static_cast<const char*>(t.raw_data()), t.nbytes());
  MO_CHECK(f.good(), "save_npy: cannot write {}", path);
}

int run_python(const std::string& script, const std::string& args) {
  std::string cmd = std::string(MO_PYTHON) + " " + script + " " + args;
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

bool python_has_torch() {
  static int ok = -1;
  if (ok < 0) ok = std::system((std::string(MO_PYTHON) + " -c 'import torch' 2>/dev/null").c_str()) == 0;
  return ok == 1;
}

RunResult run_command(const std::string& cmd) {
  RunResult r;
  std::FILE* p = ::popen((cmd + " 2>&1 </dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mo::Error& e) {
    return e.what();
  }
  return "";
}

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / name).string();
}

std::string temp_dir(const std::string& tag) {
  auto p = std::filesystem::temp_directory_path() / fmt::format("mo_test_{}_{}", tag, getpid());
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace mo::test

#ifndef MO_MPI_TEST
// ctest runs the cases of one executable as separate processes in parallel (-j), so every test
// process gets its own TMPDIR: fixed scratch names cannot collide between cases. (MPI tests keep the
// shared TMPDIR: their ranks must see the same files.)
namespace {
struct PrivateTmpdir {
  std::filesystem::path dir;
  PrivateTmpdir() {
    dir = std::filesystem::temp_directory_path() / fmt::format("mo_ctest_{}", getpid());
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!ec) setenv("TMPDIR", dir.c_str(), 1);
  }
  ~PrivateTmpdir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
} g_private_tmpdir;
}  // namespace
#endif
