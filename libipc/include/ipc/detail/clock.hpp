// ipc/detail/clock.hpp — one way to say "how long" and "until when".
//
// Platform layer (below everything). Every timed call in libipc takes either a
// timeout (`std::chrono::nanoseconds`, `ipc::kForever` for "never give up") or
// an absolute deadline; internally deadlines are CLOCK_MONOTONIC nanoseconds
// (`std::uint64_t`, `kNoDeadline` for "never"), which is what futex(2) with
// FUTEX_WAIT_BITSET sleeps against. steady_clock is CLOCK_MONOTONIC on Linux,
// so a steady_clock::time_point converts without a clock read.
//
// Conversions saturate: `deadline_after(kForever)` is kNoDeadline, not
// now + INT64_MAX wrapped into the past, and a deadline too far away to
// represent is also kNoDeadline. A timeout of zero or less is a deadline
// that has already passed ("try once"): it is `now`, never 0, so callers that
// use 0 as "do not wait at all" still see a non-zero deadline from a *_for.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

namespace ipc {

// A timeout that never expires: `x.try_lock_for(ipc::kForever)` blocks until
// it succeeds (or the primitive reports a failure such as owner_died).
inline constexpr std::chrono::nanoseconds kForever = std::chrono::nanoseconds::max();

namespace detail {

// The monotonic-ns deadline that never passes.
inline constexpr std::uint64_t kNoDeadline = ~std::uint64_t{0};

// CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds (vDSO: no system call).
inline std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
inline std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// The monotonic-ns deadline `timeout` from now: kForever (or anything that
// would overflow) → kNoDeadline; zero or negative → now (already passed).
inline std::uint64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const std::uint64_t now = monotonic_ns();
  if (timeout.count() <= 0) return now;
  const auto t = static_cast<std::uint64_t>(timeout.count());
  return t >= kNoDeadline - now ? kNoDeadline : now + t;
}

// A steady_clock (= CLOCK_MONOTONIC) deadline as monotonic ns; a time point
// before the clock's epoch → 0 (passed); time_point::max() → kNoDeadline.
inline std::uint64_t deadline_ns(std::chrono::steady_clock::time_point tp) noexcept {
  if (tp == std::chrono::steady_clock::time_point::max()) return kNoDeadline;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
  return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

// The steady_clock time point `timeout` from now, saturating at
// time_point::max() (for the few APIs that take a time point).
inline std::chrono::steady_clock::time_point deadline_time_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = std::chrono::steady_clock::now();
  if (timeout > std::chrono::steady_clock::time_point::max() - now) return std::chrono::steady_clock::time_point::max();
  return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
}

}  // namespace detail
}  // namespace ipc
