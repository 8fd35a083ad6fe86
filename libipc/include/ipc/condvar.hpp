// ipc/condvar.hpp — a process-shared condition variable for ipc::Mutex.
//
// Types: `CondVar`, `CondWait` (the result of a wait).
//
// Why not pthread_cond_t: glibc >= 2.25 splits waiters into groups with a
// reference count (__g_refs) that a signaller waits on before switching
// groups; a waiter SIGKILLed while holding such a reference can stall
// signallers, and glibc 2.36 (Debian 12) still has it (glibc removed __g_refs
// only in 2025, commit 991febc2, fixing BZ #25847). So this is the classic
// sequence-counter condvar on a shared futex word.
//
// Layout (one cache line):
//   seq_      32-bit futex word, incremented by every notify
//   waiters_  number of threads inside wait() (a hint: lets notify skip the
//             FUTEX_WAKE syscall when nobody waits; a waiter killed inside
//             wait leaves it one too high, which costs only a spare syscall)
//
// wait(m):                                notify_one/notify_all():
//   W1 waiters_ += 1        (seq_cst)       N1 seq_ += 1         (seq_cst)
//   W2 s = seq_             (seq_cst)       N2 if waiters_ > 0   (seq_cst)
//   W3 m.unlock()                              FUTEX_WAKE(seq_, 1 or all)
//   W4 FUTEX_WAIT(seq_, s, min(deadline, now + slice)); again while seq_ == s
//   W5 waiters_ -= 1
//   W6 relock m (the result may be owner_died!)
// No lost wake-up: W1/W2 and N1/N2 form a Dekker pair, so either the notifier
// sees the waiter (and wakes it) or the waiter's W2 already sees the new seq
// (and W4 returns at once). Spurious wake-ups happen (a notify between W2 and
// W4 that was meant for an earlier waiter; 2^32 wrap-around): always wait in
// a loop on your predicate, as with std::condition_variable.
//
// Crash behaviour: a waiter dying anywhere in W1..W6 leaves at most the
// waiters_ hint one too high; the kernel drops a dead task from the futex
// queue. A waiter killed after notify_one() woke it, before it re-locked,
// swallows that wake-up: so W4 sleeps in slices of Mutex::kLivenessSlice and
// returns when seq_ moved, which bounds such a loss to one slice. A waiter dying after W6 holds the mutex: the mutex's
// owner_died path (ipc::Mutex) handles it. A notifier dying leaves nothing. The relock in W6 reports owner_died like
// Mutex::lock(): the caller owns the mutex and must repair, exactly as after lock().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipc/mutex.hpp"

namespace ipc {

struct CondWait {
  bool timed_out = false;                  // the deadline passed before a notify
  LockResult lock = LockResult::acquired;  // result of re-locking the mutex
  bool owns_lock() const noexcept { return owns(lock); }
};

class alignas(64) CondVar {
 public:
  CondVar() noexcept = default;  // placement-new into shared memory
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Atomically releases `m` (held by the caller) and waits for a notify, then
  // re-acquires `m`. Returns the re-lock result; the caller owns `m` again
  // unless it is not_recoverable.
  CondWait wait(Mutex& m) noexcept;
  CondWait wait_for(Mutex& m, std::chrono::nanoseconds timeout) noexcept;
  CondWait wait_until(Mutex& m, std::chrono::steady_clock::time_point deadline) noexcept;

  // Predicate forms: loop until pred() holds (evaluated with m held) or the
  // deadline passes. `timed_out` is set only if pred() is still false.
  // Returns at once, without evaluating pred() on the unrepaired data, when
  // the re-lock reports owner_died: the caller owns `m` and must repair.
  template <typename Pred>
  CondWait wait_until(Mutex& m, std::chrono::steady_clock::time_point deadline, Pred pred) {
    CondWait w;
    while (!pred()) {
      w = wait_until(m, deadline);
      if (w.lock != LockResult::acquired) return w;
      if (w.timed_out) {
        w.timed_out = !pred();
        return w;
      }
    }
    return w;
  }
  template <typename Pred>
  CondWait wait_for(Mutex& m, std::chrono::nanoseconds timeout, Pred pred) {
    return wait_until(m, detail::deadline_time_after(timeout), pred);
  }

  void notify_one() noexcept { notify(1); }
  void notify_all() noexcept { notify(INT32_MAX); }

  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }

 private:
  void notify(int count) noexcept;
  CondWait wait_impl(Mutex& m, std::uint64_t deadline_ns) noexcept;

  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint32_t> waiters_{0};
};

static_assert(sizeof(CondVar) == 64, "CondVar layout is part of the segment format");

}  // namespace ipc
