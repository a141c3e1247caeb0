// checkpoint.cpp: atomic writing and verified reading of mo checkpoint files; the run-directory manager.
#include "tools/engine/checkpoint.h"

#include "nn/io/file_read.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>

#include "tools/engine/checkpoint.pb.h"
#include "tools/engine/crc32c.h"

namespace fs = std::filesystem;

namespace mo::tools {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'C', 'K', 'P', 'T', '0', '1'};
constexpr int kFormatVersion = 1;
constexpr uint64_t kHeaderBytes = 8 + 8;  // magic + manifest size

DType dtype_from_name(const std::string& n, const std::string& file) {
  for (DType t : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::u8})
    if (n == dtype_name(t)) return t;
  MO_FAIL("checkpoint '{}': unknown dtype '{}'", file, n);
}

// A POSIX file descriptor that writes everything or throws naming the path.
struct OutFile {
  int fd = -1;
  std::string path;
  explicit OutFile(const std::string& p) : path(p) {
    fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    MO_CHECK(fd >= 0, "cannot create '{}': {}", p, std::strerror(errno));
  }
  ~OutFile() {
    if (fd >= 0) ::close(fd);
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      MO_CHECK(w > 0, "write to '{}' failed: {}", path, std::strerror(errno));
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void sync_and_close() {
    MO_CHECK(::fsync(fd) == 0, "fsync of '{}' failed: {}", path, std::strerror(errno));
    MO_CHECK(::close(fd) == 0, "close of '{}' failed: {}", path, std::strerror(errno));
    fd = -1;
  }
};

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MO_CHECK(fd >= 0, "cannot open directory '{}': {}", dir, std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  MO_CHECK(rc == 0, "fsync of directory '{}' failed: {}", dir, std::strerror(errno));
}

std::string parent_dir(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

void add_entries(google::protobuf::RepeatedPtrField<ckpt::TensorEntry>* out,
                 const std::vector<std::pair<std::string, Tensor>>& ts, std::vector<Tensor>& cpu, uint64_t& offset) {
  for (auto& [name, t] : ts) {
    Tensor c = t.detach().cpu().contiguous();
    ckpt::TensorEntry* e = out->Add();
    e->set_name(name);
    e->set_dtype(dtype_name(c.dtype()));
    for (int64_t d : c.shape()) e->add_shape(d);
    e->set_offset(offset);
    e->set_nbytes(c.nbytes());
    e->set_crc32c(crc32c(c.raw_data(), c.nbytes()));
    offset += c.nbytes();
    cpu.push_back(c);
  }
}

struct Reader {
  std::FILE* f = nullptr;
  std::string path;
  explicit Reader(const std::string& p) : path(p) {
    // Opening a named pipe would wait for a writer for ever, a device has no end: regular files only,
    // checked on the opened descriptor (nn/io/file_read.h).
    nn::io::RegularFile rf(p, "checkpoint '" + p + "'");
    f = rf.release_to_stdio();
  }
  ~Reader() {
    if (f) std::fclose(f);
  }
  void read(void* dst, size_t n, const char* what) {
    MO_CHECK(n == 0 || std::fread(dst, n, 1, f) == 1, "checkpoint '{}' is truncated (reading {})", path, what);
  }
};

ckpt::Manifest read_manifest(Reader& r, uint64_t& payload_start) {
  char magic[8];
  r.read(magic, 8, "the header");
  MO_CHECK(std::memcmp(magic, kMagic, 8) == 0, "'{}' is not a mo checkpoint (bad magic)", r.path);
  uint64_t size = 0;
  r.read(&size, 8, "the header");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(r.path, ec);
  MO_CHECK(!ec, "cannot read checkpoint '{}': {}", r.path, ec.message());
  MO_CHECK(size < (1ull << 31) && size + kHeaderBytes + 4 <= file_size,
           "checkpoint '{}' is truncated or corrupt: a manifest of {} bytes does not fit in its {} bytes", r.path,
           size, file_size);
  std::string buf(size, '\0');
  r.read(buf.data(), size, "the manifest");
  uint32_t crc = 0;
  r.read(&crc, 4, "the manifest checksum");
  MO_CHECK(crc == crc32c(buf.data(), buf.size()), "checkpoint '{}' is corrupt (manifest checksum mismatch)", r.path);
  ckpt::Manifest m;
  MO_CHECK(m.ParseFromString(buf), "checkpoint '{}' is corrupt (manifest does not parse)", r.path);
  MO_CHECK(m.format_version() == kFormatVersion, "checkpoint '{}' has format version {}, this build reads {}", r.path,
           m.format_version(), kFormatVersion);
  payload_start = kHeaderBytes + size + 4;
  MO_CHECK(m.payload_bytes() == file_size - payload_start,
           "checkpoint '{}' is truncated or corrupt: {} bytes, the manifest describes {} bytes of payload after the "
           "{}-byte header", r.path, file_size, m.payload_bytes(), payload_start);
  // Every tensor entry lies inside the payload and all of them together fit in it (entries over the same
  // bytes would let a small manifest allocate without bound), checked before anything is allocated.
  uint64_t total = 0;
  for (const auto* entries : {&m.model(), &m.optimizer(), &m.ema()}) {
    for (const auto& e : *entries) {
      uint64_t end = 0;
      const bool inside = !__builtin_add_overflow(e.offset(), e.nbytes(), &end) && end <= m.payload_bytes();
      const bool fits = !__builtin_add_overflow(total, e.nbytes(), &total) && total <= m.payload_bytes();
      MO_CHECK(inside && fits,
               "checkpoint '{}' is corrupt: tensor '{}' {} {} claims {} bytes at offset {} of a {}-byte payload{}",
               r.path, e.name(), e.dtype(), shape_str(Shape(e.shape().begin(), e.shape().end())), e.nbytes(),
               e.offset(), m.payload_bytes(), inside ? " that the tensors before it already fill (entries overlap)" : "");
    }
  }
  return m;
}

// Counters beyond this are corrupt (2^40 steps is ~35,000 years at a step per millisecond); the bound
// also keeps products such as step x accumulation far from overflow.
constexpr int64_t kMaxCounter = int64_t(1) << 40;

void check_counter(const std::string& file, const char* field, int64_t v, int64_t lo) {
  MO_CHECK(v >= lo && v <= kMaxCounter, "checkpoint '{}' is corrupt: field '{}' is {} (must be from {} to 2^40)", file,
           field, v, lo);
}

void check_manifest_ranges(const ckpt::Manifest& m, const std::string& file) {
  check_counter(file, "epoch", m.epoch(), 0);
  check_counter(file, "step", m.step(), 0);
  check_counter(file, "step_in_epoch", m.step_in_epoch(), 0);
  check_counter(file, "optimizer_step", m.optimizer_step(), 0);
  check_counter(file, "sampler.epoch", m.sampler().epoch(), 0);
  check_counter(file, "sampler.batches_done", m.sampler().batches_done(), 0);
  check_counter(file, "sampler.world_size", m.sampler().world_size(), 1);
  check_counter(file, "best_epoch", m.best_epoch(), -1);
  check_counter(file, "epoch_loss_count", m.epoch_loss_count(), 0);
  check_counter(file, "epoch_grad_norm_count", m.epoch_grad_norm_count(), 0);
  MO_CHECK(std::isfinite(m.epoch_loss_sum()) && std::isfinite(m.epoch_grad_norm_sum()) && m.epoch_grad_norm_sum() >= 0,
           "checkpoint '{}' is corrupt: fields 'epoch_loss_sum' ({}) and 'epoch_grad_norm_sum' ({}) must be finite "
           "(and the norm sum >= 0)", file, m.epoch_loss_sum(), m.epoch_grad_norm_sum());
  // Every epoch has at least one step, so neither count can exceed the steps done.
  MO_CHECK(m.step_in_epoch() <= m.step() && m.epoch() <= m.step(), "checkpoint '{}' is corrupt: fields 'epoch' ({}) "
           "and 'step_in_epoch' ({}) cannot exceed 'step' ({})", file, m.epoch(), m.step_in_epoch(), m.step());
  auto pct = [](double v) { return v >= 0 && v <= 100; };  // NaN fails too
  MO_CHECK(!m.has_metric() || pct(m.metric()), "checkpoint '{}' is corrupt: field 'metric' is {} (a top-1 percentage "
           "from 0 to 100)", file, m.metric());
  MO_CHECK(m.best_metric() == -1.0 || pct(m.best_metric()), "checkpoint '{}' is corrupt: field 'best_metric' is {} "
           "(-1 or a top-1 percentage from 0 to 100)", file, m.best_metric());
}

CheckpointState state_from_manifest(const ckpt::Manifest& m, const std::string& file) {
  check_manifest_ranges(m, file);
  CheckpointState s;
  s.config_yaml = m.config_yaml();
  s.model_name = m.model_name();
  s.epoch = m.epoch();
  s.step = m.step();
  s.step_in_epoch = m.step_in_epoch();
  s.optimizer_step = m.optimizer_step();
  for (auto& r : m.rng()) s.rng.push_back({r.name(), r.seed(), r.stream(), r.counter()});
  s.sampler_epoch = m.sampler().epoch();
  s.sampler_batches_done = m.sampler().batches_done();
  s.sampler_seed = m.sampler().seed();
  s.world_size = m.sampler().world_size();
  if (m.has_metric()) s.metric = m.metric();
  s.best_metric = m.best_metric();
  s.best_epoch = m.best_epoch();
  s.class_names.assign(m.class_names().begin(), m.class_names().end());
  s.epoch_loss_sum = m.epoch_loss_sum();
  s.epoch_loss_count = m.epoch_loss_count();
  s.epoch_grad_norm_sum = m.epoch_grad_norm_sum();
  s.epoch_grad_norm_count = m.epoch_grad_norm_count();
  return s;
}

std::vector<std::pair<std::string, Tensor>> read_tensors(
    Reader& r, uint64_t payload_start, uint64_t payload_bytes,
    const google::protobuf::RepeatedPtrField<ckpt::TensorEntry>& entries) {
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<std::string> names;
  for (const auto& e : entries) {
    MO_CHECK(names.insert(e.name()).second, "checkpoint '{}' is corrupt: tensor '{}' appears twice", r.path, e.name());
    DType dt = dtype_from_name(e.dtype(), r.path);
    Shape shape(e.shape().begin(), e.shape().end());
    // numel x element size with overflow checks, and the byte range inside the payload, before allocating.
    uint64_t bytes = dtype_size(dt);
    bool fits = e.shape_size() <= 8;
    for (int64_t d : shape) fits = fits && d >= 0 && !__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    uint64_t end = 0;
    fits = fits && bytes == e.nbytes() && !__builtin_add_overflow(e.offset(), e.nbytes(), &end) && end <= payload_bytes;
    MO_CHECK(fits, "checkpoint '{}' is corrupt: tensor '{}' {} {} claims {} bytes at offset {} of a {}-byte payload",
             r.path, e.name(), e.dtype(), shape_str(shape), e.nbytes(), e.offset(), payload_bytes);
    Tensor t = Tensor::empty(shape, dt);
    MO_CHECK(std::fseek(r.f, static_cast<long>(payload_start + e.offset()), SEEK_SET) == 0,
             "checkpoint '{}': seek failed", r.path);
    r.read(t.raw_data(), e.nbytes(), e.name().c_str());
    MO_CHECK(crc32c(t.raw_data(), e.nbytes()) == e.crc32c(), "checkpoint '{}' is corrupt: checksum mismatch in '{}'",
             r.path, e.name());
    out.emplace_back(e.name(), t);
  }
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointState& s) {
  ckpt::Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_config_yaml(s.config_yaml);
  m.set_model_name(s.model_name);
  m.set_epoch(s.epoch);
  m.set_step(s.step);
  m.set_step_in_epoch(s.step_in_epoch);
  m.set_optimizer_step(s.optimizer_step);
  std::vector<Tensor> cpu;
  uint64_t offset = 0;
  add_entries(m.mutable_model(), s.model, cpu, offset);
  add_entries(m.mutable_optimizer(), s.optimizer, cpu, offset);
  add_entries(m.mutable_ema(), s.ema, cpu, offset);
  m.set_payload_bytes(offset);
  m.set_epoch_loss_sum(s.epoch_loss_sum);
  m.set_epoch_loss_count(s.epoch_loss_count);
  m.set_epoch_grad_norm_sum(s.epoch_grad_norm_sum);
  m.set_epoch_grad_norm_count(s.epoch_grad_norm_count);
  for (auto& r : s.rng) {
    ckpt::RngState* o = m.add_rng();
    o->set_name(r.name);
    o->set_seed(r.seed);
    o->set_stream(r.stream);
    o->set_counter(r.counter);
  }
  m.mutable_sampler()->set_epoch(s.sampler_epoch);
  m.mutable_sampler()->set_batches_done(s.sampler_batches_done);
  m.mutable_sampler()->set_seed(s.sampler_seed);
  m.mutable_sampler()->set_world_size(s.world_size);
  m.set_has_metric(s.metric.has_value());
  m.set_metric(s.metric.value_or(0.0));
  m.set_best_metric(s.best_metric);
  m.set_best_epoch(s.best_epoch);
  for (auto& n : s.class_names) m.add_class_names(n);
  m.set_wall_time(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());

  std::string manifest = m.SerializeAsString();
  uint64_t size = manifest.size();
  uint32_t crc = crc32c(manifest.data(), manifest.size());
  const std::string tmp = temp_file_name(path);
  try {
    OutFile out(tmp);
    out.write(kMagic, 8);
    out.write(&size, 8);
    out.write(manifest.data(), manifest.size());
    out.write(&crc, 4);
    for (const Tensor& t : cpu) out.write(t.raw_data(), t.nbytes());
    out.sync_and_close();
    MO_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, path,
             std::strerror(errno));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  fsync_dir(parent_dir(path));
}

CheckpointState load_checkpoint(const std::string& path, bool with_optimizer, bool with_ema) {
  Reader r(path);
  uint64_t start = 0;
  ckpt::Manifest m = read_manifest(r, start);
  CheckpointState s = state_from_manifest(m, path);
  s.model = read_tensors(r, start, m.payload_bytes(), m.model());
  if (with_optimizer) s.optimizer = read_tensors(r, start, m.payload_bytes(), m.optimizer());
  if (with_ema) s.ema = read_tensors(r, start, m.payload_bytes(), m.ema());
  return s;
}

const std::vector<std::pair<std::string, Tensor>>& checkpoint_entry(const CheckpointState& s, const std::string& entry,
                                                                    const std::string& path) {
  if (entry.empty() || entry == "state_dict" || entry == "model") return s.model;
  if (entry == "state_dict_ema" || entry == "ema") {
    MO_CHECK(!s.ema.empty(), "{}: no entry 'state_dict_ema' (the run trained without model_ema); the entries are: "
             "state_dict", path);
    return s.ema;
  }
  MO_FAIL("{}: no entry '{}' in a mo checkpoint; the entries are: state_dict{}", path, entry,
          s.ema.empty() ? "" : ", state_dict_ema");
}

CheckpointState read_checkpoint_header(const std::string& path) {
  Reader r(path);
  uint64_t start = 0;
  return state_from_manifest(read_manifest(r, start), path);
}

bool is_mo_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;  // never open a pipe or a device to look
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[8] = {};
  bool ok = std::fread(magic, 8, 1, f) == 1 && std::memcmp(magic, kMagic, 8) == 0;
  std::fclose(f);
  return ok;
}

// --- temporaries of interrupted writes ---------------------------------------------------------------

namespace {

// This host's name as it appears in temporaries: letters, digits, '-' and '_' (others become '_', so a
// dotted name cannot be confused with the pid that follows it).
const std::string& host_tag() {
  static const std::string tag = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return std::string("localhost");
    std::string t = buf;
    for (char& c : t)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') c = '_';
    return t;
  }();
  return tag;
}

bool process_gone(const std::string& pid_text) {
  if (pid_text.size() > 9) return false;  // not a pid of this system: leave it
  const long pid = std::stol(pid_text);
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::string temp_file_name(const std::string& path) { return fmt::format("{}.tmp.{}.{}", path, host_tag(), getpid()); }

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  static const std::string ours = R"((ckpt-e\d+-s\d+\.mo|best\.mo|last\.mo|summary\.csv|config\.yaml|curves\.svg))";
  static const std::regex current(ours + R"(\.tmp\.([A-Za-z0-9_-]+)\.(\d+))"), older(ours + R"(\.tmp\.(\d+))"),
      fixed(ours + R"(\.tmp)");
  std::vector<std::string> removed;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::smatch mt;
    bool stale = false;
    if (std::regex_match(name, mt, current)) stale = mt[2].str() == host_tag() && process_gone(mt[3].str());
    else if (std::regex_match(name, mt, older)) stale = process_gone(mt[2].str());
    else stale = std::regex_match(name, fixed);  // the older fixed names; a run owns its folder
    std::error_code e2;
    if (!stale || !(it->is_symlink(e2) || it->is_regular_file(e2))) continue;  // last.mo's temporary: a link
    const uintmax_t bytes = it->is_symlink(e2) ? 0 : it->file_size(e2);
    if (fs::remove(it->path(), e2)) removed.push_back(fmt::format("{} ({} bytes)", it->path().string(), bytes));
  }
  return removed;
}

// --- CheckpointManager -------------------------------------------------------------------------------

CheckpointManager::CheckpointManager(std::string dir, int64_t keep_last, bool keep_best)
    : dir_(std::move(dir)), keep_last_(keep_last), keep_best_(keep_best) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  MO_CHECK(!ec, "cannot create checkpoint directory '{}': {}", dir_, ec.message());
}

std::vector<std::string> CheckpointManager::list() const {
  static const std::regex re(R"(ckpt-e(\d+)-s(\d+)\.mo)");
  std::vector<std::tuple<int64_t, int64_t, std::string>> found;
  for (auto& de : fs::directory_iterator(dir_)) {
    std::smatch mt;
    std::string name = de.path().filename().string();
    if (std::regex_match(name, mt, re))
      found.emplace_back(std::stoll(mt[2].str()), std::stoll(mt[1].str()), de.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::get<2>(f));
  return out;
}

void CheckpointManager::update_last_link(const std::string& path) const {
  // A relative link (the run folder can move) made beside last.mo and renamed over it: atomic.
  const std::string tmp = temp_file_name(last_path());
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(fs::path(path).filename(), tmp, ec);
  if (ec) fs::copy_file(path, tmp, ec);  // file systems without symbolic links
  MO_CHECK(!ec, "cannot write '{}': {}", tmp, ec.message());
  MO_CHECK(std::rename(tmp.c_str(), last_path().c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, last_path(),
           std::strerror(errno));
  fsync_dir(dir_);
}

std::string CheckpointManager::save(const CheckpointState& s, bool is_best) {
  const std::string path = fmt::format("{}/ckpt-e{:04d}-s{:08d}.mo", dir_, s.epoch, s.step);
  save_checkpoint(path, s);
  if (is_best && keep_best_) {
    const std::string tmp = temp_file_name(best_path());
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::create_hard_link(path, tmp, ec);
    if (ec) fs::copy_file(path, tmp, ec);  // file systems without hard links
    MO_CHECK(!ec, "cannot write '{}': {}", tmp, ec.message());
    MO_CHECK(std::rename(tmp.c_str(), best_path().c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, best_path(),
             std::strerror(errno));
    fsync_dir(dir_);
  }
  update_last_link(path);
  std::vector<std::string> all = list();
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);  // best.mo is a separate link, so the best survives pruning
  }
  return path;
}

std::optional<CheckpointState> CheckpointManager::load_latest(std::vector<std::string>& warnings,
                                                              std::string* path) const {
  std::vector<std::string> all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      CheckpointState s = load_checkpoint(*it);
      if (path) *path = *it;
      return s;
    } catch (const Error& e) {
      warnings.push_back(fmt::format("{}; trying the previous checkpoint", e.what()));
    }
  }
  return std::nullopt;
}

}  // namespace mo::tools
