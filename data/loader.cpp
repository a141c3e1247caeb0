// loader.cpp: worker pool, batch ring, epoch/resume state and the hand-off to normalize (see loader.h).
// Locking: one mutex guards the slots and the epoch state; workers hold it only to take a task or to
// report one done. A slot belongs to the workers while filling, to the consumer once ready.
#include "data/loader.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <new>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "data/device_stage.h"
#include "data/gpu_jpeg.h"
#include "data/image_decode.h"
#include "data/sampler.h"

namespace mo::data {
namespace {

constexpr int kMaxReplacements = 16;

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// A view of `bytes` (a uint8 tensor) at byte offset `off` as another dtype and shape.
Tensor reinterpret(const Tensor& bytes, size_t off, const Shape& shape, DType dt) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = bytes.storage();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->offset = static_cast<int64_t>((bytes.offset() + off) / dtype_size(dt));
  impl->dtype = dt;
  return Tensor(impl);
}

}  // namespace

struct Loader::Impl {
  // decoder gpu: one sample between its draws (phase 0) and its RandAugment (phase 1).
  struct GpuSample {
    std::vector<uint8_t> file;
    TrainDraw d;
    Rng rng{0, 0};
    int64_t idx = 0;
    bool cpu = true;  // decoded on the CPU in phase 1 (the whole CPU path)
  };
  struct Slot {
    std::unique_ptr<HostBuffer> buf;
    int64_t batch = -1;  // -1: free
    int count = 0, next_sample = 0, remaining = 0;
    int phase = 0;       // decoder gpu: 0 read + draw, then the batch decode, 1 augment
    bool ready = false;
    double lam = 1.0;
    std::vector<GpuSample> gpu;
  };

  LoaderConfig cfg;
  std::shared_ptr<const ImageFolder> ds;
  std::unique_ptr<TrainTransform> train_tf;
  std::unique_ptr<EvalTransform> eval_tf;
  std::unique_ptr<DistributedSampler> sampler;
  NormalizeSpec spec;
  int S = 0, C = 0, B = 0;
  size_t meta_off = 0, labels_off = 0, targets_off = 0, slot_bytes = 0;
  Device dev;
  std::unique_ptr<DeviceStage> stage;
  std::unique_ptr<GpuJpegDecoder> gpu;  // decoder gpu
  std::atomic<int64_t> gpu_decoded{0}, gpu_fallbacks{0};
  std::atomic<bool> gpu_noted{false};
  std::vector<uint8_t> noise;  // synthetic: one image of random bytes + kNoiseSlack, samples copy a window
  static constexpr int kNoiseSlack = 4096;

  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  std::vector<Slot> slots;
  std::vector<std::thread> workers;
  bool stop = false, started = false;
  int busy = 0;
  uint64_t gen = 0;
  int64_t epoch = 0, num_batches = 0, next_schedule = 0, next_out = 0;
  std::vector<SampleRef> samples;
  std::exception_ptr error;
  int pending_slot = -1, pending_stage = -1;  // CUDA: slot whose upload may still be running
  std::atomic<int64_t> bad{0};
  LoaderStats totals;  // under mu (the gpu_ counts are the atomics above)

  // Adds a worker's stage times (since its last report) and busy time to the totals, under mu.
  void report(StageTimes& t, int64_t busy_ns, int samples) {
    for (int k = 0; k < kNumStages; ++k) totals.stage_s[k] += t.ns[k] * 1e-9;
    totals.busy_s += busy_ns * 1e-9;
    totals.samples += samples;
    t.ns.fill(0);
  }
  std::atomic<int> warnings{0};

  uint8_t* images(Slot& s) { return s.buf->data(); }
  int64_t* meta(Slot& s) { return reinterpret_cast<int64_t*>(s.buf->data() + meta_off); }
  int64_t* labels(Slot& s) { return reinterpret_cast<int64_t*>(s.buf->data() + labels_off); }
  float* targets(Slot& s) { return reinterpret_cast<float*>(s.buf->data() + targets_off); }

  void warn(const std::string& path, const std::string& err, const std::string& instead) {
    const int n = warnings.fetch_add(1);
    if (n < cfg.max_warnings)
      std::fprintf(stderr, "warning: data loader: skipping %s: %s (replaced by %s)\n", path.c_str(), err.c_str(),
                   instead.c_str());
    else if (n == cfg.max_warnings)
      std::fprintf(stderr, "warning: data loader: further bad-input warnings suppressed (bad_samples() counts them)\n");
  }

  // Decodes + transforms one sample into `out`; unreadable files are replaced deterministically.
  void process(const SampleRef& ref, int64_t ep, Workspace& ws, std::vector<uint8_t>& file, uint8_t* out_px,
               int64_t& label) {
    if (cfg.synthetic) {  // a window of the noise image chosen by (seed, epoch, position); no file is read
      Rng rng(cfg.seed, make_stream(Purpose::transform, ep, ref.position));
      std::memcpy(out_px, noise.data() + rng.randint(0, kNoiseSlack), static_cast<size_t>(S) * S * 3);
      label = ds->label(ref.index);
      return;
    }
    const ImageView out{out_px, S, S, static_cast<int64_t>(S) * 3};
    Rng pick(cfg.seed, make_stream(Purpose::replacement, ep, ref.position));
    int64_t idx = ref.index;
    for (int attempt = 0; attempt < kMaxReplacements; ++attempt) {
      const std::string path = ds->path(idx);
      std::string err;
      StageClock clock(ws.times);
      bool ok = clock.lap(Stage::read, read_image_file(path, file, err, {cfg.max_file_bytes, cfg.max_pixels}));
      if (ok && train_tf) {
        Rng rng(cfg.seed, make_stream(Purpose::transform, ep, ref.position));
        rng.g.counter = static_cast<uint64_t>(attempt) << 32;  // a stand-in gets fresh draws
        ok = (*train_tf)(file.data(), file.size(), rng, ws, out, err);
      } else if (ok) {
        ok = (*eval_tf)(file.data(), file.size(), ws, out, err);
      }
      if (ok) {
        label = ds->label(idx);
        return;
      }
      bad.fetch_add(1);
      const int64_t next = pick.randint(0, ds->size() - 1);
      warn(path, err, ds->path(next));
      idx = next;
    }
    MO_FAIL("data loader: {} unreadable files in a row (last: {}); is {} intact?", kMaxReplacements, ds->path(idx),
            ds->folder());
  }

  // decoder gpu, phase 0: reads the file and makes its draws (a JPEG's header only); anything the GPU
  // does not take, or that fails here, goes the whole CPU path in phase 1 (which names and replaces it).
  void prepare(const SampleRef& ref, int64_t ep, Workspace& ws, GpuSample& g) {
    g.idx = ref.index;
    g.cpu = true;
    g.rng = Rng(cfg.seed, make_stream(Purpose::transform, ep, ref.position));
    std::string err;
    StageClock clock(ws.times);
    if (!clock.lap(Stage::read, read_image_file(ds->path(ref.index), g.file, err, {cfg.max_file_bytes, cfg.max_pixels})))
      return;
    if (sniff_image_format(g.file.data(), g.file.size()) != ImageFormat::jpeg) return;
    g.cpu = !(train_tf->draw(g.file.data(), g.file.size(), g.rng, ws, g.d, err) && g.d.gpu);
  }

  // decoder gpu: the slot's JPEGs decoded, cropped, resized and flipped on the GPU into its images.
  void decode_slot(Slot& s, StageTimes& times) {
    StageClock clock(times);
    std::vector<GpuJob> jobs(static_cast<size_t>(s.count));
    for (int i = 0; i < s.count; ++i) {
      const GpuSample& g = s.gpu[i];
      if (g.cpu) continue;  // no data: the decoder skips it
      jobs[i] = {g.file.data(), g.file.size(), g.d.win.x, g.d.win.y, g.d.win.w, g.d.win.h, g.d.interp, g.d.flip};
    }
    std::vector<char> ok;
    std::vector<std::string> errors;
    try {
      gpu->run(jobs.data(), s.count, images(s), ok, errors);
    } catch (const Error& e) {  // the device failed (not one file): say which batch it was on
      MO_FAIL("data loader: decoding batch {} on the GPU (its first file {}): {}", s.batch, ds->path(s.gpu[0].idx),
              e.what());
    }
    for (int i = 0; i < s.count; ++i) {
      GpuSample& g = s.gpu[i];
      gpu_decoded.fetch_add(ok[i]);
      if (!g.cpu && !ok[i] && !gpu_noted.exchange(true))
        std::fprintf(stderr, "note: data loader: nvJPEG did not decode %s (%s); such files are decoded on the CPU "
                     "(counted as GPU fallbacks)\n", ds->path(g.idx).c_str(), errors[i].c_str());
      if (!ok[i]) g.cpu = true, gpu_fallbacks.fetch_add(1);
    }
    clock.lap(Stage::decode);
  }

  // decoder gpu, phase 1: RandAugment on the GPU's crop, or the CPU path for the sample.
  void complete(const SampleRef& ref, int64_t ep, Workspace& ws, GpuSample& g, std::vector<uint8_t>& file,
                uint8_t* out_px, int64_t& label) {
    if (g.cpu) return process(ref, ep, ws, file, out_px, label);
    train_tf->augment({out_px, S, S, static_cast<int64_t>(S) * 3}, g.rng, ws);
    label = ds->label(g.idx);
  }

  // Mixup/cutmix, targets and erase boxes of a filled slot (by the worker that finished it).
  void finalize(Slot& s, int64_t ep, StageTimes& times) {
    StageClock clock(times);
    const int n = s.count;
    s.lam = 1.0;
    if (cfg.training && cfg.mixup.enabled()) {
      Rng rng(cfg.seed, make_stream(Purpose::mixup, ep, s.batch * cfg.world_size + cfg.rank));
      const MixParams p = draw_mix_params(cfg.mixup, S, S, rng);
      mix_batch(images(s), n, S, S, p);
      s.lam = p.lam;
    }
    mix_targets(labels(s), n, C, s.lam, cfg.training ? cfg.mixup.label_smoothing : 0.0, targets(s));
    for (int i = 0; i < n; ++i) {
      const int64_t pos = samples[static_cast<size_t>(s.batch * B + i)].position;
      EraseBox box;
      if (cfg.training) {
        Rng rng(cfg.seed, make_stream(Purpose::erase_box, ep, pos));
        box = draw_erase_box(cfg.erase, S, S, rng);
      }
      int64_t* m = meta(s) + i * kMetaCols;
      m[0] = box.top, m[1] = box.left, m[2] = box.h, m[3] = box.w;
      m[4] = static_cast<int64_t>(make_stream(Purpose::erase_pixels, ep, pos));
    }
    clock.lap(Stage::mixup);
  }

  bool take_task(int& slot_idx) {  // under mu
    if (!started) return false;
    int best = -1;
    for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
      const Slot& s = slots[i];
      if (s.batch >= 0 && s.next_sample < s.count && (best < 0 || s.batch < slots[best].batch)) best = i;
    }
    if (best < 0 && next_schedule < num_batches) {
      for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
        Slot& s = slots[i];
        if (s.batch >= 0) continue;
        s.batch = next_schedule++;
        s.count = static_cast<int>(std::min<int64_t>(B, static_cast<int64_t>(samples.size()) - s.batch * B));
        s.next_sample = 0;
        s.remaining = s.count;
        s.phase = 0;
        s.ready = false;
        best = i;
        break;
      }
    }
    slot_idx = best;
    return best >= 0;
  }

  // A worker that cannot even set up (no memory for its decoder, its nice value refused) reports it
  // through next().
  void worker_loop() {
    try {
      if (cfg.worker_nice > 0) {  // this thread only (Linux: a thread id is a PRIO_PROCESS target)
        const auto tid = static_cast<id_t>(syscall(SYS_gettid));
        errno = 0;
        const int now = getpriority(PRIO_PROCESS, tid);  // −1 is a valid nice value: errno tells
        MO_CHECK(errno == 0 && setpriority(PRIO_PROCESS, tid, std::min(19, now + cfg.worker_nice)) == 0,
                 "data loader: cannot raise a worker thread's nice value by {} ({})", cfg.worker_nice,
                 std::system_category().message(errno));
      }
      run_worker();
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      if (!error) error = std::current_exception();
      cv_done.notify_all();
    }
  }

  void run_worker() {
    Workspace ws;
    ws.decoder.set_max_pixels(cfg.max_pixels);
    std::vector<uint8_t> file;
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      int si = -1;
      cv_work.wait(lk, [&] { return stop || take_task(si); });
      if (stop) return;
      Slot& s = slots[si];
      const int i = s.next_sample++;
      const uint64_t my_gen = gen;
      const int64_t ep = epoch;
      const SampleRef ref = samples[static_cast<size_t>(s.batch * B + i)];
      const int phase = s.phase;
      ++busy;
      lk.unlock();
      const int64_t t0 = ws.times.now();
      // runs f unlocked; the first exception of any worker is kept for next() to rethrow. Returns false on one.
      auto unlocked = [&](auto&& f) {
        try {
          f();
          return true;
        } catch (...) {
          lk.lock();
          if (!error) error = std::current_exception();
          lk.unlock();
          return false;
        }
      };
      bool failed = !unlocked([&] {
        uint8_t* px = images(s) + static_cast<size_t>(i) * S * S * 3;
        if (!gpu) process(ref, ep, ws, file, px, labels(s)[i]);
        else if (phase == 0) prepare(ref, ep, ws, s.gpu[i]);
        else complete(ref, ep, ws, s.gpu[i], file, px, labels(s)[i]);
      });
      lk.lock();
      const bool last = !failed && my_gen == gen && --s.remaining == 0;
      if (last && gpu && phase == 0) {
        s.next_sample = s.count;  // no tasks while the batch decodes
        lk.unlock();
        failed = !unlocked([&] { decode_slot(s, ws.times); });
        lk.lock();
        if (!failed && my_gen == gen) s.phase = 1, s.next_sample = 0, s.remaining = s.count;
        cv_work.notify_all();
      } else if (last) {
        lk.unlock();
        unlocked([&] { finalize(s, ep, ws.times); });
        lk.lock();
        s.ready = true;
      }
      report(ws.times, ws.times.now() - t0, !gpu || phase == 1);  // a GPU-decoded sample is two tasks
      --busy;
      cv_done.notify_all();
    }
  }

  void stop_workers();  // ends and joins the worker threads

  void release_pending() {  // under mu
    if (pending_slot < 0) return;
    if (stage) stage->wait_upload(pending_stage);
    slots[pending_slot].batch = -1;
    slots[pending_slot].ready = false;
    pending_slot = -1;
    cv_work.notify_all();
  }

  void start_epoch(int64_t ep, int64_t first) {
    std::unique_lock<std::mutex> lk(mu);
    ++gen;
    started = false;
    cv_done.wait(lk, [&] { return busy == 0; });
    release_pending();
    for (Slot& s : slots) s.batch = -1, s.ready = false;
    epoch = ep;
    samples = sampler->epoch(ep);
    const int64_t n = static_cast<int64_t>(samples.size());
    num_batches = cfg.training ? n / B : (n + B - 1) / B;  // drop_last when training
    samples.resize(static_cast<size_t>(std::min(n, num_batches * B)));
    MO_CHECK(first >= 0 && first <= num_batches, "Loader::start_epoch: batch {} outside [0, {}]", first, num_batches);
    next_schedule = next_out = first;
    started = true;
    cv_work.notify_all();
  }

  bool next(Batch& out) {
    StageTimes clock;
    const int64_t t_enter = clock.now();
    std::unique_lock<std::mutex> lk(mu);
    if (!started) {
      lk.unlock();
      start_epoch(0, 0);
      lk.lock();
    }
    release_pending();
    if (error) std::rethrow_exception(error);
    if (next_out >= num_batches) return false;
    int si = -1;
    const int64_t t_wait = clock.now();
    cv_done.wait(lk, [&] {
      if (error) return true;
      for (int i = 0; i < static_cast<int>(slots.size()); ++i)
        if (slots[i].batch == next_out && slots[i].ready) si = i;
      return si >= 0;
    });
    if (error) std::rethrow_exception(error);
    const int64_t t_ready = clock.now();
    Slot& s = slots[si];
    const int64_t batch_index = next_out, ep = epoch;
    const double lam = s.lam;
    lk.unlock();
    const int n = s.count;
    int64_t t_norm = 0;
    if (stage) {
      const int which = static_cast<int>(batch_index % 2);
      stage->upload(s.buf->data(), slot_bytes, which);
      Tensor st = stage->acquire(which);
      const int64_t t0 = clock.now();
      out.images = normalize_erase(reinterpret(st, 0, {n, S, S, 3}, DType::u8),
                                   reinterpret(st, meta_off, {n, kMetaCols}, DType::i64), cfg.seed, spec);
      t_norm = clock.now() - t0;
      out.labels = reinterpret(st, labels_off, {n}, DType::i64).clone();
      out.targets = reinterpret(st, targets_off, {n, C}, DType::f32).clone();
      stage->release(which);
      lk.lock();
      pending_slot = si;
      pending_stage = which;
    } else {
      const int64_t t0 = clock.now();
      out.images = normalize_erase(Tensor::from_blob(images(s), {n, S, S, 3}, DType::u8),
                                   Tensor::from_blob(meta(s), {n, kMetaCols}, DType::i64), cfg.seed, spec);
      t_norm = clock.now() - t0;
      out.labels = Tensor::from_blob(labels(s), {n}, DType::i64).clone();
      out.targets = Tensor::from_blob(targets(s), {n, C}, DType::f32).clone();
      lk.lock();
      s.batch = -1;
      s.ready = false;
      cv_work.notify_all();
    }
    out.epoch = ep;
    out.index = batch_index;
    out.lam = lam;
    ++next_out;
    const int64_t t_done = clock.now();
    totals.batches += 1;
    totals.wait_s += (t_ready - t_wait) * 1e-9;
    totals.deliver_s += (t_done - t_ready + t_wait - t_enter) * 1e-9;  // the lock and bookkeeping count as delivery
    totals.stage_s[static_cast<size_t>(Stage::normalize)] += t_norm * 1e-9;
    return true;
  }
};

Loader::Loader(LoaderConfig cfg) : Loader(cfg, nullptr) {}

Loader::Loader(LoaderConfig cfg, std::shared_ptr<const ImageFolder> dataset) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (cfg.split.empty()) cfg.split = cfg.training ? "train" : "val";
  MO_CHECK(cfg.worker_nice >= 0 && cfg.worker_nice <= 19, "Loader: worker_nice {} is not in [0, 19]",
           cfg.worker_nice);
  MO_CHECK(cfg.batch_size > 0 && cfg.num_threads > 0 && cfg.prefetch_batches > 0,
           "Loader: batch_size {}, num_threads {} and prefetch_batches {} must be positive", cfg.batch_size,
           cfg.num_threads, cfg.prefetch_batches);
  m.cfg = cfg;
  m.ds = dataset ? std::move(dataset) : std::make_shared<ImageFolder>(cfg.root, cfg.split, cfg.use_index_cache);
  if (cfg.training) m.train_tf = std::make_unique<TrainTransform>(cfg.train);
  else m.eval_tf = std::make_unique<EvalTransform>(cfg.eval);
  m.sampler = std::make_unique<DistributedSampler>(m.ds->size(), cfg.rank, cfg.world_size, cfg.training, cfg.seed);
  m.spec = imagenet_normalize(cfg.dtype, cfg.channels_last);
  m.S = cfg.training ? cfg.train.size : cfg.eval.size;
  m.C = m.ds->num_classes();
  m.B = cfg.batch_size;
  const size_t img_bytes = static_cast<size_t>(m.B) * m.S * m.S * 3;
  m.meta_off = align64(img_bytes);
  m.labels_off = align64(m.meta_off + sizeof(int64_t) * m.B * kMetaCols);
  m.targets_off = align64(m.labels_off + sizeof(int64_t) * m.B);
  m.slot_bytes = align64(m.targets_off + sizeof(float) * m.B * m.C);
  m.dev = cfg.use_cuda && cuda_available() ? Device::cuda(cfg.device) : Device::cpu();
  if (m.dev.is_cuda()) m.stage = std::make_unique<DeviceStage>(cfg.device, m.slot_bytes, 2);
  const bool gpu_decode = !cfg.synthetic && (cfg.decoder == DecodeOn::gpu || (cfg.decoder == DecodeOn::automatic &&
                                             gpu_jpeg_built() && m.dev.is_cuda() && cfg.training));
  if (cfg.synthetic) {
    m.noise.resize(static_cast<size_t>(m.S) * m.S * 3 + Impl::kNoiseSlack);
    Rng rng(cfg.seed, make_stream(Purpose::transform, 0xFFFFF, 0xFFFFFFFFFFll));  // no sample's stream
    for (uint8_t& v : m.noise) v = static_cast<uint8_t>(rng.randint(0, 255));
  }
  if (gpu_decode) {
    MO_CHECK(cfg.training, "data.decoder: gpu decodes the training transform only; the {} split is decoded "
             "on the CPU (decoder cpu)", cfg.split);
    MO_CHECK(gpu_jpeg_built(), "data.decoder: gpu: this build of mo has no nvJPEG (it is found at configure time "
             "with CUDA: nvjpeg.h and libnvjpeg, or MO_NVJPEG_ROOT); use data.decoder: cpu or auto");
    MO_CHECK(m.dev.is_cuda(), "data.decoder: gpu needs the loader on a GPU ({}); use data.decoder: cpu or auto",
             cuda_available() ? "this run's device is the CPU" : "no GPU is present");
    m.gpu = std::make_unique<GpuJpegDecoder>(cfg.device, m.S, cfg.gpu_batches, true, cfg.gpu_high_priority);
  }
  m.slots.resize(static_cast<size_t>(cfg.prefetch_batches));
  try {
    for (auto& s : m.slots) {
      s.buf = std::make_unique<HostBuffer>(m.slot_bytes);
      if (m.gpu) s.gpu.resize(static_cast<size_t>(m.B));
    }
  } catch (const std::bad_alloc&) {
    MO_FAIL("data loader: no memory for {} batch buffers of {:.1f} MiB each ({} images of {}x{} pixels); lower the "
            "batch size or the image size", m.slots.size(), double(m.slot_bytes) / (1 << 20), m.B, m.S, m.S);
  }
  m.workers.reserve(static_cast<size_t>(cfg.num_threads));
  try {
    for (int t = 0; t < cfg.num_threads; ++t) m.workers.emplace_back([&m] { m.worker_loop(); });
  } catch (const std::system_error& e) {  // e.g. the process limit (ulimit -u) or no memory for stacks
    const size_t started = m.workers.size();
    m.stop_workers();
    MO_FAIL("data loader: cannot start {} loader threads ({} started): {}; lower data.workers (mo_validate: "
            "--workers)", cfg.num_threads, started, e.what());
  }
}

void Loader::Impl::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu);
    stop = true;
  }
  cv_work.notify_all();
  for (auto& t : workers) t.join();
  workers.clear();
}

Loader::~Loader() {
  impl_->stop_workers();
  if (impl_->stage && impl_->pending_slot >= 0) impl_->stage->wait_upload(impl_->pending_stage);
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) { impl_->start_epoch(epoch, first_batch); }
bool Loader::next(Batch& out) { return impl_->next(out); }
LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return {impl_->epoch, impl_->next_out};
}
int64_t Loader::batches_per_epoch() const {
  const int64_t n = impl_->sampler->num_samples(), b = impl_->B;
  return impl_->cfg.training ? n / b : (n + b - 1) / b;
}
int64_t Loader::samples_per_rank() const { return impl_->sampler->num_samples(); }
int64_t Loader::bad_samples() const { return impl_->bad.load(); }
LoaderStats Loader::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  LoaderStats st = impl_->totals;
  st.gpu_decoded = impl_->gpu_decoded.load();
  st.gpu_fallbacks = impl_->gpu_fallbacks.load();
  if (impl_->gpu) st.gpu_times = impl_->gpu->times();
  return st;
}
const char* Loader::decoder() const {
  if (impl_->cfg.synthetic) return "synthetic";
  if (!impl_->gpu) return "cpu";
  return impl_->gpu->hardware() ? "gpu (nvJPEG hardware)" : "gpu (nvJPEG GPU-hybrid)";
}
const ImageFolder& Loader::dataset() const { return *impl_->ds; }
const LoaderConfig& Loader::config() const { return impl_->cfg; }
Device Loader::device() const { return impl_->dev; }

}  // namespace mo::data
