#include "ipc/condvar.hpp"

#include <algorithm>

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"

namespace ipc {

void CondVar::notify(int count) noexcept {
  seq_.fetch_add(1, std::memory_order_seq_cst);      // N1
  if (waiters_.load(std::memory_order_seq_cst) > 0)  // N2
    detail::futex_wake(&seq_, count);
}

CondWait CondVar::wait_impl(Mutex& m, std::uint64_t deadline_ns) noexcept {
  waiters_.fetch_add(1, std::memory_order_seq_cst);           // W1
  std::uint32_t seen = seq_.load(std::memory_order_seq_cst);  // W2
  m.unlock();                                                 // W3
  CondWait out;
  const std::uint64_t slice = std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count();
  for (;;) {
    // Sleep in slices: a notify_one whose woken waiter was killed before it
    // re-locked is otherwise lost for the others (bounded to one slice).
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) {
      out.timed_out = true;
      break;
    }
    detail::WaitResult r = detail::futex_wait(&seq_, seen, std::min(deadline_ns, now + slice));  // W4
    if (r == detail::WaitResult::woken || r == detail::WaitResult::value_changed) break;
    if (seq_.load(std::memory_order_acquire) != seen) break;  // slice ended after a notify
  }
  waiters_.fetch_sub(1, std::memory_order_relaxed);  // W5
  out.lock = m.lock();                               // W6
  return out;
}

CondWait CondVar::wait(Mutex& m) noexcept { return wait_impl(m, detail::kNoDeadline); }

CondWait CondVar::wait_for(Mutex& m, std::chrono::nanoseconds timeout) noexcept {
  return wait_impl(m, detail::deadline_after(timeout));
}

CondWait CondVar::wait_until(Mutex& m, std::chrono::steady_clock::time_point deadline) noexcept {
  return wait_impl(m, detail::deadline_ns(deadline));
}

}  // namespace ipc
