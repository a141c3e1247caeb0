// stop_signals.cpp: signal handler + watchdog thread (see stop_signals.h).
#include "tools/common/stop_signals.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include "autograd/check.h"

namespace mo::tools {
namespace {

int g_pipe[2] = {-1, -1};
void (*g_on_stop)() = nullptr;
std::atomic<bool> g_saved{false};

void on_signal(int sig) {
  const int saved = errno;
  if (g_on_stop) g_on_stop();
  const auto b = static_cast<unsigned char>(sig);
  (void)!::write(g_pipe[1], &b, 1);  // non-blocking: a full pipe already holds a signal
  errno = saved;
}

const char* sig_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }

// The next signal number from the pipe, or 0 when `timeout_ms` (-1: none) passes first.
int next_signal(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int wait_ms = -1;
    if (timeout_ms >= 0) {
      using std::chrono::milliseconds;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return 0;
      wait_ms = static_cast<int>(left.count());
    }
    pollfd p{g_pipe[0], POLLIN, 0};
    const int n = ::poll(&p, 1, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0 ? 0 : SIGTERM;  // poll failing on our own pipe: act as if asked
    unsigned char b = 0;
    if (::read(g_pipe[0], &b, 1) == 1) return b;
  }
}

// A message on stderr with write(2): no stdio lock, which a thread blocked in stdio could be holding.
template <typename... Args>
void note(const char* format, Args... args) {
  char buf[512];
  const int n = std::snprintf(buf, sizeof buf, format, args...);
  if (n > 0) (void)!::write(2, buf, std::min(static_cast<size_t>(n), sizeof buf - 1));
}

void watchdog(std::string program, double grace_s) {
  const char* p = program.c_str();
  const int first = next_signal(-1);
  // The backstop should this thread itself get stuck (in write(), on a stderr pipe nobody reads):
  // SIGALRM's default action ends the process.
  ::alarm(static_cast<unsigned>(grace_s) + 10);
  note("%s: %s: stopping after the current step and saving (a second signal exits at once; exiting anyway in "
       "%g s)\n", p, sig_name(first), grace_s);
  const int second = next_signal(static_cast<int>(grace_s * 1000));
  if (second != 0) {
    note("%s: %s again: exiting now%s\n", p, sig_name(second),
         g_saved.load() ? "" : " without saving (the checkpoints already written are kept)");
    ::_exit(128 + second);
  }
  if (g_saved.load())
    note("%s: the run stopped and saved, but the program did not end within %g s of %s (a thread that cannot be "
         "joined): exiting now\n", p, grace_s, sig_name(first));
  else
    note("%s: the run did not stop within %g s of %s (config key 'train.stop_timeout_s'): a step, a read or a save "
         "never finished; exiting without saving (the checkpoints already written are kept)\n", p, grace_s,
         sig_name(first));
  ::_exit(128 + first);
}

}  // namespace

void install_stop_signals(const char* program, double grace_s, void (*on_stop)()) {
  MO_CHECK(g_pipe[0] < 0, "install_stop_signals: already installed");
  MO_CHECK(::pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "cannot create the signal pipe: {}", std::strerror(errno));
  // The watchdog blocks in poll(), so only the writing end needs to be non-blocking.
  ::fcntl(g_pipe[0], F_SETFL, ::fcntl(g_pipe[0], F_GETFL) & ~O_NONBLOCK);
  g_on_stop = on_stop;
  try {
    std::thread(watchdog, std::string(program), grace_s).detach();
  } catch (const std::system_error& e) {
    MO_FAIL("cannot start the thread that bounds the stop on SIGINT/SIGTERM: {}", e.what());
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM})
    MO_CHECK(::sigaction(sig, &sa, nullptr) == 0, "cannot install the {} handler: {}", sig_name(sig),
             std::strerror(errno));
}

void stop_signals_saved() { g_saved.store(true); }

}  // namespace mo::tools
