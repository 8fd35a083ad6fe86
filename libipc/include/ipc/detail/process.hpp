// ipc/detail/process.hpp — who am I, and is that other process still alive?
//
// Platform layer (below segments). Caches this thread's tid and this process's
// pid, reset in the child after fork(), because getpid()/gettid() are real
// system calls on glibc >= 2.25 and sit on lock fast paths.
//
// Liveness: a process never declares dead what it cannot verify — a false
// "dead" hands a live holder's lock to a second owner. Every owner record
// stores the pid (for people: which process) *and* an identity token (for
// the verdict). The token comes from the liveness file:
//
//   kLivenessPath, one file per machine (per /dev/shm), mode 0666. Each
//   process that needs an identity
//     L1 opens it (its own open file description, O_CLOEXEC),
//     L2 takes shared OFD locks on byte kNamespaceRegion + (its PID
//        namespace inode mod 2^61): "a process of namespace N is alive",
//        and on byte kPidRegion + its pid: "a process with this pid is
//        alive" (in some namespace) — before it records its pid anywhere,
//     L3 takes an exclusive OFD lock on one random byte `nonce` below that
//        region (retrying on conflict, so live nonces are unique), and
//     L4 uses token = kTokenLivenessBit | inode bits of the file | nonce.
//   The kernel drops OFD locks when the last descriptor of the description
//   closes, i.e. when the process dies, whatever kills it. Any process, in
//   any PID namespace that sees the same /dev/shm, tests a token with
//   F_OFD_GETLK on `nonce`: locked → alive; unlocked → dead. A death between
//   L1 and L4 leaves no token anywhere (nothing to judge). A new process can
//   take a dead one's nonce only after the kernel released it, so a reused
//   nonce never makes a dead owner look alive for long and never makes a
//   live one look dead; pid reuse does not enter at all.
//   fork(): the child's descriptor shares the parent's description and its
//   locks (a test through it would see the parent's locks as its own, i.e.
//   "dead"). The atfork child handler closes it; the child registers anew
//   (L1–L4) on first use and gets its own token.
//
// Records without a token (a bare pid: ring slot words, claimed slots) are
// judged by the pid, which means something only in the recorder's PID
// namespace. While a process of another PID namespace is alive (any lock in
// the namespace region but ours: two F_OFD_GETLKs), a bare pid is dead only
// if no live process holds its pid lock (no libipc process of any namespace
// has that pid, so the recorder is gone), else "unknown" — a namesake in
// another namespace delays recovery, never fakes a death. The thread test of
// a live owner (tgkill) is then skipped. With every live process in our
// namespace, a pid is dead when kill(pid, 0) says ESRCH, when it is a zombie
// with no thread left, or when /proc shows another start time than a
// start-time token recorded.
//
// Fallback: where the liveness file cannot be opened, tokens are process
// start times in clock ticks (/proc/<pid>/stat field 22; 10 ms, so a pid
// reused within one tick looks alive). Every process of a domain should be able to
// open the liveness file: one that cannot holds no pid lock, so in a domain
// spanning namespaces its bare pids could be judged gone. When /proc cannot tell (hidepid, EACCES) and
// the kernel says the pid exists, the answer is "unknown", which every caller
// treats as alive.
//
// SECURITY: any local user can take locks in the liveness file. That can make
// a dead process look alive (its locks and buffers are then recovered only
// by the kernel's robust list, or once the lock goes), never a live one dead:
// no one can remove another description's lock. Deleting the file (its owner
// or root) makes later processes use a new one; tokens of the old file are
// then "unknown", never "dead" (the token carries the file's inode bits).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string_view>

#include "ipc/detail/clock.hpp"  // monotonic_ns, realtime_ns: every user of liveness also reads the clock

namespace ipc::detail {

// The identity token of a process that /proc does not describe.
inline constexpr std::uint64_t kTokenUnknown = ~std::uint64_t{0};

// The liveness file and the token layout (see above):
//   bit 63 kTokenLivenessBit | bits 40–62 low 23 bits of the file's inode | bits 0–39 nonce
// Tokens without bit 63 are start times (the fallback).
inline constexpr const char* kLivenessPath = "/dev/shm/ipc-liveness";
inline constexpr std::uint64_t kTokenLivenessBit = std::uint64_t{1} << 63;
inline constexpr int kTokenNonceBits = 40;
inline constexpr int kTokenInodeBits = 23;
inline constexpr std::uint64_t kTokenNonceMask = (std::uint64_t{1} << kTokenNonceBits) - 1;
inline constexpr std::uint64_t kTokenInodeMask = (std::uint64_t{1} << kTokenInodeBits) - 1;

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

// The start-time token of `pid` (the fallback), or 0 when it does not exist
// / is a zombie. Returns kTokenUnknown when /proc does not tell.
std::uint64_t process_token(pid_t pid) noexcept;

enum class Liveness { alive, dead, unknown };

// Is the process `pid` with identity `token` still running? A liveness token
// decides alone (pid is not consulted). token 0 means "not recorded": then
// only a missing process counts as dead, and only while no process of
// another PID namespace is alive.
Liveness process_liveness(pid_t pid, std::uint64_t token) noexcept;

// As process_liveness, and additionally dead when thread `tid` of `pid` has
// exited (tgkill(pid, tid, 0) == ESRCH) while the process lives on.
Liveness thread_liveness(pid_t pid, pid_t tid, std::uint64_t token) noexcept;

// For reclaim(pid) entry points, which take everything a process holds: true
// only when `pid` is not us and is provably dead (a bare pid, judged as
// above). Otherwise it logs, naming the object (`kind` 'name') and the pid,
// and returns false.
bool reclaim_allowed(std::uint32_t pid, const char* kind, std::string_view name) noexcept;

// Inode of /proc/self/ns/pid (0 if unreadable).
std::uint64_t pid_namespace_id() noexcept;

// True when this process can use the liveness file (tokens are identities,
// valid across PID namespaces); false in the fallback.
bool liveness_file_available() noexcept;
// True when a process of another PID namespace than ours is alive (holds its
// namespace lock in the liveness file); false without a liveness file.
bool foreign_namespace_alive() noexcept;

}  // namespace ipc::detail
