// test_cuda_ops.cpp: CUDA-vs-CPU parity of every op with a CUDA kernel, driven by the op table (the kCuda
// cases of tests/ops/op_table.cpp), like ggml's test-backend-ops: forward and every input gradient through
// the public op and autograd, in float32 and bfloat16, against the CPU op in float64 on the very values
// the GPU sees (inputs and upstream gradient rounded to the GPU dtype first), so only the GPU's arithmetic
// is measured (max |error| / max |reference|: float32 1e-4, bfloat16 2e-2, copies and drop_path exact);
// where a case asks, also bit-identical repeats, the same forward without grad (inference) and, for a fused
// op, the same bits as its unfused parts. Then what is not one op's case: drop_path's draw, the conv2d CUDA
// entry points, strided copies, AdamW, bf16 gradient accumulation into fp32, the float64 error. The table's
// cases are compiled only with MO_WITH_CUDA; every test skips where there is no GPU. Last, CudaOwnStream. Expects the defaults:
// MO_ALLOW_TF32 unset.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "autograd/tensor.h"
#include "ops/activation/activation.h"
#include "ops/conv/conv2d.h"
#include "ops/linear/linear.h"
#include "ops/optim/adamw.h"
#include "ops/regularize/drop_path.h"
#include "ops/shape/shape.h"
#include "tests/ops/op_table.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::all_close;
using mo::test::bit_identical;
using mo::test::OpCase;
using mo::test::OpFn;
using mo::test::randn;

namespace {
constexpr double kTolF32 = 1e-4, kTolBf16 = 2e-2;
Device gpu() { return Device::cuda(0); }
}  // namespace

// ---- the op table's kCuda cases (a CPU-only build has no CUDA op to compare, so it leaves them out) -------

#ifdef MO_WITH_CUDA
namespace {

// t (float64, CPU) in dtype d on the GPU; `offset` > 0 places it that many elements into a larger zeroed
// buffer (a misaligned data pointer).
Tensor on_gpu(const Tensor& t, DType d, int64_t offset) {
  Tensor x = t.to(d).to(gpu());
  if (offset == 0) return x;
  Tensor big = Tensor::zeros({x.numel() + offset}, d, gpu());
  Tensor v = big.as_strided(x.shape(), contiguous_strides(x.shape()), offset);
  v.copy_(x);
  return v;
}

struct Run {
  std::vector<Tensor> xs;     // the inputs as the op got them
  Tensor y;                   // output
  std::vector<Tensor> grads;  // one per input (undefined where no grad)
};

// fn (the case's op, or its unfused parts) on case c's inputs, on the GPU in dtype dt or, for `ref`, on the
// CPU in float64 on the same (rounded) values; then backward with the upstream gradient r, drawn on the
// first call (rounded to dt the same way).
Run run_case(const OpCase& c, const OpFn& fn, const std::vector<Tensor>& data, Tensor& r, DType dt, bool ref) {
  Run out;
  for (size_t i = 0; i < data.size(); ++i) {
    const DType d = c.inputs[i].keep_f32 ? DType::f32 : dt;
    Tensor x = ref ? data[i].to(d).to(DType::f64) : on_gpu(data[i], d, c.inputs[i].offset);
    if (c.inputs[i].grad) x.requires_grad_();
    out.xs.push_back(x);
  }
  out.y = fn(out.xs);
  if (!r.defined()) r = mo::test::draw_upstream(c, out.y.shape());
  Tensor rr = r.to(dt);
  out.y.backward(ref ? rr.to(DType::f64) : on_gpu(rr, out.y.dtype(), c.upstream_offset));
  for (size_t i = 0; i < data.size(); ++i) out.grads.push_back(c.inputs[i].grad ? out.xs[i].grad() : Tensor());
  return out;
}

void expect_matches_cpu(const OpCase& c, DType dt) {
  SCOPED_TRACE(c.name + " [" + dtype_name(dt) + "]");
  const double tol = dt == DType::bf16 ? c.tol_bf16 : c.tol_f32;
  const std::vector<Tensor> data = mo::test::draw_inputs(c);
  Tensor r;
  Run ref = run_case(c, c.fn, data, r, dt, true);
  Run got = run_case(c, c.fn, data, r, dt, false);
  ASSERT_TRUE(got.y.is_cuda());
  EXPECT_TRUE(all_close(got.y, ref.y, tol, "forward"));
  for (size_t i = 0; i < data.size(); ++i) {
    if (!c.inputs[i].grad) continue;
    ASSERT_TRUE(got.grads[i].defined()) << "no CUDA gradient for input " << i;
    EXPECT_TRUE(got.grads[i].is_cuda());
    EXPECT_TRUE(all_close(got.grads[i], ref.grads[i], tol, "grad of input " + std::to_string(i)));
  }
  if (c.no_grad_same) {
    NoGradGuard ng;
    EXPECT_TRUE(bit_identical(c.fn(got.xs), got.y, "forward without grad"));
  }
  auto expect_same_bits = [&](const OpFn& fn, const std::string& what) {
    Run again = run_case(c, fn, data, r, dt, false);
    EXPECT_TRUE(bit_identical(again.y, got.y, "forward, " + what));
    for (size_t i = 0; i < data.size(); ++i)
      EXPECT_TRUE(bit_identical(again.grads[i], got.grads[i], "grad of input " + std::to_string(i) + ", " + what));
  };
  if (c.deterministic) expect_same_bits(c.fn, "second run");
  if (c.unfused) expect_same_bits(c.unfused, "unfused parts");
}

}  // namespace

class CudaOpTable : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaOpTable, MatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : GetParam().cuda_dtypes) expect_matches_cpu(GetParam(), dt);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaOpTable, ::testing::ValuesIn(mo::test::op_cases_with(mo::test::kCuda)),
                         mo::test::CaseName());
#endif

// ---- drop_path: the draw itself ------------------------------------------------------------------

TEST(CudaOps, CudaDropPathRowsFollowTheDraw) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // rows are all-zero exactly where drop_path_scales says so
  const int64_t B = 64;
  auto scales = drop_path_scales(B, 0.5, 1234, 7);
  Tensor x = Tensor::full({B, 5}, 1.0, DType::f32, gpu());
  auto y = drop_path(x, 0.5, true, 1234, 7).to_vector<float>();
  int dropped = 0;
  for (int64_t b = 0; b < B; ++b) {
    EXPECT_EQ(y[b * 5], scales[b]) << "row " << b;
    dropped += scales[b] == 0.0f;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, B);
}

// ---- conv2d: the CUDA entry points ---------------------------------------------------------------

#ifdef MO_WITH_CUDA
namespace {
Shape conv_out(const Shape& x, const Shape& w, int stride, int pad) {
  return {x[0], (x[1] + 2 * pad - w[2]) / stride + 1, (x[2] + 2 * pad - w[3]) / stride + 1, w[0]};
}
Tensor round_to(const Tensor& t, DType dt) { return dt == DType::f32 ? t : t.to(dt).to(DType::f32); }

// The CUDA entry points (cuda::conv2d_forward / conv2d_backward, im2col + cuBLASLt) called directly, without
// autograd, against the CPU op.
void conv_entry_case(const std::string& name, const Shape& xs, const Shape& ws, int stride, int pad, bool bias,
                     bool need_dx, DType dt, double tol, uint32_t seed) {
  SCOPED_TRACE(name + (dt == DType::bf16 ? " [bf16]" : " [f32]"));
  Tensor x = randn(xs, seed), w = randn(ws, seed + 1, DType::f32, 0.2), b = bias ? randn({ws[0]}, seed + 2) : Tensor();
  Shape ys = conv_out(xs, ws, stride, pad);
  Tensor r = round_to(randn(ys, seed + 3), dt);
  // CPU reference on the same (rounded) values
  Tensor xc = round_to(x, dt).clone().requires_grad_(), wc = round_to(w, dt).clone().requires_grad_();
  Tensor bc = bias ? round_to(b, dt).clone().requires_grad_() : Tensor();
  Tensor yc = conv2d(xc, wc, bc, stride, pad);
  yc.backward(r);
  // CUDA entry points
  Tensor xg = x.to(dt).to(gpu()), wg = w.to(dt).to(gpu()), bg = bias ? b.to(dt).to(gpu()) : Tensor();
  Tensor yg = Tensor::empty(ys, dt, gpu());
  cuda::conv2d_forward(xg, wg, bg, stride, pad, yg);
  Tensor dxg = need_dx ? Tensor::empty(xs, dt, gpu()) : Tensor();
  Tensor dwg = Tensor::empty(ws, dt, gpu());
  Tensor dbg = bias ? Tensor::empty({ws[0]}, dt, gpu()) : Tensor();
  cuda::conv2d_backward(r.to(dt).to(gpu()), xg, wg, stride, pad, dxg, dwg, dbg);
  EXPECT_TRUE(all_close(yg, yc, tol, "y"));
  if (need_dx) EXPECT_TRUE(all_close(dxg, xc.grad(), tol, "dx"));
  EXPECT_TRUE(all_close(dwg, wc.grad(), tol, "dw"));
  if (bias) EXPECT_TRUE(all_close(dbg, bc.grad(), tol, "db"));
}
void conv_entry_cases() {
  for (auto [dt, tol] : {std::pair<DType, double>{DType::f32, kTolF32}, {DType::bf16, kTolBf16}}) {
    conv_entry_case("3x3 s2 48->96", {2, 32, 32, 48}, {96, 48, 3, 3}, 2, 1, true, true, dt, tol, 300);
    conv_entry_case("stem 3->13 on 31x31, no dx", {2, 31, 31, 3}, {13, 3, 3, 3}, 2, 1, true, false, dt, tol, 310);
    conv_entry_case("2x2 s2 p0 on 7x7, 13 ch", {3, 7, 7, 13}, {8, 13, 2, 2}, 2, 0, false, true, dt, tol, 320);
    conv_entry_case("5x3 s1 p2", {1, 9, 6, 5}, {7, 5, 5, 3}, 1, 2, true, true, dt, tol, 330);
  }
}
}  // namespace
#endif

TEST(CudaOps, CudaConv2dEntryPoints) {
  if (!mo::cuda_available()) GTEST_SKIP();
#ifdef MO_WITH_CUDA
  conv_entry_cases();
#endif
}

// ---- strided copies (Tensor::contiguous / copy_ / to on CUDA) and the shape ops built on them ----------

TEST(CudaOps, CudaStridedCopiesMatchCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // the model's NCHW → NHWC input permute, a 5-d permute with odd sizes, a view that starts 3 elements in,
  // and copies that convert f32 <-> bf16 on the way
  struct Case {
    Shape shape;
    std::vector<int64_t> perm;
    int64_t offset;
  };
  for (const Case& c : {Case{{3, 3, 17, 13}, {0, 2, 3, 1}, 0}, Case{{2, 3, 5, 7, 11}, {4, 0, 3, 1, 2}, 0},
                        Case{{4, 9, 6}, {2, 0, 1}, 3}}) {
    int64_t n = 1;
    for (auto d : c.shape) n *= d;
    Tensor base = randn({n + c.offset}, 200 + static_cast<uint32_t>(c.offset));
    Tensor gbase = base.to(gpu());
    Tensor x = base.as_strided(c.shape, contiguous_strides(c.shape), c.offset);
    Tensor gx = gbase.as_strided(c.shape, contiguous_strides(c.shape), c.offset);
    Tensor want = permute(x, c.perm).contiguous();
    Tensor got = permute(gx, c.perm).contiguous();
    EXPECT_TRUE(bit_identical(got.to(Device::cpu()), want, "permute " + shape_str(c.shape)));
    Tensor got16 = permute(gx, c.perm).to(DType::bf16).contiguous();
    Tensor want16 = want.to(DType::bf16);
    EXPECT_TRUE(bit_identical(got16.to(Device::cpu()), want16, "permute to bf16 " + shape_str(c.shape)));
    Tensor back = permute(got16, c.perm).to(DType::f32).contiguous();  // strided bf16 -> f32
    EXPECT_TRUE(bit_identical(back.to(Device::cpu()), permute(want16, c.perm).to(DType::f32).contiguous(),
                              "bf16 strided to f32 " + shape_str(c.shape)));
  }
}

// ---- AdamW ---------------------------------------------------------------------------------------

TEST(CudaOps, CudaAdamWMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // Segments with odd offsets and sizes, one over the 65536-element chunk size, a tail left alone.
  const int64_t N = 74120;
  std::vector<AdamWSegment> segs{{0, 70001, true}, {70001, 13, false}, {70014, 4099, true}};
  for (DType gdt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(std::string("grad ") + dtype_name(gdt));
    Tensor p = randn({N}, 160), m = randn({N}, 161, DType::f32, 0.01), v = mo::test::rand_uniform({N}, 162, 0.0, 1e-3);
    Tensor pc = p.clone(), mc = m.clone(), vc = v.clone(), p16c = Tensor::zeros({N}, DType::bf16);
    Tensor pg = p.to(gpu()), mg = m.to(gpu()), vg = v.to(gpu()), p16g = Tensor::zeros({N}, DType::bf16, gpu());
    for (int64_t step = 1; step <= 3; ++step) {
      Tensor g = randn({N}, 170 + static_cast<uint64_t>(step), DType::f32, 0.1).to(gdt);
      AdamWHyper hp;
      hp.lr = 1e-2;
      hp.weight_decay = 0.05;
      hp.step = step;
      hp.grad_scale = 0.5;
      adamw_step(pc, g, mc, vc, segs, hp, p16c);
      adamw_step(pg, g.to(gpu()), mg, vg, segs, hp, p16g);
    }
    // Same fp32 operations in the same order: equal up to the last bit in practice; allow 1e-6.
    EXPECT_TRUE(all_close(pg, pc, 1e-6, "param"));
    EXPECT_TRUE(all_close(mg, mc, 1e-6, "m"));
    EXPECT_TRUE(all_close(vg, vc, 1e-6, "v"));
    EXPECT_TRUE(all_close(p16g, p16c, 1e-6, "param bf16"));
    // The tail outside every segment is untouched.
    auto pv = pg.to_vector<float>(), p0 = p.to_vector<float>();
    for (int64_t i = 74113; i < N; ++i) EXPECT_EQ(pv[i], p0[i]) << "element " << i;
  }
}

// ---- gradient accumulation into fp32 buffers ------------------------------------------------------

TEST(CudaOps, CudaAddBf16IntoF32) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor dst = randn({3, 1001}, 180), src = randn({3, 1001}, 181).to(DType::bf16);
  Tensor ref = dst.clone();
  ref.add_(src.to(DType::f32), 0.5);
  Tensor d = dst.to(gpu());
  d.add_(src.to(gpu()), 0.5);
  EXPECT_EQ(d.dtype(), DType::f32);
  EXPECT_TRUE(all_close(d, ref, 1e-6, "add_ bf16 into f32"));
}

// ---- errors ------------------------------------------------------------------------------------------

TEST(CudaOps, CudaRejectsFloat64WithClearMessage) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor x = randn({4, 8}, 250).to(DType::f64).to(gpu());
  try {
    gelu(x);
    FAIL() << "gelu accepted a float64 CUDA tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
  Tensor w = randn({3, 8}, 251).to(DType::f64).to(gpu());
  EXPECT_THROW(linear(x, w, Tensor()), Error);
}

// CudaOwnStream: the thread computes on a non-blocking stream of its own (the same one again for the same
// thread and device, another for another thread) and gets its stream back; work enqueued before a switch
// is complete and right when read after it, both ways.
TEST(CudaOps, CudaOwnStreamSwitchesOrdersAndRestores) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  void* before = cuda_current_stream();
  const std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.5f, 7.0f};
  Tensor a = Tensor::from_vector(v, {5}).to(Device::cuda(0));
  a.add_(a, 1.0);  // on the stream before: 2v
  void* own = nullptr;
  Tensor b;
  {
    CudaOwnStream scope(0);
    own = cuda_current_stream();
    EXPECT_NE(own, before);
    {
      CudaOwnStream again(0);
      EXPECT_EQ(cuda_current_stream(), own);
    }
    EXPECT_EQ(cuda_current_stream(), own);
    b = a.clone();
    b.add_(a, 2.0);  // on the own stream: 6v, after the 2v above
  }
  EXPECT_EQ(cuda_current_stream(), before);
  const std::vector<float> got = b.to(Device::cpu()).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(got[i], 6.0f * v[i]);
  void* other = nullptr;
  std::thread([&] {
    CudaOwnStream scope(0);
    other = cuda_current_stream();
  }).join();
  EXPECT_NE(other, own);
  EXPECT_NE(other, nullptr);
}

#ifdef MO_WITH_CUDA
#include <cuda_runtime_api.h>

// CudaRunAhead(1): once mark() returns, the GPU has finished everything queued before the previous mark.
TEST(CudaOps, CudaRunAheadWaitsForTheMarkDepthStepsAgo) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  EXPECT_THROW(CudaRunAhead(65), Error);
  CudaOwnStream scope(0);
  Tensor a = mo::test::rand_uniform({1024, 1024}, 7, -0.03, 0.03).to(Device::cuda(0));
  CudaRunAhead pace(1);
  std::vector<cudaEvent_t> done(6);
  for (size_t k = 0; k < done.size(); ++k) {
    Tensor c = a;
    for (int r = 0; r < 8; ++r) c = matmul(c, a);  // a few ms of work a step
    ASSERT_EQ(cudaEventCreateWithFlags(&done[k], cudaEventDisableTiming), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(done[k], static_cast<cudaStream_t>(cuda_current_stream())), cudaSuccess);
    pace.mark();
    if (k > 0) EXPECT_EQ(cudaEventQuery(done[k - 1]), cudaSuccess) << "step " << k - 1 << " after mark " << k;
  }
  cuda_synchronize();
  for (cudaEvent_t e : done) cudaEventDestroy(e);
  CudaRunAhead none(0);
  none.mark();  // no bound: nothing to wait for
}
#endif
