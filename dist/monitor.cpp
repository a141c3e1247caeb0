// monitor.cpp: the heartbeat thread of monitor.h. Messages are three int64 {issued, completed, kind}
// with kind 0 = alive, 1 = goodbye, 2 = leaving because of an error; MPI's non-overtaking rule puts a goodbye after every heartbeat
// from the same peer. At most one send and one receive are outstanding per peer, so a dead peer
// never makes requests pile up.
#ifdef MO_WITH_MPI
#include "dist/monitor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "dist/mpi_runtime.h"

namespace mo::dist {

namespace {
constexpr int kTag = 7001;
constexpr int64_t kAlive = 0, kBye = 1, kFailed = 2;
constexpr double kFailGraceS = 2.0;  // lets a failing rank print its error before the job is ended
}  // namespace

double Monitor::now() const {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Monitor::Monitor(MPI_Comm comm, double silence_timeout_s)
    : comm_(comm), silence_timeout_s_(silence_timeout_s), interval_s_(std::clamp(silence_timeout_s / 8, 0.05, 1.0)) {
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &world_));
  peers_.resize(world_);
  double t = now();
  for (int p = 0; p < world_; ++p) {
    peers_[p].last_heard = t;
    if (p == rank_) continue;
    MPI_CHECK(MPI_Irecv(peers_[p].rbuf, 3, MPI_INT64_T, p, kTag, comm_, &peers_[p].rreq));
  }
  thread_ = std::thread([this] { run(); });
}

void Monitor::leave_on_error() {
  failing_ = true;
  if (thread_.joinable()) thread_.join();
}

Monitor::~Monitor() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  MPI_Comm_free(&comm_);
}

void Monitor::end_collective(uint64_t seq) {
  uint64_t cur = completed_.load();
  while (seq > cur && !completed_.compare_exchange_weak(cur, seq)) {
  }
}

void Monitor::poll_receives(double t) {
  for (int p = 0; p < world_; ++p) {
    Peer& q = peers_[p];
    if (p == rank_ || q.rreq == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_CHECK(MPI_Test(&q.rreq, &done, MPI_STATUS_IGNORE));
    if (!done) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      q.issued = q.rbuf[0];
      q.completed = q.rbuf[1];
      q.last_heard = t;
      q.said_bye = q.rbuf[2] == kBye;
      if (q.rbuf[2] == kFailed && q.failed_at < 0) q.failed_at = t;
    }
    if (!q.said_bye && q.failed_at < 0) MPI_CHECK(MPI_Irecv(q.rbuf, 3, MPI_INT64_T, p, kTag, comm_, &q.rreq));
  }
}

// Sends {issued, completed, kind} to peer p unless the previous send is still in flight.
bool Monitor::try_send(int p, int64_t kind) {
  Peer& q = peers_[p];
  if (q.sreq != MPI_REQUEST_NULL) {
    int done = 0;
    MPI_CHECK(MPI_Test(&q.sreq, &done, MPI_STATUS_IGNORE));
    if (!done) return false;
  }
  q.sbuf[0] = static_cast<int64_t>(issued_.load());
  q.sbuf[1] = static_cast<int64_t>(completed_.load());
  q.sbuf[2] = kind;
  MPI_CHECK(MPI_Isend(q.sbuf, 3, MPI_INT64_T, p, kTag, comm_, &q.sreq));
  return true;
}

void Monitor::run() {
  double next_beat = 0;
  while (true) {
    double t = now();
    if (failing_) {  // tell every peer (after its previous message went out, for at most 2 s), then stop
      double until = t + 2.0;
      std::vector<bool> told(world_, false);
      for (int left = world_ - 1; left > 0 && now() < until;) {
        for (int p = 0; p < world_; ++p) {
          if (p == rank_ || told[p] || !try_send(p, kFailed)) continue;
          told[p] = true;
          --left;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      return;
    }
    poll_receives(t);
    bool stopping = stopping_.load();
    if (t >= next_beat || stopping) {
      for (int p = 0; p < world_; ++p) {
        Peer& q = peers_[p];
        if (p == rank_ || q.sent_bye) continue;
        if (stopping) {
          q.sent_bye = try_send(p, kBye);
        } else {
          try_send(p, kAlive);
        }
      }
      next_beat = t + interval_s_;
    }
    // A peer that said goodbye is done; one leaving because of an error ends the job; any other must
    // keep talking.
    for (int p = 0; p < world_; ++p) {
      const Peer& q = peers_[p];
      if (p == rank_ || q.said_bye) continue;
      if (q.failed_at >= 0) {
        if (t - q.failed_at > kFailGraceS)
          abort_job(fmt::format("rank {} left because of an error (its message is in its output); ending the job",
                                p));
        continue;
      }
      if (t - q.last_heard > silence_timeout_s_) {
        abort_job(fmt::format(
            "rank {} has sent no heartbeat for {:.1f} s (limit {:.0f} s, MO_DIST_HEARTBEAT_TIMEOUT): it died, was "
            "stopped, or its host is unreachable; aborting the job",
            p, t - q.last_heard, silence_timeout_s_));
      }
    }
    if (stopping) {
      bool all_done = true;
      for (int p = 0; p < world_; ++p) {
        Peer& q = peers_[p];
        if (p == rank_) continue;
        if (!q.said_bye || !q.sent_bye) {
          all_done = false;
          continue;
        }
        if (q.sreq != MPI_REQUEST_NULL) {
          int done = 0;
          MPI_CHECK(MPI_Test(&q.sreq, &done, MPI_STATUS_IGNORE));
          if (!done) all_done = false;
        }
      }
      if (all_done) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(stopping ? 2 : 20));
  }
}

std::string Monitor::describe_peers(uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  double t = now();
  std::string behind, others;
  for (int p = 0; p < world_; ++p) {
    if (p == rank_) continue;
    const Peer& q = peers_[p];
    std::string line = fmt::format("  rank {}: issued {} collectives, completed {}, last heard {:.1f} s ago{}\n", p,
                                   q.issued, q.completed, t - q.last_heard, q.said_bye ? " (has shut down)" : "");
    if (q.issued < static_cast<int64_t>(seq)) {
      behind += line;
    } else {
      others += line;
    }
  }
  std::string out;
  if (!behind.empty()) {
    out += fmt::format("ranks that have not reached collective #{} (hung or stopped before it):\n{}", seq, behind);
  } else {
    out += fmt::format("every rank issued collective #{}; the holdup is in the transport (network, NCCL)\n", seq);
  }
  if (!others.empty()) out += "other ranks:\n" + others;
  return out;
}

void Monitor::collective_timeout(const std::string& what, uint64_t seq, double waited_s) const {
  abort_job(fmt::format("{} (collective #{}) did not complete within {:.1f} s (MO_DIST_TIMEOUT).\n{}", what, seq,
                        waited_s, describe_peers(seq)));
}

}  // namespace mo::dist
#endif  // MO_WITH_MPI
