// ipc/detail/futex.hpp — thin wrappers over futex(2) for words in shared
// memory. Never FUTEX_PRIVATE_FLAG: private futex keys are (mm, address) and a
// wake from another process would be lost silently (futex(2), "FUTEX_PRIVATE_FLAG"). Deadlines are
// absolute CLOCK_MONOTONIC nanoseconds (FUTEX_WAIT_BITSET), so a wait that is
// interrupted and restarted never stretches its timeout.
#pragma once

#include <atomic>
#include <cstdint>

#include "ipc/detail/clock.hpp"  // kNoDeadline

namespace ipc::detail {

enum class WaitResult { woken, value_changed, timed_out, interrupted };

// Sleeps while *word == expected, until woken or deadline_ns (monotonic).
WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      std::uint64_t deadline_ns) noexcept;
// Wakes up to `count` waiters on word; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>* word, int count) noexcept;
// Same on a raw int word that another component (glibc) owns.
int futex_wake_raw(const int* word, int count) noexcept;

}  // namespace ipc::detail
