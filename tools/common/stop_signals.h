// stop_signals.h: how mo_train ends on SIGINT / SIGTERM, within a bounded time whatever it is doing.
// The first signal asks the run to stop at the next step boundary (the callback, e.g.
// Trainer::request_stop: it saves a checkpoint and returns); a watchdog thread then gives it `grace_s`
// seconds, after which it ends the process with status 128 + signal and says why (a step or a read
// that never finished: the checkpoints already written are kept). A second signal ends it at once,
// with the same status. The handler only sets the flag and writes the signal number to a pipe
// (async-signal-safe); the watchdog thread reads the pipe and does the rest, printing with write(2)
// rather than stdio (whose locks a stuck thread may hold), with alarm() as the backstop should it
// block all the same.
#pragma once

namespace mo::tools {

// Installs the handlers for SIGINT and SIGTERM and starts the watchdog thread (once per process).
// `on_stop` must be async-signal-safe. `program` prefixes the messages.
void install_stop_signals(const char* program, double grace_s, void (*on_stop)());
// The run has stopped and saved: if the process still does not end within the grace time (a thread
// that cannot be joined), the watchdog says so instead of "exiting without saving".
void stop_signals_saved();

}  // namespace mo::tools
