// mo_bench_kernels: times the fused CUDA kernels (layer_norm, dwconv2d, gated_dwconv; forward and
// backward, called through their mo::cuda entry points, no autograd) and the dense convolutions against
// cuDNN (tools/bench/conv2d_cudnn.cu, the path that lost) at the mambaout_tiny shapes, and the attention
// kernel at ViT-S/16's shape (scripts/bench/sdpa_peer.py times PyTorch's SDPA on the same one) with
// CUDA events: warm-up, then the mean of N runs. Prints the time, the bytes each call must move (the
// model in the .cu files' comments) and the achieved GB/s (attention: TFLOP/s of its matrix products).
// Fresh random data (never zeros).
//   mo_bench_kernels [--dtype bf16|fp32] [--batch 256] [--warmup 3] [--iters 20] [--only SUBSTRING]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor.h"
#include "ops/attention/attention.h"
#include "ops/conv/conv2d.h"
#include "ops/conv/dwconv2d.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/norm/layer_norm.h"
#include "tools/common/cli.h"
#ifdef MO_WITH_CUDA
#include "autograd/cuda_check.h"
#include "tools/bench/conv2d_cudnn.h"
#endif

using namespace mo;

namespace {

struct Args {
  DType dtype = DType::bf16;
  int64_t batch = 256;
  int warmup = 3, iters = 20;
  std::string only;
};

#ifdef MO_WITH_CUDA

// A device tensor of uniform(-2, 2) values (fresh per call: the seed advances), written in chunks so the
// host never holds more than 16 M floats.
Tensor random_tensor(const Shape& s, DType dt, double lo = -2.0, double hi = 2.0) {
  static uint32_t seed = 12345;
  std::mt19937 gen(seed++);
  std::uniform_real_distribution<float> dist(static_cast<float>(lo), static_cast<float>(hi));
  Tensor t = Tensor::empty(s, dt, Device::cuda(0));
  Tensor flat = t.view({-1});
  const int64_t n = t.numel(), chunk = int64_t(1) << 24;
  std::vector<float> buf;
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    buf.resize(len);
    for (auto& x : buf) x = dist(gen);
    flat.as_strided({len}, {1}, flat.offset() + off).copy_(Tensor::from_vector(buf, {len}));
  }
  return t;
}

struct Bench {
  const Args& args;
  cudaEvent_t start{}, stop{};
  explicit Bench(const Args& a) : args(a) {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Bench() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  bool wanted(const std::string& name) const { return args.only.empty() || name.find(args.only) != std::string::npos; }
  // Runs f warmup + iters times; prints mean µs and GB/s for `bytes` per call.
  // flops > 0: also the TFLOP/s of the call's matrix products.
  void run(const std::string& name, double bytes, const std::function<void()>& f, double flops = 0) {
    if (!wanted(name)) return;
    for (int i = 0; i < args.warmup; ++i) f();
    CUDA_CHECK(cudaEventRecord(start, stream()));
    for (int i = 0; i < args.iters; ++i) f();
    CUDA_CHECK(cudaEventRecord(stop, stream()));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    const double us = 1e3 * ms / args.iters;
    std::printf("%-44s %9.1f us %10.1f MB %8.0f GB/s", name.c_str(), us, bytes / 1e6, bytes / (us * 1e3));
    if (flops > 0) std::printf(" %7.1f TFLOP/s", flops / (us * 1e6));
    std::printf("\n");
    std::fflush(stdout);
  }
};

void bench_layer_norm(Bench& bench, DType dt, int64_t B, int64_t H, int64_t C, const char* stage) {
  const int64_t R = B * H * H;
  const double es = static_cast<double>(dtype_size(dt)), n = static_cast<double>(R * C);
  Tensor x = random_tensor({R, C}, dt), w = random_tensor({C}, dt, 0.5, 1.5), b = random_tensor({C}, dt);
  Tensor y = Tensor::empty({R, C}, dt, Device::cuda(0)), dy = random_tensor({R, C}, dt);
  Tensor mean = Tensor::empty({R}, DType::f32, Device::cuda(0)), rstd = Tensor::empty({R}, DType::f32, Device::cuda(0));
  Tensor dx = Tensor::empty({R, C}, dt, Device::cuda(0)), dw = Tensor::empty({C}, dt, Device::cuda(0)),
         db = Tensor::empty({C}, dt, Device::cuda(0));
  const std::string tag = std::string(stage) + " R=" + std::to_string(R) + " C=" + std::to_string(C);
  bench.run("layer_norm fwd " + tag, 2 * n * es + 8.0 * R,
            [&] { cuda::layer_norm_forward(x, w, b, 1e-6, y, mean, rstd); });
  bench.run("layer_norm bwd " + tag, 3 * n * es + 8.0 * R,
            [&] { cuda::layer_norm_backward(dy, x, w, mean, rstd, dx, dw, db); });
}

void bench_dwconv(Bench& bench, DType dt, int64_t B, int64_t H, int64_t C, const char* stage) {
  const double es = static_cast<double>(dtype_size(dt)), n = static_cast<double>(B * H * H * C);
  Tensor x = random_tensor({B, H, H, C}, dt), w = random_tensor({C, 1, 7, 7}, dt, -0.2, 0.2),
         b = random_tensor({C}, dt), dy = random_tensor({B, H, H, C}, dt);
  Tensor y = Tensor::empty(x.shape(), dt, Device::cuda(0)), dx = Tensor::empty(x.shape(), dt, Device::cuda(0));
  Tensor dw = Tensor::empty(w.shape(), dt, Device::cuda(0)), db = Tensor::empty({C}, dt, Device::cuda(0));
  const std::string tag = std::string(stage) + " " + std::to_string(B) + "x" + std::to_string(H) + "x" +
                          std::to_string(H) + "x" + std::to_string(C);
  bench.run("dwconv2d fwd " + tag, 2 * n * es, [&] { cuda::dwconv2d_forward(x, w, b, 3, y); });
  bench.run("dwconv2d bwd (dx + dw) " + tag, 4 * n * es, [&] { cuda::dwconv2d_backward(dy, x, w, 3, dx, dw, db); });
  bench.run("dwconv2d bwd dw only " + tag, 2 * n * es,
            [&] { cuda::dwconv2d_backward(dy, x, w, 3, Tensor(), dw, db); });
}

void bench_gated(Bench& bench, DType dt, int64_t B, int64_t H, int64_t h, int64_t cc, const char* stage) {
  const double es = static_cast<double>(dtype_size(dt)), P = static_cast<double>(B * H * H);
  const double hh = static_cast<double>(h), c = static_cast<double>(cc), id = hh - c;
  Tensor z = random_tensor({B, H, H, 2 * h}, dt), w = random_tensor({cc, 1, 7, 7}, dt, -0.2, 0.2),
         b = random_tensor({cc}, dt), dm = random_tensor({B, H, H, h}, dt);
  Tensor m = Tensor::empty({B, H, H, h}, dt, Device::cuda(0)), conv = Tensor::empty({B, H, H, cc}, dt, Device::cuda(0));
  Tensor dz = Tensor::empty(z.shape(), dt, Device::cuda(0)), dw = Tensor::empty(w.shape(), dt, Device::cuda(0)),
         db = Tensor::empty({cc}, dt, Device::cuda(0));
  const std::string tag = std::string(stage) + " P=" + std::to_string(B * H * H) + " h=" + std::to_string(h) +
                          " cc=" + std::to_string(cc);
  // forward: read z (2h), write m (h), in training also conv (cc); the halo of c is re-read from L2
  bench.run("gated_dwconv fwd train " + tag, P * es * (3 * hh + c),
            [&] { cuda::gated_dwconv_forward(z, w, b, h, Act::gelu, m, conv); });
  bench.run("gated_dwconv fwd infer " + tag, P * es * 3 * hh,
            [&] { cuda::gated_dwconv_forward(z, w, b, h, Act::gelu, m, Tensor()); });
  // backward: elementwise reads dm, g, i, conv, writes dg, di, dconv; dx conv 2·cc; wgrad 2·cc
  bench.run("gated_dwconv bwd " + tag, P * es * (3 * hh + 2 * id + 6 * c),
            [&] { cuda::gated_dwconv_backward(dm, z, w, conv, h, Act::gelu, dz, dw, db); });
}

// max |a − b| over all elements; infinite when either holds a NaN or an infinity (so it cannot hide).
double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto va = a.to(DType::f32).to(Device::cpu()).to_vector<float>(), vb = b.to(DType::f32).to(Device::cpu()).to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double d = std::abs(static_cast<double>(va[i]) - vb[i]);
    m = std::isfinite(d) ? std::max(m, d) : INFINITY;
  }
  return m;
}

// max |a − b| / max |b|
double rel_diff(const Tensor& a, const Tensor& b) {
  auto vb = b.to(DType::f32).to(Device::cpu()).to_vector<float>();
  double den = 0;
  for (float x : vb) den = std::max(den, static_cast<double>(std::abs(x)));
  const double num = max_abs_diff(a, b);
  return den > 0 ? num / den : num;
}

// Attention on the packed qkv (B, L, 3·H·64), as a ViT block calls it. Matrix-product FLOPs: forward
// 2 products of 2·L·L·D per head, backward 5 (the recomputed scores, dV, dP, dQ, dK); causal about half.
void bench_attention(Bench& bench, DType dt, int64_t B, int64_t L, int64_t H, bool causal, const char* name) {
  const int64_t D = 64;
  const double es = static_cast<double>(dtype_size(dt)), n = static_cast<double>(B * L * H * D);
  const double mm = 2.0 * static_cast<double>(B * H) * L * L * D * (causal ? 0.5 : 1.0);
  Tensor qkv = random_tensor({B, L, 3 * H * D}, dt), dout = random_tensor({B, L, H * D}, dt);
  Tensor out = Tensor::empty({B, L, H * D}, dt, Device::cuda(0)), dqkv = Tensor::empty(qkv.shape(), dt, Device::cuda(0));
  Tensor lse = Tensor::empty({B, H, L}, DType::f32, Device::cuda(0));
  const std::string tag = std::string(name) + (causal ? " causal " : " full ") + std::to_string(B) + "x" +
                          std::to_string(L) + " h" + std::to_string(H);
  bench.run("attention fwd " + tag, 4 * n * es, [&] { cuda::attention_forward(qkv, H, causal, out, lse); }, 2 * mm);
  cuda::attention_forward(qkv, H, causal, out, lse);  // the backward's out and lse, also when --only skips the row above
  bench.run("attention bwd " + tag, 8 * n * es,
            [&] { cuda::attention_backward(dout, qkv, out, lse, H, causal, dqkv); }, 5 * mm);
}

// The dense 3×3 stride-2 convolutions of mambaout_tiny: ops/conv's im2col + cuBLASLt path (the op) against
// cuDNN (tools/bench/conv2d_cudnn.cu; its direct kernels where cuDNN is absent), forward and backward,
// with the largest relative difference between the two results printed beside the times.
void bench_conv(Bench& bench, DType dt, int64_t B, int64_t H, int64_t Ci, int64_t Co, bool need_dx, const char* name) {
#ifdef MO_WITH_CUDNN
  const char* peer = "cudnn";
#else
  const char* peer = "direct";
#endif
  const std::string tag = std::string(name) + " " + std::to_string(B) + "x" + std::to_string(H) + "²x" +
                          std::to_string(Ci) + "->" + std::to_string(Co);
  const std::string& only = bench.args.only;
  if (!only.empty() && ("conv2d fwd ops bwd " + std::string(peer) + " " + tag).find(only) == std::string::npos) return;
  const int64_t Ho = (H + 2 - 3) / 2 + 1;
  const double es = static_cast<double>(dtype_size(dt));
  const double xb = static_cast<double>(B * H * H * Ci) * es, yb = static_cast<double>(B * Ho * Ho * Co) * es;
  Tensor x = random_tensor({B, H, H, Ci}, dt), w = random_tensor({Co, Ci, 3, 3}, dt, -0.2, 0.2),
         b = random_tensor({Co}, dt), dy = random_tensor({B, Ho, Ho, Co}, dt);
  const Device g = Device::cuda(0);
  Tensor y1 = Tensor::empty({B, Ho, Ho, Co}, dt, g), y2 = Tensor::empty({B, Ho, Ho, Co}, dt, g);
  Tensor dx1 = need_dx ? Tensor::empty(x.shape(), dt, g) : Tensor(), dx2 = need_dx ? Tensor::empty(x.shape(), dt, g) : Tensor();
  Tensor dw1 = Tensor::empty(w.shape(), dt, g), dw2 = Tensor::empty(w.shape(), dt, g);
  Tensor db1 = Tensor::empty({Co}, dt, g), db2 = Tensor::empty({Co}, dt, g);
  bench.run("conv2d fwd ops " + tag, xb + yb, [&] { cuda::conv2d_forward(x, w, b, 2, 1, y1); });
  bench.run(std::string("conv2d fwd ") + peer + " " + tag, xb + yb, [&] { bench::cudnn_conv2d_forward(x, w, b, 2, 1, y2); });
  bench.run("conv2d bwd ops " + tag, xb * (need_dx ? 2 : 1) + yb,
            [&] { cuda::conv2d_backward(dy, x, w, 2, 1, dx1, dw1, db1); });
  bench.run(std::string("conv2d bwd ") + peer + " " + tag, xb * (need_dx ? 2 : 1) + yb,
            [&] { bench::cudnn_conv2d_backward(dy, x, w, 2, 1, dx2, dw2, db2); });
  std::printf("  ops vs %s, max relative difference: y %.2e  dx %.2e  dw %.2e  db %.2e\n", peer, rel_diff(y1, y2),
              need_dx ? rel_diff(dx1, dx2) : 0.0, rel_diff(dw1, dw2), rel_diff(db1, db2));
}

#endif  // MO_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  Args args;
  std::string dtype = "bf16";
  tools::Cli cli("mo_bench_kernels", "Times the fused CUDA kernels and the dense convolutions (against cuDNN where "
                                     "built with it) at the mambaout_tiny shapes.");
  CLI::App& app = cli.app;
  app.add_option("--dtype", dtype, "precision")->capture_default_str()->check(tools::one_of({"bf16", "fp32"}));
  app.add_option("-b,--batch,--batch-size", args.batch, "images per call")
      ->capture_default_str()
      ->check(tools::int_range(1, 1 << 16));
  app.add_option("--warmup", args.warmup, "untimed runs first")->capture_default_str()->check(tools::int_range(0, 1 << 20));
  app.add_option("--iters", args.iters, "timed runs (the mean is printed)")
      ->capture_default_str()
      ->check(tools::int_range(1, 1 << 20));
  app.add_option("--only", args.only, "time only the cases whose name contains this")->type_name("SUBSTRING");
  app.footer("Prints each call's time, the bytes it must move and the achieved GB/s; needs a CUDA build and a GPU.\n" +
             app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  args.dtype = dtype == "bf16" ? DType::bf16 : DType::f32;
#ifndef MO_WITH_CUDA
  cli.print_error("this build of mo has no CUDA support (configure with -DMO_WITH_CUDA=ON)");
  return 1;
#else
  if (!cuda_available()) {
    cli.print_error("no CUDA GPU is visible; nothing to time");
    return 1;
  }
  return cli.run([&] {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("mo_bench_kernels: %s, %s, batch %lld, %d warm-up + mean of %d runs\n", prop.name,
                dtype_name(args.dtype), static_cast<long long>(args.batch), args.warmup, args.iters);
    Bench bench(args);
    const DType dt = args.dtype;
    const int64_t B = args.batch;
    // mambaout_tiny: C = 96, 192, 384, 576 at 56, 28, 14, 7; h = 8C/3; conv on cc = C channels
    bench_layer_norm(bench, dt, B, 56, 96, "stage1");
    bench_layer_norm(bench, dt, B, 28, 192, "stage2");
    bench_layer_norm(bench, dt, B, 14, 384, "stage3");
    bench_layer_norm(bench, dt, B, 7, 576, "stage4");
    bench_dwconv(bench, dt, B, 56, 96, "stage1");
    bench_dwconv(bench, dt, B, 7, 576, "stage4");
    bench_gated(bench, dt, B, 56, 256, 96, "stage1");  // tiny: 3, 3, 9, 3 blocks
    bench_gated(bench, dt, B, 28, 512, 192, "stage2");
    bench_gated(bench, dt, B, 14, 1024, 384, "stage3");
    bench_gated(bench, dt, B, 7, 1536, 576, "stage4");
    // mambaout_base stage 1 at half the batch: h = 341 takes 1-element items, the padded 344 vectors
    const int64_t Bb = std::max<int64_t>(1, B / 2);
    bench_gated(bench, dt, Bb, 56, 341, 128, "base stage1");
    bench_gated(bench, dt, Bb, 56, 344, 128, "base stage1 padded");
    bench_conv(bench, dt, B, 224, 3, 48, false, "stem conv1");
    bench_conv(bench, dt, B, 112, 48, 96, true, "stem conv2");
    bench_conv(bench, dt, B, 56, 96, 192, true, "downsample1");
    bench_conv(bench, dt, B, 28, 192, 384, true, "downsample2");
    bench_conv(bench, dt, B, 14, 384, 576, true, "downsample3");
    bench_attention(bench, dt, B, 197, 6, false, "vit_s16");  // ViT-S/16 at 224: 196 patches + class token
    bench_attention(bench, dt, B, 197, 6, true, "vit_s16");
    cuda_synchronize();
    return 0;
  });
#endif
}
