// omp_env.h: OpenMP's default wait policy lets idle team threads spin. When the cores are shared with
// the loader's worker threads (or other programs) a spinning thread holds a core that the thread the
// team waits for needs, and every parallel region can cost a scheduler time slice: on a 2-core machine
// CPU training ran 40x slower (30 s instead of 0.7 s for 16 small steps). libgomp reads
// OMP_WAIT_POLICY once, when the program loads, so the tools re-execute themselves with
// OMP_WAIT_POLICY=passive unless the variable is already set (set it to "active" to opt out).
#pragma once

namespace mo::tools {

// Call first thing in main() (or from a static initializer with argv = nullptr: the command line is
// then read from /proc/self/cmdline). Returns normally when nothing needs doing (or exec fails).
void ensure_passive_omp_wait(int argc, char** argv);

}  // namespace mo::tools
