#include "ipc/shared_mutex.hpp"

#include <algorithm>

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"
#include "labels.hpp"
#include "log.hpp"

namespace ipc {
namespace {

constexpr std::uint32_t kClaiming = 0x80000000u;  // pids are < 2^22 (pid_max)
const std::uint64_t kSliceNs = std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count();

std::uint32_t owner_of(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
std::uint32_t count_of(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
std::uint64_t make_word(std::uint32_t owner, std::uint32_t count) { return std::uint64_t{owner} << 32 | count; }

}  // namespace

bool SharedMutex::reclaim_if_dead(ReaderSlot& slot, std::uint64_t observed) noexcept {
  std::uint32_t owner = owner_of(observed);
  if (owner == 0) return false;
  detail::Liveness l = owner & kClaiming ? detail::process_liveness(static_cast<pid_t>(owner & ~kClaiming), 0)
                                         : detail::process_liveness(static_cast<pid_t>(owner),
                                                                    slot.token.load(std::memory_order_relaxed));
  if (l != detail::Liveness::dead) return false;
  if (!slot.word.compare_exchange_strong(observed, 0, std::memory_order_acq_rel)) return false;
  if (count_of(observed))
    log::warn("{}: reader process {} died holding {} read lock(s); released them",
              detail::object_label(this, "shared_mutex"), owner & ~kClaiming, count_of(observed));
  return true;
}

SharedMutex::ReaderSlot* SharedMutex::my_slot() noexcept {
  const std::uint32_t me = detail::self_pid();
  const std::uint64_t token = detail::self_token();
  const int start = static_cast<int>(me % kReaderSlots);
  for (int j = 0; j < kReaderSlots; ++j) {
    ReaderSlot& s = readers_[(start + j) % kReaderSlots];
    std::uint64_t w = s.word.load(std::memory_order_acquire);
    if (owner_of(w) != me) continue;
    if (s.token.load(std::memory_order_relaxed) == token) return &s;
    // My pid, another token: a dead predecessor's slot (pid reuse) — or, in
    // a mapping shared with another PID namespace, a live namesake's, which
    // must keep its read count. Freed only when its owner is provably dead.
    reclaim_if_dead(s, w);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (int j = 0; j < kReaderSlots; ++j) {
      ReaderSlot& s = readers_[(start + j) % kReaderSlots];
      std::uint64_t w = s.word.load(std::memory_order_acquire);
      // Pass 0 takes free slots. Pass 1 also takes slots of dead processes,
      // and idle slots (count 0) of live ones: a process that holds no read
      // lock loses nothing, and finds or claims a slot again on its next read.
      bool idle = owner_of(w) != 0 && !(owner_of(w) & kClaiming) && count_of(w) == 0;
      if (w != 0 && pass == 1 && !idle && reclaim_if_dead(s, w)) w = 0;
      if (w != 0 && !(pass == 1 && idle)) continue;
      if (!s.word.compare_exchange_strong(w, make_word(me | kClaiming, 0), std::memory_order_acq_rel)) continue;  // C1
      s.token.store(token, std::memory_order_relaxed);                                                            // C2
      s.word.store(make_word(me, 0), std::memory_order_release);                                                  // C3
      return &s;
    }
  }
  return nullptr;
}

LockResult SharedMutex::lock_shared_until_ns(std::uint64_t deadline_ns) noexcept {
  const std::uint32_t me = detail::self_pid();
  for (;;) {
    ReaderSlot* slot = my_slot();  // R1
    if (slot) {
      std::uint64_t w = slot->word.load(std::memory_order_relaxed);
      while (owner_of(w) == me && !slot->word.compare_exchange_weak(w, w + 1, std::memory_order_seq_cst)) {
      }
      if (owner_of(w) != me) continue;                    // our idle slot was taken: find another
      {                                                   // R2 done
        if (state_.load(std::memory_order_seq_cst) == 0)  // R3
          return suspect_.load(std::memory_order_acquire) ? LockResult::owner_died : LockResult::acquired;
        w = slot->word.load(std::memory_order_relaxed);  // R4
        while (!slot->word.compare_exchange_weak(w, w - 1, std::memory_order_seq_cst)) {
        }
        reader_released();
      }
    }
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) return LockResult::timed_out;
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    // With a slot: sleep while a writer is active. Without one: sleep a slice.
    std::uint32_t st = state_.load(std::memory_order_seq_cst);
    detail::WaitResult r = detail::WaitResult::woken;
    if (!slot || st != 0) r = detail::futex_wait(&state_, st, std::min(deadline_ns, now + kSliceNs));
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    if (r == detail::WaitResult::timed_out && state_.load(std::memory_order_acquire) != 0) probe_dead_writer();
  }
}

void SharedMutex::reader_released() noexcept {
  if (state_.load(std::memory_order_seq_cst) == 0) return;
  drain_seq_.fetch_add(1, std::memory_order_seq_cst);
  detail::futex_wake(&drain_seq_, INT32_MAX);
}

bool SharedMutex::probe_dead_writer() noexcept {
  LockResult r = writer_.try_lock();
  if (r == LockResult::owner_died) {
    log::warn("{}: a writer died holding it; readers will see owner_died until a writer repairs",
              detail::object_label(this, "shared_mutex"));
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
  const std::uint64_t token = detail::self_token();
  // Start where my_slot() starts, so the usual case touches only our own
  // line (scanning from slot 0 read other processes' slot lines on every
  // unlock: structures_bench map_2proc).
  const int start = static_cast<int>(me % kReaderSlots);
  for (int j = 0; j < kReaderSlots; ++j) {
    ReaderSlot& s = readers_[(start + j) % kReaderSlots];
    std::uint64_t w = s.word.load(std::memory_order_acquire);
    if (owner_of(w) != me || s.token.load(std::memory_order_relaxed) != token) continue;
    while (count_of(w) != 0 && owner_of(w) == me &&
           !s.word.compare_exchange_weak(w, w - 1, std::memory_order_seq_cst)) {
    }
    if (owner_of(w) != me || count_of(w) == 0) continue;  // this slot held none; a process may own two
    reader_released();
    return;
  }
  log::error("{}: unlock_shared by a process that holds no read lock; ignored",
             detail::object_label(this, "shared_mutex"));
}

LockResult SharedMutex::lock_until_ns(std::uint64_t deadline_ns) noexcept {
  LockResult r;
  if (deadline_ns == detail::kNoDeadline) {
    r = writer_.lock();  // W1
  } else if (deadline_ns == 0) {
    r = writer_.try_lock();
  } else {
    r = writer_.try_lock_until(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns)));
  }
  if (!owns(r)) return r;
  if (r == LockResult::owner_died) {
    suspect_.store(1, std::memory_order_release);
    writer_.mark_consistent();
  }
  state_.store(kWriter, std::memory_order_seq_cst);  // W2
  for (;;) {                                         // W3
    std::uint32_t seq = drain_seq_.load(std::memory_order_seq_cst);
    bool busy = false;
    for (ReaderSlot& s : readers_) busy |= count_of(s.word.load(std::memory_order_seq_cst)) != 0;
    if (!busy) break;
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) {
      abandon_write();
      return LockResult::timed_out;
    }
    if (detail::futex_wait(&drain_seq_, seq, std::min(deadline_ns, now + kSliceNs)) != detail::WaitResult::timed_out)
      continue;
    for (ReaderSlot& s : readers_) {
      std::uint64_t w = s.word.load(std::memory_order_acquire);
      if (count_of(w) != 0) reclaim_if_dead(s, w);
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
  return lock_until_ns(detail::deadline_after(timeout));
}

LockResult SharedMutex::try_lock_shared_for(std::chrono::nanoseconds timeout) noexcept {
  return lock_shared_until_ns(detail::deadline_after(timeout));
}

std::uint32_t SharedMutex::readers() const noexcept {
  std::uint32_t n = 0;
  for (const ReaderSlot& s : readers_) n += count_of(s.word.load(std::memory_order_relaxed));
  return n;
}

}  // namespace ipc
