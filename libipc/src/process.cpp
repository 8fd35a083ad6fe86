#include "ipc/detail/process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace ipc::detail {
namespace {

void after_fork_in_child() {
  // Only the forking thread survives; its cached pid and tid are now wrong.
  t_self_cache = {0, 0};
  g_self_token_cache = 0;
}

const int g_atfork_registered = [] {
  pthread_atfork(nullptr, nullptr, &after_fork_in_child);
  return 0;
}();

// Parses state (field 3) and starttime (field 22) from /proc/<pid>/stat.
// Returns false when the file cannot be read.
bool read_stat(pid_t pid, char* state, std::uint64_t* start_time, int* err) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) {
    *err = n < 0 ? errno : ENOENT;
    return false;
  }
  buf[n] = '\0';
  // comm (field 2) may hold spaces and ')': parse after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p || p[1] != ' ') {
    *err = EINVAL;
    return false;
  }
  p += 2;
  *state = *p;
  // Fields 3..22: skip 19 spaces from field 3 to reach field 22.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (!p) {
      *err = EINVAL;
      return false;
    }
    ++p;
  }
  *start_time = std::strtoull(p, nullptr, 10);
  return true;
}

}  // namespace

ThreadIdentity load_self() noexcept {
  (void)g_atfork_registered;
  t_self_cache.pid = static_cast<std::uint32_t>(::getpid());
  t_self_cache.tid = static_cast<std::uint32_t>(::gettid());
  return t_self_cache;
}

std::uint64_t load_self_token() noexcept {
  std::uint64_t token = process_token(static_cast<pid_t>(self_pid()));
  // /proc unreadable: liveness checks then fall back to pid existence.
  g_self_token_cache = token == 0 ? kTokenUnknown : token;
  return g_self_token_cache;
}

std::uint64_t process_token(pid_t pid) noexcept {
  char state = 0;
  std::uint64_t start = 0;
  int err = 0;
  if (!read_stat(pid, &state, &start, &err)) return err == ENOENT || err == ESRCH ? 0 : kTokenUnknown;
  if (state == 'Z' || state == 'X') return 0;
  return start + 1;  // +1 keeps a (theoretical) start time of 0 distinct from "dead"
}

Liveness process_liveness(pid_t pid, std::uint64_t token) noexcept {
  if (pid <= 0) return Liveness::unknown;
  std::uint64_t now = process_token(pid);
  if (now == kTokenUnknown) return Liveness::unknown;
  if (now == 0) return Liveness::dead;
  if (token == 0 || token == kTokenUnknown) return Liveness::alive;
  return now == token ? Liveness::alive : Liveness::dead;
}

std::uint64_t pid_namespace_id() noexcept {
  struct stat st{};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace ipc::detail
