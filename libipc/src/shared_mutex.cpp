#include "ipc/shared_mutex.hpp"

#include <algorithm>

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"
#include "ipc/log.hpp"

namespace ipc {
namespace {
constexpr std::uint32_t kReclaiming = 0xffffffffu;
const std::uint64_t kSliceNs = std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count();
}  // namespace

SharedMutex::ReaderSlot* SharedMutex::my_slot(bool claim) noexcept {
  const std::uint32_t me = detail::self_pid();
  const int start = static_cast<int>(me % kReaderSlots);
  for (int j = 0; j < kReaderSlots; ++j) {
    ReaderSlot& s = readers_[(start + j) % kReaderSlots];
    if (s.pid.load(std::memory_order_acquire) == me) return &s;
  }
  if (!claim) return nullptr;
  for (int pass = 0; pass < 2; ++pass) {
    for (int j = 0; j < kReaderSlots; ++j) {
      ReaderSlot& s = readers_[(start + j) % kReaderSlots];
      std::uint32_t pid = s.pid.load(std::memory_order_acquire);
      if (pass == 1 && pid != 0 && pid != kReclaiming &&
          detail::process_liveness(static_cast<pid_t>(pid), s.token.load(std::memory_order_relaxed)) ==
              detail::Liveness::dead &&
          s.pid.compare_exchange_strong(pid, kReclaiming, std::memory_order_acq_rel)) {
        s.count.store(0, std::memory_order_seq_cst);
        s.pid.store(0, std::memory_order_release);
        pid = 0;
      }
      if (pid != 0) continue;
      if (s.pid.compare_exchange_strong(pid, me, std::memory_order_acq_rel)) {
        s.token.store(detail::self_token(), std::memory_order_relaxed);
        return &s;
      }
    }
  }
  return nullptr;
}

LockResult SharedMutex::lock_shared_until_ns(std::uint64_t deadline_ns) noexcept {
  for (;;) {
    ReaderSlot* slot = my_slot(true);  // R1
    if (slot) {
      slot->count.fetch_add(1, std::memory_order_seq_cst);  // R2
      if (state_.load(std::memory_order_seq_cst) == 0)       // R3
        return suspect_.load(std::memory_order_acquire) ? LockResult::owner_died : LockResult::acquired;
      slot->count.fetch_sub(1, std::memory_order_seq_cst);  // R4
      detail::futex_wake(&slot->count, 1);
    }
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) return LockResult::timed_out;
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    detail::WaitResult w = detail::WaitResult::woken;
    if (!slot || state_.load(std::memory_order_seq_cst) != 0)
      w = detail::futex_wait(&state_, kWriter, std::min(deadline_ns, now + kSliceNs));
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    if (w == detail::WaitResult::timed_out && state_.load(std::memory_order_acquire) != 0) probe_dead_writer();
  }
}

bool SharedMutex::probe_dead_writer() noexcept {
  LockResult r = writer_.try_lock();
  if (r == LockResult::owner_died) {
    log::warn("shared mutex {}: a writer died holding it; readers will see owner_died until a writer repairs",
              static_cast<const void*>(this));
    suspect_.store(1, std::memory_order_release);
    state_.store(0, std::memory_order_seq_cst);
    writer_.mark_consistent();  // suspect_ now carries the "unrepaired" state
    writer_.unlock();
    detail::futex_wake(&state_, INT32_MAX);
    return true;
  }
  if (r == LockResult::acquired) writer_.unlock();
  return false;
}

void SharedMutex::unlock_shared() noexcept {
  const std::uint32_t me = detail::self_pid();
  for (ReaderSlot& s : readers_) {
    if (s.pid.load(std::memory_order_acquire) != me) continue;
    std::uint32_t c = s.count.load(std::memory_order_relaxed);
    while (c != 0 && !s.count.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst)) {
    }
    if (c == 0) continue;
    if (state_.load(std::memory_order_seq_cst) != 0) detail::futex_wake(&s.count, 1);
    return;
  }
  log::error("shared mutex {}: unlock_shared by a process that holds no read lock; ignored",
             static_cast<const void*>(this));
}

LockResult SharedMutex::lock_until_ns(std::uint64_t deadline_ns) noexcept {
  LockResult r;
  if (deadline_ns == kForever) {
    r = writer_.lock();  // W1
  } else if (deadline_ns == 0) {
    r = writer_.try_lock();
  } else {
    auto tp = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns));
    r = writer_.try_lock_until(tp);
  }
  if (!owns(r)) return r;
  if (r == LockResult::owner_died) {
    suspect_.store(1, std::memory_order_release);
    writer_.mark_consistent();
  }
  state_.store(kWriter, std::memory_order_seq_cst);  // W2
  for (ReaderSlot& s : readers_) {                   // W3
    for (;;) {
      std::uint32_t c = s.count.load(std::memory_order_seq_cst);
      if (c == 0) break;
      std::uint64_t now = detail::monotonic_ns();
      if (now >= deadline_ns) {
        abandon_write();
        return LockResult::timed_out;
      }
      if (detail::futex_wait(&s.count, c, std::min(deadline_ns, now + kSliceNs)) != detail::WaitResult::timed_out)
        continue;
      std::uint32_t pid = s.pid.load(std::memory_order_acquire);
      if (pid == 0 || pid == kReclaiming) continue;
      if (detail::process_liveness(static_cast<pid_t>(pid), s.token.load(std::memory_order_relaxed)) !=
          detail::Liveness::dead)
        continue;
      if (s.pid.compare_exchange_strong(pid, kReclaiming, std::memory_order_acq_rel)) {
        log::warn("shared mutex {}: reader process {} died holding {} read lock(s); released them",
                  static_cast<const void*>(this), pid, c);
        s.count.store(0, std::memory_order_seq_cst);
        s.pid.store(0, std::memory_order_release);
      }
    }
  }
  return suspect_.load(std::memory_order_acquire) ? LockResult::owner_died : LockResult::acquired;  // W4
}

void SharedMutex::abandon_write() noexcept {
  state_.store(0, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst)) detail::futex_wake(&state_, INT32_MAX);
  writer_.unlock();
}

void SharedMutex::unlock() noexcept { abandon_write(); }

LockResult SharedMutex::try_lock_for(std::chrono::nanoseconds timeout) noexcept {
  return lock_until_ns(detail::deadline_ns(std::chrono::steady_clock::now() + timeout));
}

LockResult SharedMutex::try_lock_shared_for(std::chrono::nanoseconds timeout) noexcept {
  return lock_shared_until_ns(detail::deadline_ns(std::chrono::steady_clock::now() + timeout));
}

std::uint32_t SharedMutex::readers() const noexcept {
  std::uint32_t n = 0;
  for (const ReaderSlot& s : readers_) n += s.count.load(std::memory_order_relaxed);
  return n;
}

}  // namespace ipc
