// fashion_mnist.cpp: IDX reading (zlib) and the conversion to a JPEG folder (see fashion_mnist.h).
#include "data/fashion_mnist.h"

#include <zlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include "autograd/check.h"
#include "data/jpeg.h"
#include "data/resample.h"

namespace mo::data {
namespace fs = std::filesystem;

const char* const kFashionMnistClasses[10] = {"t-shirt_top", "trouser", "pullover", "dress", "coat",
                                              "sandal",      "shirt",   "sneaker",  "bag",   "ankle_boot"};

IdxArray read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  MO_CHECK(f != nullptr, "read_idx: cannot open {}", path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  constexpr size_t kMaxBytes = size_t(1) << 30;  // Fashion-MNIST's largest file is 47 MB: more is a bomb
  bool too_big = false;
  while (!too_big && (n = gzread(f, buf, sizeof(buf))) > 0) {
    too_big = bytes.size() + size_t(n) > kMaxBytes;
    if (!too_big) bytes.insert(bytes.end(), buf, buf + n);
  }
  if (too_big) {
    gzclose(f);
    MO_FAIL("read_idx: {} holds more than {} MiB (uncompressed): not an IDX image set of this size", path,
            kMaxBytes >> 20);
  }
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  const bool bad = n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END);
  const std::string why = bad ? msg : "";
  gzclose(f);
  MO_CHECK(!bad, "read_idx: {}: {}", path, why);
  MO_CHECK(bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08,
           "read_idx: {} is not an IDX file of unsigned bytes", path);
  const int ndim = bytes[3];
  MO_CHECK(bytes.size() >= 4 + 4 * size_t(ndim), "read_idx: {} is truncated (header)", path);
  IdxArray a;
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {  // big-endian uint32 sizes, each checked before it is multiplied in
    const uint8_t* p = &bytes[4 + 4 * d];
    const uint32_t v = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
    MO_CHECK(v <= bytes.size() && !__builtin_mul_overflow(count, size_t(v), &count),
             "read_idx: {}: dimension {} is {}, more than the file holds", path, d, v);
    a.dims.push_back(static_cast<int>(v));
  }
  const size_t off = 4 + 4 * size_t(ndim);
  MO_CHECK(bytes.size() == off + count, "read_idx: {} has {} data bytes, the header says {}", path, bytes.size() - off,
           count);
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(off), bytes.end());
  return a;
}

namespace {

std::string marker_text(const PrepareOptions& o, int64_t train, int64_t val) {
  return fmt::format("fashion-mnist size {} gray {} quality {} train {} val {}\n", o.size, int(o.gray), o.quality, train, val);
}

std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const char* ext : {".gz", ""}) {
    std::string p = dir + "/" + stem + ext;
    if (fs::exists(p)) return p;
  }
  MO_FAIL("mo_prepare fashion-mnist: {}/{}(.gz) not found (Debian package dataset-fashion-mnist)", dir, stem);
}

}  // namespace

PrepareResult prepare_fashion_mnist(const PrepareOptions& opt) {
  MO_CHECK(!opt.out.empty(), "mo_prepare fashion-mnist: --out is required");
  MO_CHECK(opt.size >= 8 && opt.size <= 1024, "mo_prepare fashion-mnist: --size {} outside [8, 1024]", opt.size);
  MO_CHECK(opt.quality >= 1 && opt.quality <= 100, "mo_prepare fashion-mnist: quality {} outside [1, 100]", opt.quality);
  struct Split {
    std::string name, images, labels;
    IdxArray x, y;
  };
  std::vector<Split> splits = {{"train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", {}, {}},
                               {"val", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", {}, {}}};
  PrepareResult res;
  for (Split& s : splits) {
    s.x = read_idx(find_idx(opt.src, s.images));
    s.y = read_idx(find_idx(opt.src, s.labels));
    MO_CHECK(s.x.dims.size() == 3 && s.y.dims.size() == 1 && s.x.dims[0] == s.y.dims[0],
             "mo_prepare fashion-mnist: {} and {} do not match", s.images, s.labels);
    MO_CHECK(s.x.dims[1] >= 1 && s.x.dims[1] <= 4096 && s.x.dims[2] >= 1 && s.x.dims[2] <= 4096,
             "mo_prepare fashion-mnist: {} holds {}x{} images (1 to 4096 pixels a side expected)", s.images,
             s.x.dims[2], s.x.dims[1]);
    (s.name == "train" ? res.train : res.val) = s.x.dims[0];
  }
  const std::string marker = opt.out + "/.mo_prepare_done";
  const std::string want = marker_text(opt, res.train, res.val);
  {
    std::ifstream m(marker);
    std::stringstream ss;
    ss << m.rdbuf();
    if (m && ss.str() == want) {
      res.already_complete = true;
      return res;
    }
  }
  std::error_code ec;
  fs::remove(marker, ec);
  for (const Split& s : splits)
    for (const char* c : kFashionMnistClasses) {
      const fs::path dir = fs::path(opt.out) / s.name / c;
      fs::create_directories(dir, ec);
      MO_CHECK(!ec, "mo_prepare fashion-mnist: cannot create folder '{}' (--out {}): {}", dir.string(), opt.out,
               ec.message());
    }
  // Every image of both splits, handed out through one counter.
  const int64_t total = res.train + res.val;
  std::atomic<int64_t> next{0}, written{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto work = [&] {
    Image src(28, 28), big(opt.size, opt.size);
    std::vector<uint8_t> gray(static_cast<size_t>(opt.size) * opt.size);
    for (int64_t k; (k = next.fetch_add(1)) < total;) {
      try {
        const Split& s = k < res.train ? splits[0] : splits[1];
        const int64_t i = k < res.train ? k : k - res.train;
        const int h = s.x.dims[1], w = s.x.dims[2];
        const int label = s.y.data[static_cast<size_t>(i)];
        MO_CHECK(label < 10, "mo_prepare fashion-mnist: label {} of {} image {} is not a class", label, s.name, i);
        const std::string path = fmt::format("{}/{}/{}/{:05d}.jpg", opt.out, s.name, kFashionMnistClasses[label], i);
        src.resize(w, h);
        const uint8_t* px = s.x.data.data() + static_cast<size_t>(i) * h * w;
        for (int p = 0; p < h * w; ++p) src.data()[3 * p] = src.data()[3 * p + 1] = src.data()[3 * p + 2] = px[p];
        const float box[4] = {0, 0, float(w), float(h)};
        resample(src.view(), box, Interp::bicubic, big.view());
        std::vector<uint8_t> jpg;
        if (opt.gray) {
          for (size_t p = 0; p < gray.size(); ++p) gray[p] = big.data()[3 * p];
          jpg = encode_jpeg(gray.data(), opt.size, opt.size, 1, opt.quality);
        } else {
          jpg = encode_jpeg(big.data(), opt.size, opt.size, 3, opt.quality);
        }
        write_file(path, jpg);
        written.fetch_add(1);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mu);
        if (!error) error = std::current_exception();
        next.store(total);
      }
    }
  };
  const int nt = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt));
  try {
    for (int t = 0; t < nt; ++t) pool.emplace_back(work);
  } catch (const std::system_error& e) {  // e.g. the process limit (ulimit -u)
    next.store(total);
    for (auto& t : pool) t.join();
    MO_FAIL("mo_prepare fashion-mnist: cannot start {} threads ({} started): {}; lower --threads", nt, pool.size(),
            e.what());
  }
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  res.written = written.load();
  std::ofstream m(marker);
  m << want;
  MO_CHECK(m.good(), "mo_prepare fashion-mnist: cannot write {}", marker);
  return res;
}

}  // namespace mo::data
