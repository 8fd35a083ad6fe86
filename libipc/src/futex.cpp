#include "ipc/detail/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace ipc::detail {

WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      std::uint64_t deadline_ns) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == 4 && std::atomic<std::uint32_t>::is_always_lock_free);
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline_ns != kNoDeadline) {
    ts.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000u);
    ts.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000u);
    tsp = &ts;
  }
  // Shared (no FUTEX_PRIVATE_FLAG), absolute monotonic deadline.
  long rc = ::syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return WaitResult::woken;
  switch (errno) {
    case EAGAIN: return WaitResult::value_changed;
    case ETIMEDOUT: return WaitResult::timed_out;
    default: return WaitResult::interrupted;  // EINTR; callers re-check and loop
  }
}

int futex_wake(const std::atomic<std::uint32_t>* word, int count) noexcept {
  long rc = ::syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

int futex_wake_raw(const int* word, int count) noexcept {
  long rc = ::syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

}  // namespace ipc::detail
