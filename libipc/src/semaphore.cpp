#include "ipc/semaphore.hpp"

#include <algorithm>

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"

namespace ipc {

const char* to_string(SemaphoreResult r) noexcept {
  switch (r) {
    case SemaphoreResult::acquired: return "acquired";
    case SemaphoreResult::timed_out: return "timed_out";
    case SemaphoreResult::no_slot: return "no_slot";
    case SemaphoreResult::not_recoverable: return "not_recoverable";
  }
  return "unknown";
}

Semaphore::Semaphore(std::uint32_t initial) noexcept {
  base_ = std::min(initial, kMaxValue);
  available_.store(static_cast<std::uint32_t>(base_), std::memory_order_relaxed);
}

bool Semaphore::lock_internal() noexcept {
  LockResult r = lock_.lock();
  if (r == LockResult::owner_died) {
    recompute();  // every operation writes base_/held before available_
    lock_.mark_consistent();
    return true;
  }
  return r == LockResult::acquired;
}

void Semaphore::recompute() noexcept {
  std::int64_t v = base_;
  for (const Holder& h : holders_) v -= h.pid ? h.held : 0;
  v = std::clamp<std::int64_t>(v, 0, kMaxValue);
  // seq_cst: half of the Dekker pair with a sleeper's waiters_++ / re-check.
  available_.store(static_cast<std::uint32_t>(v), std::memory_order_seq_cst);
}

int Semaphore::find_holder(std::uint32_t pid, std::uint64_t token) const noexcept {
  for (int i = 0; i < kMaxHolders; ++i)
    if (holders_[i].pid == pid && (pid == 0 || holders_[i].token == token)) return i;
  return -1;
}

Semaphore::Reclaimed Semaphore::reclaim_dead_locked() noexcept {
  Reclaimed out;
  for (Holder& h : holders_) {
    if (h.pid == 0) continue;
    if (detail::process_liveness(static_cast<pid_t>(h.pid), h.token) != detail::Liveness::dead) continue;
    out.permits += h.held;
    ++out.slots;
    h = Holder{};
  }
  if (out.permits) recompute();
  return out;
}

std::uint32_t Semaphore::reclaim_dead() noexcept {
  if (!lock_internal()) return 0;
  std::uint32_t n = reclaim_dead_locked().permits;
  lock_.unlock();
  if (n && waiters_.load(std::memory_order_seq_cst)) detail::futex_wake(&available_, INT32_MAX);
  return n;
}

void Semaphore::post(std::uint32_t n) noexcept {
  if (!lock_internal()) return;
  base_ = std::min<std::int64_t>(base_ + n, kMaxValue);
  recompute();
  lock_.unlock();
  if (waiters_.load(std::memory_order_seq_cst))
    detail::futex_wake(&available_, static_cast<int>(std::min(n, 0x7fffffffu)));
}

bool Semaphore::release() noexcept {
  if (!lock_internal()) return false;
  int i = find_holder(detail::self_pid(), detail::self_token());
  bool ok = i >= 0 && holders_[i].held > 0;
  if (ok) {
    if (--holders_[i].held == 0) holders_[i] = Holder{};
    recompute();
  }
  lock_.unlock();
  if (ok && waiters_.load(std::memory_order_seq_cst)) detail::futex_wake(&available_, 1);
  return ok;
}

std::uint32_t Semaphore::held_by_me() const noexcept {
  int i = find_holder(detail::self_pid(), detail::self_token());
  return i < 0 ? 0 : holders_[i].held;
}

SemaphoreResult Semaphore::take(bool owned, std::uint64_t deadline_ns) noexcept {
  const std::uint64_t slice = std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count();
  for (;;) {
    if (available_.load(std::memory_order_acquire) > 0) {
      if (!lock_internal()) return SemaphoreResult::not_recoverable;
      SemaphoreResult r = SemaphoreResult::timed_out;
      if (available_.load(std::memory_order_relaxed) > 0) {
        if (!owned) {
          --base_;
          r = SemaphoreResult::acquired;
        } else {
          const std::uint32_t me = detail::self_pid();
          const std::uint64_t token = detail::self_token();
          int i = find_holder(me, token);
          if (i < 0) i = find_holder(0, 0);
          if (i < 0 && reclaim_dead_locked().slots) i = find_holder(0, 0);
          if (i >= 0) {
            if (holders_[i].pid == 0) holders_[i] = Holder{me, 0, token};
            ++holders_[i].held;
            r = SemaphoreResult::acquired;
          } else {
            r = SemaphoreResult::no_slot;
          }
        }
        recompute();
      }
      lock_.unlock();
      if (r != SemaphoreResult::timed_out) return r;
    }
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) return SemaphoreResult::timed_out;
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    detail::WaitResult w = detail::WaitResult::woken;
    if (available_.load(std::memory_order_seq_cst) == 0)
      w = detail::futex_wait(&available_, 0, std::min(deadline_ns, now + slice));
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    // A full slice without a wake-up: perhaps a holder died with permits.
    if (w == detail::WaitResult::timed_out) reclaim_dead();
  }
}

SemaphoreResult Semaphore::wait_for(std::chrono::nanoseconds timeout) noexcept {
  return take(false, detail::deadline_after(timeout));
}

SemaphoreResult Semaphore::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return take(true, detail::deadline_after(timeout));
}

}  // namespace ipc
