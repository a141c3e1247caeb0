// mpi_test_data_parallel.cpp: DataParallel under `mpirun -np 2` (CPU, MPI backend).
// The central check: 2 ranks × micro-batch B with gradient accumulation reach the same parameters
// after K steps as 1 rank × 2B (same global batch), within fp32 tolerance, with the replicas
// bit-identical; buckets are reduced from the backward hooks (overlap) and only on the last
// micro-step. Also: rank 0's initial parameters are broadcast, nn::AdamW's gradient arena is adopted,
// a parameter without gradient is reduced in finish(), and misuse is reported.
#include "dist/data_parallel.h"
#include "nn/adamw.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;
using mo::test::Data;
using mo::test::g_pg;
using mo::test::Mlp;

namespace {

constexpr int64_t kB = 4, kAccum = 2, kSteps = 5, kGlobal = 2 * kB * kAccum;

dist::DataParallelOptions small_buckets() {
  dist::DataParallelOptions o;
  o.first_bucket_bytes = 16;  // buckets {fc2.bias} {fc2.weight} {fc1.bias} {fc1.weight}
  o.bucket_bytes = 64;
  return o;
}

std::vector<float> flat_grads(const nn::Module& m) {
  std::vector<float> out;
  for (auto& p : m.parameters()) {
    auto v = p.grad().defined() ? p.grad().to_vector<float>() : std::vector<float>(p.numel(), 0.f);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

void zero_grads(nn::Module& m) {
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.grad().zero_();
}

// One reference step on one rank: micro-batches of 2B, the same accumulation.
void reference_backward(const Mlp& ref, const Data& data, int64_t step) {
  for (int64_t m = 0; m < kAccum; ++m)
    test::micro_loss(ref, data.rows(step * kGlobal + m * 2 * kB, 2 * kB), kAccum).backward();
}

// One distributed step on this rank: micro-batches of B, sync only on the last.
void distributed_backward(const Mlp& model, dist::DataParallel& ddp, const Data& data, int64_t step) {
  for (int64_t m = 0; m < kAccum; ++m) {
    ddp.set_sync(m == kAccum - 1);
    int64_t before = ddp.buckets_launched_in_backward();
    test::micro_loss(model, data.rows(step * kGlobal + m * 2 * kB + g_pg->rank() * kB, kB), kAccum).backward();
    if (m < kAccum - 1) EXPECT_EQ(ddp.buckets_launched_in_backward(), before) << "no all-reduce on no_sync steps";
  }
  ddp.finish();
}

}  // namespace

TEST(DataParallel, BroadcastsRankZeroParameters) {
  Mlp model(1000 + g_pg->rank());  // different initial values on each rank
  Mlp rank0(1000);
  dist::DataParallel ddp(g_pg, model.named_parameters());
  EXPECT_EQ(test::flat_params(model), test::flat_params(rank0));
  EXPECT_NO_THROW(ddp.check_replicas());

  dist::DataParallelOptions keep;
  keep.broadcast_parameters = false;
  Mlp other(2000 + g_pg->rank());
  dist::DataParallel no_bcast(g_pg, other.named_parameters(), keep);
  try {
    no_bcast.check_replicas();
    FAIL() << "replicas should differ";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 differ"), std::string::npos) << e.what();
  }
}

TEST(DataParallel, BucketsCoverTheArenaInReverseOrder) {
  Mlp model(1);
  dist::DataParallel ddp(g_pg, model.named_parameters(), small_buckets());
  const auto& bs = ddp.buckets();
  ASSERT_EQ(bs.size(), 4u);
  int64_t total = ddp.grad_arena().numel();
  EXPECT_EQ(total, model.num_parameters());
  EXPECT_EQ(bs.front().end, total);
  EXPECT_EQ(bs.back().begin, 0);
  for (size_t b = 0; b + 1 < bs.size(); ++b) EXPECT_EQ(bs[b].begin, bs[b + 1].end);
  for (auto& b : bs)
    for (size_t j = 0; j + 1 < b.params.size(); ++j) EXPECT_GT(b.params[j], b.params[j + 1]);
  EXPECT_EQ(bs.front().params.front(), 3);  // fc2.bias comes first out of backward
  // every gradient is a view of the arena
  auto ps = model.parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].grad().storage(), ddp.grad_arena().storage());
    EXPECT_EQ(ps[i].grad().offset(), ddp.offset(static_cast<int>(i)));
  }
}

TEST(DataParallel, TwoRanksMatchOneRankWithTwiceTheBatch) {
  Data data(kGlobal * kSteps);
  Mlp ref(1000);
  Mlp model(1000 + g_pg->rank());
  dist::DataParallel ddp(g_pg, model.named_parameters(), small_buckets());
  size_t nb = ddp.buckets().size();
  std::vector<Tensor> mom_ref, mom;
  for (int64_t step = 0; step < kSteps; ++step) {
    reference_backward(ref, data, step);
    distributed_backward(model, ddp, data, step);
    double gerr = test::max_rel_diff(flat_grads(model), flat_grads(ref));
    EXPECT_LT(gerr, 1e-5) << "averaged gradients at step " << step;
    test::sgd_step(ref, mom_ref, 0.2, 0.9);
    test::sgd_step(model, mom, 0.2, 0.9);
    zero_grads(ref);
    ddp.zero_grad();
  }
  auto p = test::flat_params(model), pr = test::flat_params(ref);
  double err = test::max_rel_diff(p, pr);
  EXPECT_LT(err, 1e-5);
  EXPECT_GT(test::max_rel_diff(p, test::flat_params(Mlp(1000))), 1e-2) << "the parameters should have moved";
  EXPECT_NO_THROW(ddp.check_replicas());
  // Every bucket was launched by the backward hooks of the last micro-step (overlap), none by finish().
  EXPECT_EQ(ddp.buckets_launched_in_backward(), static_cast<int64_t>(kSteps * nb));
  EXPECT_EQ(ddp.buckets_launched_in_finish(), 0);
  if (g_pg->rank() == 0) std::printf("[ 2x%lld vs 1x%lld ] max relative parameter difference after %lld steps: %.3g\n",
                                     (long long)kB, (long long)(2 * kB), (long long)kSteps, err);
}

TEST(DataParallel, AdoptsTheAdamWGradientArena) {
  Data data(kGlobal * 3);
  nn::AdamWOptions ao;
  ao.lr = 1e-2;
  Mlp ref(1000);
  nn::AdamW ref_opt(ref, Device::cpu(), DType::f32, ao);
  Mlp model(1000 + g_pg->rank());
  nn::AdamW opt(model, Device::cpu(), DType::f32, ao);
  dist::DataParallel ddp(g_pg, model.named_parameters(), small_buckets());
  ASSERT_TRUE(ddp.adopted_arena());
  EXPECT_EQ(ddp.grad_arena().storage(), opt.grads().storage());
  for (int64_t step = 0; step < 3; ++step) {
    reference_backward(ref, data, step);
    distributed_backward(model, ddp, data, step);
    ref_opt.step(ao.lr);
    opt.step(ao.lr);
    ref_opt.zero_grad();
    opt.zero_grad();  // zeroes the same arena as ddp.zero_grad()
  }
  EXPECT_LT(test::max_rel_diff(test::flat_params(model), test::flat_params(ref)), 1e-5);
  EXPECT_NO_THROW(ddp.check_replicas());
}

TEST(DataParallel, BroadcastsExtraStateSuchAsMasterWeights) {
  Mlp model(3000 + g_pg->rank());
  nn::AdamW opt(model, Device::cpu(), DType::f32);
  Tensor extra = Tensor::full({5}, 1.0 + g_pg->rank());
  dist::DataParallelOptions o;
  o.broadcast_also = {extra};
  dist::DataParallel ddp(g_pg, model.named_parameters(), o);
  EXPECT_EQ(extra.to_vector<float>(), std::vector<float>(5, 1.f));
  EXPECT_EQ(test::flat_params(model), test::flat_params(Mlp(3000)));
}

TEST(DataParallel, ParameterWithoutGradientIsReducedInFinish) {
  Data data(kGlobal);
  Mlp model(5, /*with_spare=*/true);
  dist::DataParallel ddp(g_pg, model.named_parameters(), small_buckets());
  distributed_backward(model, ddp, data, 0);  // the spare layer never enters the graph
  EXPECT_GE(ddp.buckets_launched_in_finish(), 1);
  for (auto& v : model.spare->weight->grad().to_vector<float>()) ASSERT_EQ(v, 0.f);
  Mlp ref(5, true);
  reference_backward(ref, data, 0);
  auto g = flat_grads(model), gr = flat_grads(ref);
  EXPECT_LT(test::max_rel_diff(g, gr), 1e-5);
  ddp.check_replicas();
}

TEST(DataParallel, GradientsResetToNoneAreAbsorbed) {
  Data data(kGlobal * 2);
  Mlp ref(9), model(9);
  dist::DataParallel ddp(g_pg, model.named_parameters());
  for (int64_t step = 0; step < 2; ++step) {
    for (auto& p : model.parameters()) Tensor(p).set_grad(Tensor());  // an optimizer's set_to_none
    for (auto& p : ref.parameters()) Tensor(p).set_grad(Tensor());
    reference_backward(ref, data, step);
    distributed_backward(model, ddp, data, step);
    EXPECT_LT(test::max_rel_diff(flat_grads(model), flat_grads(ref)), 1e-5) << step;
    for (auto& p : model.parameters()) EXPECT_EQ(p.grad().storage(), ddp.grad_arena().storage());
  }
}

TEST(DataParallel, MisuseIsReported) {
  Data data(kGlobal);
  Mlp model(11);
  dist::DataParallel ddp(g_pg, model.named_parameters(), small_buckets());
  auto batch = data.rows(g_pg->rank() * kB, kB);
  test::micro_loss(model, batch, 1).backward();  // sync on: every bucket launched
  EXPECT_THROW(ddp.set_sync(false), Error);
  EXPECT_THROW(ddp.zero_grad(), Error);
  try {
    test::micro_loss(model, batch, 1).backward();  // a second synchronised backward
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_sync"), std::string::npos) << e.what();
  }
  ddp.finish();
  ddp.zero_grad();
  // A model that differs between the ranks is refused by name.
  Mlp odd(12, /*with_spare=*/g_pg->rank() == 1);
  try {
    dist::DataParallel bad(g_pg, odd.named_parameters());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 has 6 parameters"), std::string::npos) << e.what();
  }
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false); }
