// bench/bench_util.hpp — what every libipc benchmark shares: repetitions with
// a median, CPU pinning, the human table, and the machine-readable lines of
// docs/benchmarks.md:
//   RESULT <bench> <metric> <value> <unit>
//   RATIO  <bench> <metric> <value>        (our cost / baseline cost, same run)
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace ipc::bench {

struct Args {
  bool quick = false;
  int reps = 7;
};

inline Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      a.quick = true;
      a.reps = 5;
    } else if (std::strcmp(argv[i], "--help") == 0) {
      std::printf("usage: %s [--quick]\n  --quick  short run (< 20 s), 5 repetitions\n", argv[0]);
      std::exit(0);
    } else {
      std::fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", argv[0], argv[i]);
      std::exit(2);
    }
  }
  return a;
}

inline int cpu_count() { return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)); }

// Pins the calling thread to `cpu` (modulo the CPU count). Returns the CPU used, -1 on failure.
inline int pin_to_cpu(int cpu) {
  int n = cpu_count();
  if (n <= 0) return -1;
  cpu %= n;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0 ? cpu : -1;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Runs fn() `reps` times; fn returns a figure (e.g. ns per op); returns the median.
inline double median_of(int reps, const std::function<double()>& fn) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) v.push_back(fn());
  return median(v);
}

inline double now_ns() {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

inline void result(const char* bench, const std::string& metric, double value, const char* unit) {
  std::printf("RESULT %s %s %.4g %s\n", bench, metric.c_str(), value, unit);
}

inline void ratio(const char* bench, const std::string& metric, double ours, double baseline) {
  std::printf("RATIO  %s %s %.3f\n", bench, metric.c_str(), baseline > 0 ? ours / baseline : 0.0);
}

// Cleanup on every exit path (normal, error, signal, watchdog alarm): shm
// files to unlink and a child to kill, in async-signal-safe globals, so an
// interrupted or hung benchmark never leaves anything in /dev/shm.
namespace cleanup {
inline char g_name[32] = "bench";
inline char g_paths[8][512];                  // unlinked on exit
inline volatile sig_atomic_t g_child = 0;     // pid of the running child, killed on error
inline volatile sig_atomic_t g_is_child = 0;  // set in the child: it leaves cleanup to the parent
inline void (*g_on_die)() = nullptr;          // extra step before a fatal exit (e.g. flag failure)

inline void now() {
  if (g_is_child) return;
  if (g_child > 0) ::kill(static_cast<pid_t>(g_child), SIGKILL);
  for (auto& p : g_paths)
    if (p[0] != '\0') ::unlink(p);
}

inline void on_signal(int sig) {
  if (!g_is_child) {
    (void)!::write(2, g_name, std::strlen(g_name));
    const char msg[] = ": interrupted or watchdog expired; cleaned up\n";
    (void)!::write(2, msg, sizeof msg - 1);
  }
  now();
  ::_exit(128 + sig);
}

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "%s%s: %s\n", g_name, g_is_child ? " (child)" : "", what.c_str());
  if (g_on_die) g_on_die();
  now();
  ::_exit(1);
}

// Names the benchmark and installs the handlers (SIGINT, SIGTERM, SIGHUP, SIGALRM).
inline void install(const char* name) {
  std::snprintf(g_name, sizeof g_name, "%s", name);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) ::sigaction(sig, &sa, nullptr);
}

// Registers a file to unlink on any exit (at most 8).
inline void add_path(const std::string& path) {
  for (auto& p : g_paths)
    if (p[0] == '\0') {
      if (path.size() >= sizeof p) die("path too long: " + path);
      std::memcpy(p, path.c_str(), path.size() + 1);
      return;
    }
  die("too many cleanup paths");
}

// Forks a child that runs body() and exits 0 (body dies on error). The
// parent registers it for cleanup and arms a watchdog alarm of `seconds`.
template <typename Body>
pid_t fork_watched(unsigned seconds, Body body) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    g_is_child = 1;
    body();
    ::_exit(0);
  }
  g_child = pid;
  ::alarm(seconds);
  return pid;
}

// Waits for the child of fork_watched(); dies unless it exited with 0.
inline void reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die(std::string("waitpid: ") + std::strerror(errno));
  }
  ::alarm(0);
  g_child = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    die("child process failed (status " + std::to_string(status) + ")");
}

// After a normal unlink: nothing left to clean.
inline void forget_paths() {
  for (auto& p : g_paths) p[0] = '\0';
}
}  // namespace cleanup

}  // namespace ipc::bench
