#include "ipc/detail/process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
  g_self_token_cache.store(0, std::memory_order_relaxed);
}

// "Threads:" of /proc/<pid>/status, or -1 if unreadable. A zombie thread-group
// leader whose other threads still run shows state Z with Threads > 1.
int thread_count(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* p = std::strstr(buf, "\nThreads:");
  return p ? std::atoi(p + 9) : -1;
}

// Does the process exist at all (zombies included)? Asks the kernel, which
// answers even where /proc hides other users' processes (hidepid).
bool process_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

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
  if (token == 0) token = kTokenUnknown;
  g_self_token_cache.store(token, std::memory_order_relaxed);
  return token;
}

std::uint64_t process_token(pid_t pid) noexcept {
  char state = 0;
  std::uint64_t start = 0;
  int err = 0;
  if (!read_stat(pid, &state, &start, &err)) {
    // ENOENT also comes from hidepid=2, subset=pid or no /proc at all: only
    // the kernel's ESRCH proves the process is gone.
    if ((err == ENOENT || err == ESRCH) && !process_exists(pid)) return 0;
    return kTokenUnknown;
  }
  // A zombie has run its exit path (robust futexes released); but a zombie
  // *leader* whose other threads still run is a live process.
  if (state == 'X') return 0;
  if (state == 'Z' && thread_count(pid) <= 1) return 0;
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

Liveness thread_liveness(pid_t pid, pid_t tid, std::uint64_t token) noexcept {
  Liveness process = process_liveness(pid, token);
  if (process != Liveness::alive || tid <= 0) return process;
  // tgkill checks that tid is a thread of pid: an exited thread gives ESRCH.
  if (::syscall(SYS_tgkill, pid, tid, 0) != 0 && errno == ESRCH) return Liveness::dead;
  return Liveness::alive;
}

std::uint64_t pid_namespace_id() noexcept {
  struct stat st{};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

}  // namespace ipc::detail
