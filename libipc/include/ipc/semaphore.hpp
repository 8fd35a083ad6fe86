// ipc/semaphore.hpp — a process-shared counting semaphore whose permits can
// be owned, so that a process that dies holding permits gives them back.
//
// Types: `Semaphore`, `SemaphoreResult`.
//
// Two ways to use it (they can be mixed on one semaphore):
//   post(n) / wait():       signals. post adds n permits, wait consumes one.
//                           Nobody owns a consumed permit: a dead consumer's
//                           permits are gone, as with sem_post/sem_wait.
//   acquire() / release():  owned permits. acquire records the permit against
//                           the calling process; release returns it. If the
//                           process dies, its permits return to the pool.
// available() = base_ - Σ holders[i].held, where base_ is changed by
// post/wait, and holders[] (one slot per process) by acquire/release. The
// invariant is kept under an internal robust Mutex; `available_` is a cache
// of it that doubles as the futex word sleepers wait on.
//
// Crash behaviour:
//   * dies holding the internal mutex (mid-update): the next user gets
//     owner_died and recomputes available_ from base_ and the slots, i.e. the
//     half-done operation either fully happened or did not (each operation
//     writes base_/held first and available_ last).
//   * dies holding owned permits: a sleeper that waited a liveness slice
//     (Mutex::kLivenessSlice), or any reclaim_dead() call, frees its slot and
//     wakes waiters. Detection uses the identity token (detail/process.hpp).
//   * dies while sleeping: leaves the waiters_ hint one high (a spare wake).
// Threads of one process share that process's slot: a thread that exits
// holding owned permits does not give them back (the process is alive).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipc/mutex.hpp"

namespace ipc {

enum class SemaphoreResult : std::uint8_t {
  acquired,
  timed_out,
  no_slot,          // acquire(): all holder slots belong to live processes
  not_recoverable,  // the internal lock is broken; recreate the semaphore
};
const char* to_string(SemaphoreResult r) noexcept;

class alignas(64) Semaphore {
 public:
  static constexpr int kMaxHolders = 32;
  static constexpr std::uint32_t kMaxValue = 0x7fffffff;

  explicit Semaphore(std::uint32_t initial = 0) noexcept;
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // Signals: add n permits (saturating at kMaxValue) / consume one.
  void post(std::uint32_t n = 1) noexcept;
  [[nodiscard]] SemaphoreResult wait() noexcept { return take(false, detail::kNoDeadline); }
  [[nodiscard]] bool try_wait() noexcept { return take(false, 0) == SemaphoreResult::acquired; }
  [[nodiscard]] SemaphoreResult wait_for(std::chrono::nanoseconds timeout) noexcept;

  // Owned permits: returned automatically if this process dies.
  [[nodiscard]] SemaphoreResult acquire() noexcept { return take(true, detail::kNoDeadline); }
  [[nodiscard]] bool try_acquire() noexcept { return take(true, 0) == SemaphoreResult::acquired; }
  [[nodiscard]] SemaphoreResult acquire_for(std::chrono::nanoseconds timeout) noexcept;
  // Returns one owned permit; false (and no change) if this process holds none.
  bool release() noexcept;

  std::uint32_t available() const noexcept { return available_.load(std::memory_order_acquire); }
  // Permits this process holds through acquire().
  std::uint32_t held_by_me() const noexcept;
  // Frees the slots of dead processes; returns how many permits came back.
  std::uint32_t reclaim_dead() noexcept;

 private:
  struct Holder {
    std::uint32_t pid;  // 0 = free
    std::uint32_t held;
    std::uint64_t token;
  };
  SemaphoreResult take(bool owned, std::uint64_t deadline_ns) noexcept;
  bool lock_internal() noexcept;  // false: not recoverable
  void recompute() noexcept;      // available_ from base_ and holders_ (lock held)
  struct Reclaimed {
    std::uint32_t permits = 0;
    std::uint32_t slots = 0;
  };
  // Slot of (pid, token); (0, 0) finds a free slot. A slot with my pid but
  // another token is a dead predecessor's (pid reuse): never mine.
  int find_holder(std::uint32_t pid, std::uint64_t token) const noexcept;
  Reclaimed reclaim_dead_locked() noexcept;

  Mutex lock_;
  alignas(64) std::atomic<std::uint32_t> available_{0};  // futex word
  std::atomic<std::uint32_t> waiters_{0};
  std::int64_t base_ = 0;
  Holder holders_[kMaxHolders]{};
};

}  // namespace ipc
