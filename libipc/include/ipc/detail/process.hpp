// ipc/detail/process.hpp — who am I, and is that other process still alive?
//
// Platform layer (below segments). Caches this thread's tid and this process's
// pid, reset in the child after fork(), because getpid()/gettid() are real
// system calls on glibc >= 2.25 and sit on lock fast paths.
//
// Liveness: a bare pid never decides that a process is dead (pids are reused).
// Every owner record stores the pid *and* an identity token: the process start
// time in clock ticks since boot (/proc/<pid>/stat field 22). A process is
// dead when kill(pid, 0) says ESRCH, when it is a zombie with no thread left
// (a zombie *leader* whose other threads run is alive), or when /proc shows
// another start time (the pid was reused). When /proc cannot tell (hidepid,
// EACCES, not mounted) and the kernel says the pid exists, the answer is
// "unknown", which every caller treats as alive: a false "dead" would create
// two owners of one lock. Slot tables that are keyed by process must match
// their own slot by pid *and* token, never by pid alone.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "ipc/detail/clock.hpp"  // monotonic_ns, realtime_ns: every user of liveness also reads the clock

namespace ipc::detail {

// The identity token of a process that /proc does not describe.
inline constexpr std::uint64_t kTokenUnknown = ~std::uint64_t{0};

struct ThreadIdentity {
  std::uint32_t pid;
  std::uint32_t tid;
};

// Per-thread cache, reset in the fork child by a pthread_atfork handler (the
// forking thread is the only one there). Inline: it sits on lock fast paths.
inline thread_local ThreadIdentity t_self_cache{0, 0};
inline std::atomic<std::uint64_t> g_self_token_cache{0};  // per process; reset after fork
ThreadIdentity load_self() noexcept;
std::uint64_t load_self_token() noexcept;

// This thread's pid and tid; cached, fork-safe. Never 0.
inline ThreadIdentity self() noexcept {
  if (t_self_cache.tid == 0) [[unlikely]]
    return load_self();
  return t_self_cache;
}
inline std::uint32_t self_pid() noexcept { return self().pid; }

// This process's identity token (start time; kTokenUnknown if /proc is not
// readable; never 0). Cached, fork-safe.
inline std::uint64_t self_token() noexcept {
  std::uint64_t token = g_self_token_cache.load(std::memory_order_relaxed);
  if (token == 0) [[unlikely]]
    token = load_self_token();
  return token;
}

// The identity token of `pid`, or 0 when it does not exist / is a zombie.
// Returns kTokenUnknown when /proc does not tell.
std::uint64_t process_token(pid_t pid) noexcept;

enum class Liveness { alive, dead, unknown };

// Is the process `pid` with identity `token` still running? token 0 means
// "not recorded": then only a missing process counts as dead.
Liveness process_liveness(pid_t pid, std::uint64_t token) noexcept;

// As process_liveness, and additionally dead when thread `tid` of `pid` has
// exited (tgkill(pid, tid, 0) == ESRCH) while the process lives on.
Liveness thread_liveness(pid_t pid, pid_t tid, std::uint64_t token) noexcept;

// Inode of /proc/self/ns/pid (0 if unreadable): processes sharing one libipc
// domain must share a PID namespace, since owner records hold pids and tids.
std::uint64_t pid_namespace_id() noexcept;

}  // namespace ipc::detail
