// monitor.h: liveness and progress of every rank, so that a fault ends the job with a message that
// names the rank at fault instead of leaving the others waiting forever.
//
// A thread sends every peer a heartbeat {collectives issued, collectives completed} each interval
// on its own communicator and watches theirs. A peer silent for `silence_timeout_s` (killed,
// stopped, host gone) is reported and the job aborted. When one of this rank's collectives misses
// its deadline, collective_timeout() names the ranks that have not issued it yet (hung in compute or
// elsewhere) from their last heartbeats. At shutdown the thread exchanges a goodbye with every peer
// so no message is left in flight before MPI_Finalize. A rank that leaves because of an error
// (leave_on_error) tells the peers instead, and they end the job after a short grace period in which
// that rank prints its error. Needs MPI_THREAD_MULTIPLE.
// Cost: 2·(world−1) tiny messages per rank per interval (fine up to a few hundred ranks).
#pragma once
#ifdef MO_WITH_MPI
#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mo::dist {

class Monitor {
 public:
  // `comm` is a communicator for heartbeats only (owned and freed by the monitor).
  Monitor(MPI_Comm comm, double silence_timeout_s);
  ~Monitor();  // goodbye with every peer, then the thread ends
  // This rank is leaving because of an error: tell the peers (they end the job) without waiting for
  // them. Then destroy the monitor; MPI must not be finalised.
  void leave_on_error();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // This rank's collectives are numbered from 1 in issue order (every group of the process).
  uint64_t begin_collective() { return issued_.fetch_add(1) + 1; }
  void end_collective(uint64_t seq);  // called in order of completion (= issue order)

  // One line per peer: how far it got and when it was last heard; ranks behind `seq` come first.
  std::string describe_peers(uint64_t seq) const;
  [[noreturn]] void collective_timeout(const std::string& what, uint64_t seq, double waited_s) const;

 private:
  struct Peer {
    int64_t issued = 0, completed = 0;
    double last_heard = 0;  // seconds on the monitor clock
    bool said_bye = false, sent_bye = false;
    double failed_at = -1;  // when it said it is leaving because of an error
    MPI_Request rreq = MPI_REQUEST_NULL, sreq = MPI_REQUEST_NULL;
    int64_t rbuf[3] = {0, 0, 0}, sbuf[3] = {0, 0, 0};
  };
  void run();
  void poll_receives(double now);
  bool try_send(int p, int64_t kind);
  double now() const;

  MPI_Comm comm_;
  int rank_ = 0, world_ = 1;
  double silence_timeout_s_, interval_s_;
  std::atomic<uint64_t> issued_{0}, completed_{0};
  mutable std::mutex mu_;  // guards the progress fields of peers_ read by describe_peers
  std::vector<Peer> peers_;
  std::atomic<bool> stopping_{false}, failing_{false};
  std::thread thread_;
};

}  // namespace mo::dist
#endif  // MO_WITH_MPI
