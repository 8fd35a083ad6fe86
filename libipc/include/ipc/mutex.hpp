// ipc/mutex.hpp — a robust, process-shared mutex that lives in shared memory.
//
// Types: `Mutex` (the shared struct), `LockResult` (what a lock call did),
// `LockInfo` (introspection for `ipcctl locks`), `MutexGuard` (RAII).
//
// Mechanism (docs/architecture.md "Robust mutex"): a glibc robust,
// process-shared, error-checking `pthread_mutex_t`, plus our owner record.
// glibc registers a robust-list head for every thread, so when a thread or
// process dies holding the lock the kernel (kernel/futex/core.c
// handle_futex_death) replaces the owner TID in the lock word with
// FUTEX_OWNER_DIED and wakes one waiter, at the instant of death, with or
// without the broker. The next locker gets EOWNERDEAD, i.e. `owner_died`.
// Rejected: PI futexes (a reused TID attaches the lock to an unrelated task),
// our own set_robust_list head (replaces glibc's: its robust mutexes lose
// kernel cleanup), Boost.Interprocess (1.74 has no robust mutex).
//
// Backstop for the cases the kernel walk misses (a held lock in a segment that
// was unmapped stops the walk; > 2048 held locks; the list head clobbered):
// blocked lockers wait in slices of kLivenessSlice. After each slice a waiter
// reads the owner record; if the lock word still holds the recorded tid and
// that process is provably dead (its identity token released, or, without the
// liveness file, pid gone, zombie, or a different start time:
// detail::process_liveness), it does what the kernel would have done: CAS the
// word from the observed value to (WAITERS | OWNER_DIED) and wake one waiter.
// Exactly one CAS wins. An owner whose liveness is unknown counts as alive.
//
// States (the glibc lock word; TID = owner thread id):
//
//   | word                  | meaning                        | lock() returns      |
//   |-----------------------|--------------------------------|---------------------|
//   | 0                     | free                           | acquired            |
//   | TID [| WAITERS]       | held by TID                    | (waits)             |
//   | OWNER_DIED [|WAITERS] | owner died holding it          | owner_died (owns)   |
//   | held, __owner=INCONS. | owner_died handed out, unfixed | (waits)             |
//   | __owner=NOTRECOVERABLE| unlocked without repair        | not_recoverable     |
//
// Contract for `owner_died`: the caller owns the lock; the data it guards may
// be half-updated. Repair it, then call mark_consistent(), then unlock(). If
// the caller unlocks without mark_consistent() the mutex becomes permanently
// `not_recoverable` — the data is never silently reused; the object that
// embeds the mutex must be recreated (the broker does this, new generation).
//
// Owner record (written by the owner only, after acquiring, before release;
// readers are racy by design and only used for diagnostics and the backstop):
//   1. acquisitions_ += 1                                      (relaxed)
//      release fence
//   2. owner_token_ = identity token of the owning process    (relaxed)
//   3. owner_       = pid << 32 | tid                         (relaxed)
//   unlock: owner_ = 0 if it is ours (relaxed), then the pthread unlock.
// The backstop reads it like a seqlock: A: word; B: acquisitions_ (acquire);
// owner_, token; acquire fence; C: acquisitions_ again — and gives up unless
// B == C and the word's tid equals owner_'s tid. B == C rules out an ABA in
// which the owner changed and changed back while it read (a newer owner's
// token paired with an older pid); a record half-written by the *current*
// owner (step 2 done, 3 not) may pair the previous pid with the new token,
// but then the word names the current owner, not the previous one, so the
// final CAS from the observed word fails (same tid = same thread = same token).
// A death between acquiring and step 3 leaves a stale or zero owner_: the
// backstop sees a tid mismatch, treats the owner as unknown (alive), and
// relies on the kernel, which always handles that case.
//
// Cost: the fast path is pthread_mutex_trylock + three stores to the line the
// CAS already owns, no syscall, no clock read (a CLOCK_MONOTONIC_COARSE read
// costs ~6 ns against ~13 ns for the whole pthread lock+unlock on this VM, so
// hold times are measured only for contended locks: see LockInfo). Measured
// in bench/sync_bench (lock_uncontended_vs_pthread_robust).
//
// Concurrency: any thread of any process that maps the segment may call any
// method. Do not munmap a segment while holding a lock in it (the kernel's
// robust-list walk stops at an unmapped entry). Errors never throw: every
// locking call returns a LockResult.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipc/detail/process.hpp"

namespace ipc {

enum class LockResult : std::uint8_t {
  acquired,         // the caller owns the lock; guarded data is consistent
  owner_died,       // the caller owns the lock; the previous owner died holding it
  timed_out,        // not acquired: try_lock found it busy, or the deadline passed
  not_recoverable,  // not acquired: an owner_died was never repaired; recreate the object
  deadlock,         // not acquired: the calling thread already holds this lock
  invalid,          // not acquired: the memory is not an initialised Mutex (zeroed or
                    // foreign bytes); construct it in place (Segment::find_or_create<Mutex>)
};

// True when the caller now owns the lock.
constexpr bool owns(LockResult r) noexcept { return r == LockResult::acquired || r == LockResult::owner_died; }
const char* to_string(LockResult r) noexcept;

struct LockInfo {
  std::uint32_t owner_pid = 0;  // 0: free (or owner not yet recorded)
  std::uint32_t owner_tid = 0;
  std::uint32_t waiters = 0;           // threads blocked in lock() right now (hint)
  std::uint64_t acquisitions = 0;      // total successful lock calls
  std::uint64_t waited_ns = 0;         // how long the oldest current waiter has waited
  bool owner_died_unrepaired = false;  // held by someone who got owner_died
  bool not_recoverable = false;
};

class alignas(64) Mutex {
 public:
  // How often a blocked locker re-checks that the owner is alive (backstop).
  static constexpr std::chrono::milliseconds kLivenessSlice{100};

  // Initialises the mutex in place (placement-new it into shared memory).
  // Not thread-safe against other users: construct before publishing.
  Mutex() noexcept;
  // Deliberately does nothing: other processes may still use the mutex.
  ~Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // True when the memory holds an initialised Mutex (zeroed memory: false).
  bool valid() const noexcept { return magic_ == kMagic; }

  // Blocks until acquired. Returns acquired / owner_died (the caller owns the
  // lock), not_recoverable, deadlock or invalid (it does not).
  //
  // Memory that was never initialised (zeroed) would pass as a glibc
  // *private, non-robust* mutex: no owner-died, lost cross-process wake-ups.
  // The magic is checked where it costs nothing measurable — every slow path
  // (contended lock, timed and try variants) and, in debug builds (!NDEBUG),
  // every lock — and those return `invalid`. A release build's uncontended
  // lock() of zeroed memory is not checked: the magic sits on the second
  // cache line, which the fast path deliberately never touches.
  [[nodiscard]] LockResult lock() noexcept {
#ifndef NDEBUG
    if (!valid()) return LockResult::invalid;
#endif
    int rc = ::pthread_mutex_trylock(&native_);
    if (rc == 0) [[likely]] {
      note_owner();
      return LockResult::acquired;
    }
    return lock_slow(rc, detail::kNoDeadline);
  }
  // Never blocks. timed_out when another thread holds the lock.
  [[nodiscard]] LockResult try_lock() noexcept;
  // Deadlines in the past mean "try once"; kForever (or time_point::max())
  // waits as lock() does. steady_clock is CLOCK_MONOTONIC.
  [[nodiscard]] LockResult try_lock_for(std::chrono::nanoseconds timeout) noexcept;
  [[nodiscard]] LockResult try_lock_until(std::chrono::steady_clock::time_point deadline) noexcept;

  // Releases a lock the calling thread owns. After owner_died without
  // mark_consistent() this makes the mutex not_recoverable (see above).
  // Unlocking a lock this thread does not own is logged and ignored.
  void unlock() noexcept {
    // Clear the owner record only if it is ours: a misplaced unlock by a
    // non-owner must not erase the real owner (glibc refuses it with EPERM).
    detail::ThreadIdentity me = detail::self();
    std::uint64_t mine = std::uint64_t{me.pid} << 32 | me.tid;
    if (owner_.load(std::memory_order_relaxed) == mine) owner_.store(0, std::memory_order_relaxed);
    int rc = ::pthread_mutex_unlock(&native_);
    if (rc != 0) [[unlikely]]
      unlock_failed(rc);
  }

  // After owner_died: declares the guarded data repaired. Returns false if the
  // caller does not hold an owner_died lock.
  bool mark_consistent() noexcept;

  // Racy snapshot for diagnostics (`ipcctl locks`); never blocks.
  LockInfo info() const noexcept;

 private:
  static constexpr std::uint32_t kMagic = 0x4d545831;  // "MTX1"

  void note_owner() noexcept {
    detail::ThreadIdentity me = detail::self();
    acquisitions_.store(acquisitions_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    // SYNC POINT: pairs with the acquire fence in recover_dead_owner(); the
    // counter bump is visible before the new token/owner (seqlock writer).
    // Free on x86 (a compiler barrier).
    std::atomic_thread_fence(std::memory_order_release);
    owner_token_.store(detail::self_token(), std::memory_order_relaxed);
    owner_.store(std::uint64_t{me.pid} << 32 | me.tid, std::memory_order_relaxed);
  }
  LockResult lock_slow(int first_rc, std::uint64_t deadline_ns) noexcept;
  LockResult finish(int rc) noexcept;
  int clocklock(const struct timespec* deadline) noexcept;
  void recover_dead_owner() noexcept;
  void unlock_failed(int rc) noexcept;

  // Line 0: everything the uncontended path touches (lock word + owner record).
  pthread_mutex_t native_;                     // 40 bytes
  std::atomic<std::uint64_t> owner_{0};        // pid << 32 | tid of the owner, 0 = none
  std::atomic<std::uint64_t> owner_token_{0};  // identity token of the owner's process
  std::atomic<std::uint64_t> acquisitions_{0};
  // Line 1: written only by the slow path and at construction.
  std::uint32_t magic_;
  std::atomic<std::uint32_t> waiters_{0};
  std::atomic<std::uint64_t> waiting_since_ns_{0};  // monotonic; 0 = nobody waits
};

static_assert(sizeof(Mutex) == 128 && alignof(Mutex) == 64, "Mutex layout is part of the segment format");
static_assert(sizeof(pthread_mutex_t) == 40, "the owner record must share the lock word's cache line");

// RAII lock for code that treats owner_died as acquired *after* repairing:
// the constructor calls lock(); `result()` tells what happened; `owns_lock()`
// whether to proceed. The destructor unlocks if owned.
class MutexGuard {
 public:
  explicit MutexGuard(Mutex& m) noexcept : mutex_(m), result_(m.lock()) {}
  ~MutexGuard() {
    if (owns(result_)) mutex_.unlock();
  }
  MutexGuard(const MutexGuard&) = delete;
  MutexGuard& operator=(const MutexGuard&) = delete;
  LockResult result() const noexcept { return result_; }
  bool owns_lock() const noexcept { return owns(result_); }

 private:
  Mutex& mutex_;
  LockResult result_;
};

}  // namespace ipc
