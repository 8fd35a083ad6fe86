#include "ipc/mutex.hpp"

#include <linux/futex.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include "ipc/detail/futex.hpp"
#include "labels.hpp"
#include "log.hpp"

#if defined(__SANITIZE_THREAD__)
#define IPC_TSAN 1
#include <sanitizer/tsan_interface.h>
#else
#define IPC_TSAN 0
#endif

namespace ipc {
namespace {

// glibc-internal values of pthread_mutex_t::__data.__owner (nptl/pthreadP.h),
// read for diagnostics only.
constexpr int kGlibcOwnerInconsistent = INT_MAX;
constexpr int kGlibcOwnerNotRecoverable = INT_MAX - 1;

timespec to_timespec(std::uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000u);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000u);
  return ts;
}

}  // namespace

const char* to_string(LockResult r) noexcept {
  switch (r) {
    case LockResult::acquired: return "acquired";
    case LockResult::owner_died: return "owner_died";
    case LockResult::timed_out: return "timed_out";
    case LockResult::not_recoverable: return "not_recoverable";
    case LockResult::deadlock: return "deadlock";
    case LockResult::invalid: return "invalid";
  }
  return "unknown";
}

Mutex::Mutex() noexcept : magic_(0) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Error-checking: relocking by the owner returns EDEADLK instead of hanging,
  // unlocking by a non-owner returns EPERM. Same fast path cost as NORMAL.
  ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  ::pthread_mutex_init(&native_, &attr);
  ::pthread_mutexattr_destroy(&attr);
  magic_ = kMagic;
}

LockResult Mutex::finish(int rc) noexcept {
  switch (rc) {
    case 0: note_owner(); return LockResult::acquired;
    case EOWNERDEAD:
      note_owner();
      log::warn("{}: previous owner died holding it; caller must repair and mark_consistent()",
                detail::object_label(this, "mutex"));
      return LockResult::owner_died;
    case ENOTRECOVERABLE: {
      // glibc 2.36 pthread_mutex_trylock takes the lock word (0 → our tid)
      // before it sees NOTRECOVERABLE and returns without releasing it, which
      // would wedge the mutex for every process. Release it as unlock would.
      int* word = &native_.__data.__lock;
      int observed = __atomic_load_n(word, __ATOMIC_RELAXED);
      if ((static_cast<std::uint32_t>(observed) & FUTEX_TID_MASK) == detail::self().tid) {
        int prev = __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
        if (static_cast<std::uint32_t>(prev) & FUTEX_WAITERS) detail::futex_wake_raw(word, 1);
      }
      return LockResult::not_recoverable;
    }
    case EDEADLK: return LockResult::deadlock;
    default: return LockResult::timed_out;  // EBUSY, ETIMEDOUT
  }
}

int Mutex::clocklock(const timespec* deadline) noexcept {
#if IPC_TSAN
  // libtsan (GCC 12) does not intercept pthread_mutex_clocklock: tell it.
  __tsan_mutex_pre_lock(&native_, __tsan_mutex_try_lock);
  int rc = ::pthread_mutex_clocklock(&native_, CLOCK_MONOTONIC, deadline);
  bool got = rc == 0 || rc == EOWNERDEAD;
  __tsan_mutex_post_lock(&native_, __tsan_mutex_try_lock | (got ? 0 : __tsan_mutex_try_lock_failed), 0);
  return rc;
#else
  return ::pthread_mutex_clocklock(&native_, CLOCK_MONOTONIC, deadline);
#endif
}

LockResult Mutex::try_lock() noexcept {
  if (!valid()) return LockResult::invalid;
  return finish(::pthread_mutex_trylock(&native_));
}

LockResult Mutex::try_lock_for(std::chrono::nanoseconds timeout) noexcept {
  if (!valid()) return LockResult::invalid;
  int rc = ::pthread_mutex_trylock(&native_);
  if (rc != EBUSY) return finish(rc);
  return lock_slow(rc, detail::deadline_after(timeout));
}

LockResult Mutex::try_lock_until(std::chrono::steady_clock::time_point deadline) noexcept {
  if (!valid()) return LockResult::invalid;
  int rc = ::pthread_mutex_trylock(&native_);
  if (rc != EBUSY) return finish(rc);
  return lock_slow(rc, detail::deadline_ns(deadline));
}

LockResult Mutex::lock_slow(int first_rc, std::uint64_t deadline_ns) noexcept {
  if (!valid()) [[unlikely]] {
    // Zeroed memory is a glibc *normal* mutex: blocking on it would sleep on
    // a private futex, deaf to other processes, with no owner-died. lock()
    // only gets here when its trylock failed, so nothing is held to undo.
    log::error("{}: lock on memory that is not an initialised Mutex (magic {:#x}); refused",
               detail::object_label(this, "mutex"), magic_);
    return LockResult::invalid;
  }
  if (first_rc != EBUSY) return finish(first_rc);
  std::uint64_t now = detail::monotonic_ns();
  if (now >= deadline_ns) return LockResult::timed_out;

  waiters_.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t none = 0;
  waiting_since_ns_.compare_exchange_strong(none, now, std::memory_order_relaxed);
  const std::uint64_t slice = std::chrono::duration_cast<std::chrono::nanoseconds>(kLivenessSlice).count();
  int rc = ETIMEDOUT;
  for (;;) {
    std::uint64_t until = now + slice < deadline_ns ? now + slice : deadline_ns;
    timespec ts = to_timespec(until);
    rc = clocklock(&ts);
    if (rc != ETIMEDOUT && rc != EINTR) break;
    now = detail::monotonic_ns();
    if (now >= deadline_ns) break;
    recover_dead_owner();
  }
  // Whoever stops waiting last clears the "waiting since" mark; a new owner
  // with waiters behind it restarts the clock for them.
  if (waiters_.fetch_sub(1, std::memory_order_relaxed) == 1)
    waiting_since_ns_.store(0, std::memory_order_relaxed);
  else if (rc == 0 || rc == EOWNERDEAD)
    waiting_since_ns_.store(detail::monotonic_ns(), std::memory_order_relaxed);
  return finish(rc);
}

void Mutex::recover_dead_owner() noexcept {
  // glibc x86-64/aarch64 ABI: __data.__lock is the kernel-ABI robust futex word.
  int* word = &native_.__data.__lock;
  int observed = __atomic_load_n(word, __ATOMIC_ACQUIRE);  // A
  auto tid = static_cast<std::uint32_t>(observed) & FUTEX_TID_MASK;
  if (tid == 0) return;  // free, or the kernel already marked OWNER_DIED
  std::uint64_t before = acquisitions_.load(std::memory_order_acquire);  // B
  std::uint64_t rec = owner_.load(std::memory_order_relaxed);
  std::uint64_t token = owner_token_.load(std::memory_order_relaxed);
  // SYNC POINT: pairs with the release fence in note_owner().
  std::atomic_thread_fence(std::memory_order_acquire);
  if (acquisitions_.load(std::memory_order_relaxed) != before) return;  // C: changed hands meanwhile
  if (static_cast<std::uint32_t>(rec) != tid) return;                   // owner unknown: assume alive
  auto pid = static_cast<pid_t>(rec >> 32);
  if (detail::thread_liveness(pid, static_cast<pid_t>(tid), token) != detail::Liveness::dead) return;
  int died = static_cast<int>((static_cast<std::uint32_t>(observed) & FUTEX_WAITERS) | FUTEX_OWNER_DIED);
  if (__atomic_compare_exchange_n(word, &observed, died, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    log::warn("{}: owner pid {} tid {} is dead but the kernel did not release the lock; released it",
              detail::object_label(this, "mutex"), pid, tid);
    detail::futex_wake_raw(word, 1);
  }
}

void Mutex::unlock_failed(int rc) noexcept {
  log::error("{}: unlock by a thread that does not own it ({}); ignored", detail::object_label(this, "mutex"),
             std::strerror(rc));
}

bool Mutex::mark_consistent() noexcept { return ::pthread_mutex_consistent(&native_) == 0; }

LockInfo Mutex::info() const noexcept {
  LockInfo out;
  std::uint64_t rec = owner_.load(std::memory_order_acquire);
  out.owner_pid = static_cast<std::uint32_t>(rec >> 32);
  out.owner_tid = static_cast<std::uint32_t>(rec);
  out.waiters = waiters_.load(std::memory_order_relaxed);
  out.acquisitions = acquisitions_.load(std::memory_order_relaxed);
  std::uint64_t since = waiting_since_ns_.load(std::memory_order_relaxed);
  std::uint64_t now = detail::monotonic_ns();
  out.waited_ns = since != 0 && now > since ? now - since : 0;
  int glibc_owner = __atomic_load_n(&native_.__data.__owner, __ATOMIC_RELAXED);
  out.owner_died_unrepaired = glibc_owner == kGlibcOwnerInconsistent;
  out.not_recoverable = glibc_owner == kGlibcOwnerNotRecoverable;
  return out;
}

}  // namespace ipc
