#include "ipc/detail/process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "log.hpp"

namespace ipc::detail {
namespace {

// ---- the liveness file (see process.hpp "Liveness") -------------------------

constexpr off_t kPidRegion = off_t{1} << 61;        // byte kPidRegion + pid: "a process with this pid lives"
constexpr off_t kNamespaceRegion = off_t{1} << 62;  // namespace presence locks start here
constexpr std::uint64_t kNamespaceSpan = std::uint64_t{1} << 61;

// This process's registration. `fd` is an open file description of its own:
// a fork child must never test locks through its parent's (it would see the
// parent's locks as its own, i.e. not conflicting: "dead").
struct Registration {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  int fd = -1;
  bool tried = false;              // open attempted in this process (success or not)
  bool namespace_unknown = false;  // /proc/self/ns/pid unreadable: every namespace counts as foreign
  std::uint64_t inode_bits = 0;    // low kTokenInodeBits of the file's inode
  off_t namespace_byte = 0;        // our shared lock in the namespace region
};
Registration g_registration;

void after_fork_in_child() {
  // Only the forking thread survives; its cached pid and tid are now wrong.
  t_self_cache = {0, 0};
  g_self_token_cache.store(0, std::memory_order_relaxed);
  // The inherited descriptor shares the parent's open file description and
  // with it the parent's locks: close ours (the parent keeps its own, so its
  // locks stay), and register afresh on first use. close() is
  // async-signal-safe. The lock was taken by this (the forking) thread in
  // the prepare handler, so no other thread is inside: release it.
  if (g_registration.fd >= 0) ::close(g_registration.fd);
  g_registration.fd = -1;
  g_registration.tried = false;
  pthread_mutex_unlock(&g_registration.lock);
}
void before_fork() { pthread_mutex_lock(&g_registration.lock); }
void after_fork_in_parent() { pthread_mutex_unlock(&g_registration.lock); }

// F_OFD_SETLK/GETLK on [start, start + len); len 0 = to the end of the file space.
bool ofd_lock(int fd, short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}
// 1: another open file description holds a conflicting lock; 0: none; -1: error.
int ofd_locked_by_other(int fd, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return -1;
  return fl.l_type != F_UNLCK ? 1 : 0;
}

// Opens the liveness file once per process (and again in a fork child).
// Returns the fd, or -1 if this process runs without one (then liveness falls
// back to pids and start times, and foreign PID namespaces stay refused).
// The file, opened or created whole: made unnamed with its final mode, then
// linked into place, so no other user ever sees it with the umask's mode.
int open_liveness_file() noexcept {
  int fd = ::open(kLivenessPath, O_RDWR | O_CLOEXEC);
  if (fd >= 0 || errno != ENOENT) return fd;
  const char* slash = std::strrchr(kLivenessPath, '/');
  const std::string dir(kLivenessPath, static_cast<std::size_t>(slash - kLivenessPath));
  int tmp = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
  if (tmp < 0) return -1;
  ::fchmod(tmp, 0666);  // every user of the machine registers here
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", tmp);
  // Linked, or another process linked its file first (EEXIST): either way
  // the file is in place now.
  (void)::linkat(AT_FDCWD, proc, AT_FDCWD, kLivenessPath, AT_SYMLINK_FOLLOW);
  ::close(tmp);
  return ::open(kLivenessPath, O_RDWR | O_CLOEXEC);
}

int liveness_fd() noexcept {
  pthread_mutex_lock(&g_registration.lock);
  if (!g_registration.tried) {
    int fd = open_liveness_file();
    // Out of descriptors is transient: try again on the next call instead of
    // running without the file for the rest of the process.
    g_registration.tried = !(fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM));
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      const std::uint64_t ns = pid_namespace_id();
      // An unreadable namespace id (no /proc) cannot be told apart from
      // another: such a process takes the last byte of the region, which no
      // inode maps to, and treats every namespace as foreign.
      g_registration.namespace_unknown = ns == 0;
      const off_t ns_byte = ns == 0 ? kNamespaceRegion + static_cast<off_t>(kNamespaceSpan)
                                    : kNamespaceRegion + static_cast<off_t>(ns % kNamespaceSpan);
      // L2: our namespace and our pid, as shared locks (processes of other
      // namespaces may have the same pid, or the same namespace).
      if (ofd_lock(fd, F_RDLCK, ns_byte, 1) && ofd_lock(fd, F_RDLCK, kPidRegion + ::getpid(), 1)) {
        g_registration.fd = fd;
        g_registration.inode_bits = static_cast<std::uint64_t>(st.st_ino) & kTokenInodeMask;
        g_registration.namespace_byte = ns_byte;
        fd = -1;
      }
    }
    if (fd >= 0) ::close(fd);
  }
  const int out = g_registration.fd;
  pthread_mutex_unlock(&g_registration.lock);
  return out;
}

// A fresh identity: a write lock on one random byte below the namespace
// region, held until this process dies. Returns the token, or 0.
std::uint64_t register_identity(int fd) noexcept {
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != sizeof r) r = monotonic_ns() * 0x9e3779b97f4a7c15ull + attempt;
    const std::uint64_t nonce = r & kTokenNonceMask;
    if (nonce == 0 || nonce == kTokenNonceMask) continue;  // 0: none; all ones: kTokenUnknown's pattern
    // Another live process holds this byte: its identity, not ours. Try another.
    if (!ofd_lock(fd, F_WRLCK, static_cast<off_t>(nonce), 1)) continue;
    return kTokenLivenessBit | g_registration.inode_bits << kTokenNonceBits | nonce;
  }
  return 0;
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
  pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child);
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
  // Register (L1, L2) before this process can record its pid anywhere: the
  // pid lock is what proves, across namespaces, that a recorded pid is gone.
  (void)liveness_fd();
  t_self_cache.pid = static_cast<std::uint32_t>(::getpid());
  t_self_cache.tid = static_cast<std::uint32_t>(::gettid());
  return t_self_cache;
}

std::uint64_t load_self_token() noexcept {
  (void)g_atfork_registered;
  std::uint64_t token = 0;
  const int fd = liveness_fd();
  if (fd >= 0) {
    pthread_mutex_lock(&g_registration.lock);
    // Two threads may race here: the first registers, the second reuses it.
    token = g_self_token_cache.load(std::memory_order_relaxed);
    if (token == 0) token = register_identity(fd);
    if (token != 0) g_self_token_cache.store(token, std::memory_order_relaxed);
    pthread_mutex_unlock(&g_registration.lock);
    if (token != 0) return token;
  }
  // No liveness file: the process start time (10 ms resolution; see process.hpp).
  token = process_token(static_cast<pid_t>(self_pid()));
  // /proc unreadable: liveness checks then fall back to pid existence.
  if (token == 0) token = kTokenUnknown;
  g_self_token_cache.store(token, std::memory_order_relaxed);
  return token;
}

bool liveness_file_available() noexcept { return liveness_fd() >= 0; }

bool foreign_namespace_alive() noexcept {
  const int fd = liveness_fd();
  if (fd < 0) return false;  // no liveness file: segments of other namespaces are refused at open instead
  if (g_registration.namespace_unknown) return true;
  const off_t mine = g_registration.namespace_byte;
  // Processes of our namespace hold read locks on `mine` only: any lock
  // elsewhere in the region is a live process of another PID namespace.
  const int below = mine > kNamespaceRegion ? ofd_locked_by_other(fd, kNamespaceRegion, mine - kNamespaceRegion) : 0;
  const int above = ofd_locked_by_other(fd, mine + 1, 0);
  return below != 0 || above != 0;  // an error counts as "yes": never conclude more than we know
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

Liveness token_liveness(std::uint64_t token) noexcept {
  if ((token & kTokenLivenessBit) == 0 || token == kTokenUnknown) return Liveness::unknown;
  if (token == self_token()) return Liveness::alive;  // our own lock never conflicts with us
  const int fd = liveness_fd();
  if (fd < 0) return Liveness::unknown;
  // Another liveness file (recreated, or another /dev/shm): it cannot tell.
  if ((token >> kTokenNonceBits & kTokenInodeMask) != g_registration.inode_bits) return Liveness::unknown;
  switch (ofd_locked_by_other(fd, static_cast<off_t>(token & kTokenNonceMask), 1)) {
    case 1: return Liveness::alive;
    case 0: return Liveness::dead;  // the kernel released it: the process has exited
    default: return Liveness::unknown;
  }
}

Liveness process_liveness(pid_t pid, std::uint64_t token) noexcept {
  if (token & kTokenLivenessBit && token != kTokenUnknown) return token_liveness(token);
  if (pid <= 0) return Liveness::unknown;
  // A bare pid (or a start time) means something only in the recorder's PID
  // namespace. While a process of another namespace is alive, the pid may be
  // one of its pids, so /proc and kill() cannot judge it; the pid locks can:
  // every libipc process holds one on its own pid before it records it
  // (load_self), so no lock on `pid` means no live libipc process anywhere
  // has that pid, and the recorder is gone. A lock may be the recorder's or
  // a namesake's in another namespace: do not conclude.
  if (foreign_namespace_alive()) {
    // A start-time token comes from a process without the liveness file,
    // which holds no pid lock: only the kernel's view could judge it, and
    // that is another namespace's.
    if (token != 0) return Liveness::unknown;
    if (static_cast<std::uint32_t>(pid) == self_pid()) return Liveness::alive;  // our own lock never conflicts
    const int fd = liveness_fd();
    return fd >= 0 && ofd_locked_by_other(fd, kPidRegion + pid, 1) == 0 ? Liveness::dead : Liveness::unknown;
  }
  std::uint64_t now = process_token(pid);
  if (now == kTokenUnknown) return Liveness::unknown;
  if (now == 0) return Liveness::dead;
  if (token == 0 || token == kTokenUnknown) return Liveness::alive;
  return now == token ? Liveness::alive : Liveness::dead;
}

Liveness thread_liveness(pid_t pid, pid_t tid, std::uint64_t token) noexcept {
  Liveness process = process_liveness(pid, token);
  if (process != Liveness::alive || tid <= 0) return process;
  // The recorder lives; its pid and tid are ours to test only if it shares
  // our PID namespace, which is certain when no other namespace is alive.
  if (foreign_namespace_alive()) return Liveness::alive;
  // tgkill checks that tid is a thread of pid: an exited thread gives ESRCH.
  if (::syscall(SYS_tgkill, pid, tid, 0) != 0 && errno == ESRCH) return Liveness::dead;
  return Liveness::alive;
}

bool reclaim_allowed(std::uint32_t pid, const char* kind, std::string_view name) noexcept {
  if (pid == 0) return false;
  const bool self = pid == self_pid();
  const Liveness l = self ? Liveness::alive : process_liveness(static_cast<pid_t>(pid), 0);
  if (l == Liveness::dead) return true;
  log::error(
      "{} '{}': reclaim(pid {}) refused: {}; reclaim takes every buffer, slot and cursor a process holds, "
      "which is only right once it has died (reclaim_dead() finds the dead ones)",
      kind, name, pid,
      self                   ? "that is this process"
      : l == Liveness::alive ? "the process is alive"
                             : "the process cannot be shown dead");
  return false;
}

std::uint64_t pid_namespace_id() noexcept {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

}  // namespace ipc::detail
