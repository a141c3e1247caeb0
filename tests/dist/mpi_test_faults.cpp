// mpi_test_faults.cpp: a dead, hung, stopped or failing rank ends the whole job with an error that
// names it, within a bound, never a hang without end.
//
// ctest starts this program under `mpirun -np 2` like every mpi_test_*; rank 0 then runs each
// scenario as a child job, `mpirun -np 2 <this program> --scenario=NAME` under `timeout` (with the
// launcher's environment removed so the child mpirun starts afresh), and checks the exit status,
// the elapsed time and the output. Rank 1 of the outer job has nothing to do. In every scenario the
// two ranks train a small MLP with DataParallel (MPI backend); at step 3 rank 1 misbehaves: killed,
// stopped (SIGSTOP), hung in its own code, or failing with an error (ending the job itself, or
// letting the error unwind out of the group's scope).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist/data_parallel.h"
#include "tests/dist/dist_test_util.h"

extern char** environ;

using namespace mo;

namespace {

constexpr int kBoundS = 90;  // a scenario must end within this (the faults are detected in ~2-10 s)

int run_scenario(const std::string& what) {
  auto pg = dist::init();
  int rank = pg->rank();
  test::Data data(64);
  test::Mlp model(1);
  dist::DataParallel ddp(pg, model.named_parameters());
  try {
    for (int step = 0; step < 20; ++step) {
      for (int m = 0; m < 2; ++m) {
        ddp.set_sync(m == 1);
        test::micro_loss(model, data.rows((step % 4) * 16 + m * 8 + rank * 4, 4), 2).backward();
        if (rank == 1 && step == 3 && m == 0) {
          std::fprintf(stderr, "scenario %s: rank 1 misbehaves now\n", what.c_str());
          std::fflush(stderr);
          if (what == "kill") raise(SIGKILL);
          if (what == "stop") raise(SIGSTOP);
          if (what == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
          if (what == "throw" || what == "unwind") throw Error("injected failure in the training step");
        }
      }
      ddp.finish();
      ddp.zero_grad();
    }
  } catch (const std::exception& e) {
    // "throw": end the job at once with the message (dist::abort_job). "unwind": let the error leave
    // the scope of the group, as in a program that catches it in main().
    if (what == "unwind") throw;
    dist::abort_job(e.what(), 1);
  }
  std::printf("scenario %s: rank %d done\n", what.c_str(), rank);
  return 0;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, n) : std::string();
}

// Remove the outer launcher's variables so that the child mpirun starts its own job.
void clean_launcher_env() {
  std::vector<std::string> names;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    std::string k = kv.substr(0, kv.find('='));
    for (const char* p : {"OMPI_", "PMIX_", "OPAL_", "ORTE_", "PMI_", "HYDRA_"})
      if (k.rfind(p, 0) == 0) names.push_back(k);
  }
  for (auto& k : names) unsetenv(k.c_str());
}

struct Outcome {
  int status;  // exit status of timeout+mpirun (124/137: the bound was hit)
  double seconds;
  std::string output;
};

Outcome run_child(const std::string& scenario) {
  std::string log = test::temp_dir("dist_faults") + "/" + scenario + ".log";
  std::string cmd = fmt::format(
      "env MO_DIST_BACKEND=mpi MO_DIST_TIMEOUT=10 MO_DIST_HEARTBEAT_TIMEOUT=5 OMP_NUM_THREADS=1 "
      "timeout -k 10 {} mpirun --allow-run-as-root --oversubscribe -np 2 {} --scenario={} > {} 2>&1",
      kBoundS, self_path(), scenario, log);
  auto t0 = std::chrono::steady_clock::now();
  int raw = std::system(cmd.c_str());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  Outcome o{WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw), s, ss.str()};
  std::printf("---- scenario %s: exit %d after %.1f s; output:\n%s---- end of %s\n", scenario.c_str(), o.status, s,
              o.output.c_str(), scenario.c_str());
  return o;
}

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

void expect_failure_naming_rank1(const Outcome& o, const std::vector<std::string>& any_of) {
  EXPECT_NE(o.status, 0) << "the job must fail";
  // timeout exits 124 (or 137 after -k); mpirun itself may also exit 137 for a rank killed by SIGKILL.
  EXPECT_NE(o.status, 124) << "the job hung until timeout killed it";
  EXPECT_LT(o.seconds, kBoundS - 1) << "the job hung until timeout killed it";
  bool named = false;
  for (auto& s : any_of) named = named || has(o.output, s);
  EXPECT_TRUE(named) << "no message naming rank 1 (expected one of: " << fmt::format("{}", fmt::join(any_of, " | "))
                     << ")";
}

}  // namespace

TEST(Faults, CleanRunExitsZero) {
  auto o = run_child("ok");
  EXPECT_EQ(o.status, 0);
  EXPECT_TRUE(has(o.output, "scenario ok: rank 0 done"));
  EXPECT_TRUE(has(o.output, "scenario ok: rank 1 done"));
}

TEST(Faults, KilledRankEndsTheJob) {
  auto o = run_child("kill");
  // Under mpirun the launcher itself notices the death first and names the rank; under other
  // launchers the survivor's heartbeat check does.
  expect_failure_naming_rank1(o, {"process rank 1", "rank 1 has sent no heartbeat"});
}

TEST(Faults, StoppedRankIsNamedByTheHeartbeat) {
  auto o = run_child("stop");
  expect_failure_naming_rank1(o, {"[mo.dist] rank 0: rank 1 has sent no heartbeat"});
}

TEST(Faults, HungRankIsNamedAtTheCollectiveDeadline) {
  auto o = run_child("hang");
  expect_failure_naming_rank1(o, {"have not reached collective"});
  EXPECT_TRUE(has(o.output, "  rank 1: issued")) << "the lagging rank is listed";
}

TEST(Faults, ErrorOnOneRankEndsTheJobWithItsMessage) {
  auto o = run_child("throw");
  expect_failure_naming_rank1(o, {"[mo.dist] rank 1: injected failure in the training step"});
}

TEST(Faults, ErrorLeavingTheGroupScopeEndsTheJob) {
  // The group is destroyed while the error unwinds: no goodbye (the peer waits in a collective for
  // this rank); the peer is told and ends the job if the launcher has not already.
  auto o = run_child("unwind");
  expect_failure_naming_rank1(o, {"scenario: error: injected failure"});
  EXPECT_LT(o.seconds, 30);
}

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--scenario=", 0) == 0) {
      try {
        return run_scenario(a.substr(11));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "scenario: error: %s\n", e.what());
        return 1;
      }
    }
  }
  // The outer job: rank 0 drives the scenarios; other ranks have nothing to do (no MPI needed).
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  if (r && std::string(r) != "0") return 0;
  clean_launcher_env();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
