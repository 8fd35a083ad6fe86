// bench/bench_util.hpp — what every libipc benchmark shares: repetitions with
// a median, CPU pinning, the human table, and the machine-readable lines of
// SPEC.md "Benchmarks":
//   RESULT <bench> <metric> <value> <unit>
//   RATIO  <bench> <metric> <value>        (our cost / baseline cost, same run)
#pragma once

#include <sched.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace ipc::bench
