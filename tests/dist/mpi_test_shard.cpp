// mpi_test_shard.cpp: sharding and exact distributed evaluation under `mpirun -np 2`.
// The shards of every rank are disjoint and together cover the data set (checked across the real
// ranks with all-gathers, for dist/shard.h and, when the tests link mo_data (MO_DIST_TESTS_LINK_DATA),
// for the loader's data::DistributedSampler; for other world sizes by enumeration); padded positions are skipped so
// that summed evaluation counts equal the single-process counts exactly; the global-batch and resume
// rules throw with the numbers in the message.
#include <set>

#include "dist/metrics.h"
#ifdef MO_DIST_TESTS_LINK_DATA  // tests/CMakeLists.txt links tests/dist with mo_dist and mo_nn only
#include "data/sampler.h"
#endif
#include "dist/shard.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;
using mo::test::g_pg;

namespace {
// The "epoch order": a fixed permutation of n samples (the same on every rank).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed) {
  std::vector<int64_t> o(n);
  for (int64_t i = 0; i < n; ++i) o[i] = i;
  std::mt19937_64 g(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(o[i], o[g() % (i + 1)]);
  return o;
}
}  // namespace

TEST(Shard, RanksAreDisjointAndCoverTheData) {
  for (int64_t n : {1, 2, 7, 10, 1001}) {
    auto order = epoch_order(n, 42 + n);
    auto pos = dist::shard_positions(n, g_pg->rank(), g_pg->world_size());
    ASSERT_EQ(static_cast<int64_t>(pos.size()), dist::padded_shard_size(n, 2));
    // Real samples of this rank, as indices of the data set; -1 for padding.
    std::vector<int64_t> mine;
    for (int64_t p : pos) mine.push_back(dist::is_padding(p, n) ? -1 : order[dist::position_to_order_index(p, n)]);
    EXPECT_EQ(std::count_if(mine.begin(), mine.end(), [](int64_t v) { return v >= 0; }),
              dist::real_shard_size(n, g_pg->rank(), 2));
    // Gather every rank's list (same length on both ranks) and check disjoint + covering.
    std::vector<int64_t> all(mine.size() * 2);
    g_pg->all_gather_bytes(mine.data(), mine.size() * sizeof(int64_t), all.data());
    std::set<int64_t> seen;
    for (int64_t v : all) {
      if (v < 0) continue;
      EXPECT_TRUE(seen.insert(v).second) << "sample " << v << " on two ranks (n " << n << ")";
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), n) << "n " << n;
  }
}

#ifdef MO_DIST_TESTS_LINK_DATA
TEST(Shard, LoaderSamplerShardsAreDisjointAndCover) {
  for (int64_t n : {1, 7, 10, 1001})
    for (int64_t epoch : {0, 1, 5}) {
      data::DistributedSampler sampler(n, g_pg->rank(), g_pg->world_size(), /*shuffle=*/true, 42);
      auto refs = sampler.epoch(epoch);
      ASSERT_EQ(static_cast<int64_t>(refs.size()), dist::padded_shard_size(n, 2));
      std::vector<int64_t> mine;
      for (size_t j = 0; j < refs.size(); ++j) {
        // The loader's positions follow the rule of dist/shard.h, so is_padding applies to them.
        EXPECT_EQ(refs[j].position, dist::shard_position(static_cast<int64_t>(j), g_pg->rank(), 2));
        mine.push_back(dist::is_padding(refs[j].position, n) ? -1 : refs[j].index);
      }
      std::vector<int64_t> all(mine.size() * 2);
      g_pg->all_gather_bytes(mine.data(), mine.size() * sizeof(int64_t), all.data());
      std::set<int64_t> seen;
      for (int64_t v : all) {
        if (v < 0) continue;
        EXPECT_TRUE(seen.insert(v).second) << "sample " << v << " twice (n " << n << ", epoch " << epoch << ")";
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), n) << "n " << n << ", epoch " << epoch;
    }
}
#endif

TEST(Shard, OtherWorldSizesByEnumeration) {
  for (int world = 1; world <= 9; ++world)
    for (int64_t n = 1; n <= 40; ++n) {
      std::vector<int> hits(n, 0);
      int64_t real = 0, evaluated = 0;
      for (int r = 0; r < world; ++r) {
        for (int64_t p : dist::shard_positions(n, r, world)) {
          if (!dist::is_padding(p, n)) hits[p]++;
        }
        real += dist::real_shard_size(n, r, world);
        auto [b, e] = dist::eval_range(n, r, world);
        EXPECT_LE(e - b, (n + world - 1) / world);
        EXPECT_EQ(b, evaluated) << "eval ranges are contiguous";
        evaluated = e;
      }
      EXPECT_EQ(real, n);
      EXPECT_EQ(evaluated, n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n " << n << " world " << world << " i " << i;
    }
  EXPECT_THROW(dist::shard_positions(10, 2, 2), Error);
}

TEST(Shard, EvaluationCountsAreExact) {
  // 1001 samples whose "prediction is right" flags and losses are fixed; padding must not count twice.
  const int64_t n = 1001;
  std::vector<int> right(n);
  std::vector<double> loss(n);
  std::mt19937_64 g(5);
  dist::EvalCounts truth;
  for (int64_t i = 0; i < n; ++i) {
    right[i] = static_cast<int>(g() % 3 == 0);
    loss[i] = static_cast<double>(g() % 1000) / 64.0;  // exact binary fractions
    truth.samples++;
    truth.top1 += right[i];
    truth.top5 += right[i] || i % 2;
    truth.loss_sum += loss[i];
  }
  auto order = epoch_order(n, 9);
  // (a) the padded sampler, skipping padding
  dist::EvalCounts c;
  for (int64_t p : dist::shard_positions(n, g_pg->rank(), 2)) {
    if (dist::is_padding(p, n)) continue;
    int64_t i = order[p];
    c.samples++;
    c.top1 += right[i];
    c.top5 += right[i] || i % 2;
    c.loss_sum += loss[i];
  }
  auto sum = dist::all_reduce_counts(*g_pg, c);
  EXPECT_EQ(sum.samples, n);
  EXPECT_EQ(sum.top1, truth.top1);
  EXPECT_EQ(sum.top5, truth.top5);
  EXPECT_EQ(sum.loss_sum, truth.loss_sum);
  EXPECT_DOUBLE_EQ(sum.top1_pct(), truth.top1_pct());
  // (b) contiguous evaluation ranges
  auto [b, e] = dist::eval_range(n, g_pg->rank(), 2);
  dist::EvalCounts d;
  for (int64_t i = b; i < e; ++i) {
    d.samples++;
    d.top1 += right[i];
    d.top5 += right[i] || i % 2;
    d.loss_sum += loss[i];
  }
  auto sum2 = dist::all_reduce_counts(*g_pg, d);
  EXPECT_EQ(sum2.samples, n);
  EXPECT_EQ(sum2.top1, truth.top1);
  EXPECT_EQ(sum2.top5, truth.top5);
  EXPECT_EQ(sum2.loss_sum, truth.loss_sum);
  EXPECT_EQ(dist::mean_over_ranks(*g_pg, 1.0 + g_pg->rank()), 1.5);
}

TEST(Shard, GlobalBatchAndResumeRules) {
  // MambaOut: 4096 = 8 GPUs × 128 × 4; on 2 ranks with 256 per GPU: 8 accumulation steps.
  EXPECT_EQ(dist::accumulation_steps(4096, 8, 128), 4);
  EXPECT_EQ(dist::accumulation_steps(4096, 2, 256), 8);
  EXPECT_EQ(dist::accumulation_steps(4096, 1, 256), 16);
  try {
    dist::accumulation_steps(4096, 3, 256);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4096 is not a multiple of 3 ranks"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(dist::check_resume_world_size(2, 2, true));
  EXPECT_NO_THROW(dist::check_resume_world_size(8, 2, false));
  try {
    dist::check_resume_world_size(8, 2, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("by 8 ranks and cannot resume on 2"), std::string::npos) << e.what();
  }
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false); }
