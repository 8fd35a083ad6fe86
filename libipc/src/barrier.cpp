#include "ipc/barrier.hpp"

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"
#include "labels.hpp"
#include "log.hpp"

namespace ipc {

std::string BarrierResult::message() const {
  switch (status) {
    case ok: return "ok";
    case broken:
      return "barrier broken: participant pid " + std::to_string(dead_pid) + " died; call reset() and re-join";
    case timed_out: return "barrier wait timed out";
    case not_joined: return "the calling thread has not joined the barrier; call join() first";
    case not_recoverable: return "the barrier's internal lock is not recoverable; recreate the barrier";
  }
  return "unknown";
}

Barrier::Barrier(std::uint32_t participants) noexcept
    : participants_(participants >= 1 && participants <= kMaxParticipants ? participants : 0) {}

bool Barrier::lock_internal() noexcept {
  LockResult r = lock_.lock();
  if (r == LockResult::owner_died) {
    // Nothing to repair: every step is a single store, and completion is
    // recomputed from the slots each time.
    lock_.mark_consistent();
    return true;
  }
  return r == LockResult::acquired;
}

int Barrier::my_slot() const noexcept {
  detail::ThreadIdentity me = detail::self();
  const std::uint64_t token = detail::self_token();
  for (std::uint32_t i = 0; i < kMaxParticipants; ++i)
    if (slots_[i].pid == me.pid && slots_[i].tid == me.tid && slots_[i].token == token) return static_cast<int>(i);
  return -1;
}

namespace {
template <typename Slot>
bool participant_dead(const Slot& s) {
  return detail::thread_liveness(static_cast<pid_t>(s.pid), static_cast<pid_t>(s.tid), s.token) ==
         detail::Liveness::dead;
}
}  // namespace

std::uint32_t Barrier::joined() const noexcept {
  std::uint32_t n = 0;
  for (const Slot& s : slots_) n += s.pid != 0;
  return n;
}

void Barrier::join() {
  if (participants_ == 0)
    throw Error(ErrorCode::invalid_argument, "barrier was created with an invalid participant count (must be 1.." +
                                                 std::to_string(kMaxParticipants) + ")");
  if (!lock_internal())
    throw Error(ErrorCode::not_recoverable, "barrier lock is not recoverable; recreate the barrier");
  struct Unlock {
    Mutex& m;
    ~Unlock() { m.unlock(); }
  } unlock{lock_};
  if (my_slot() >= 0) throw Error(ErrorCode::already_exists, "this thread already joined the barrier");
  if (joined() >= participants_) {
    for (Slot& s : slots_)
      if (s.pid && participant_dead(s)) s = Slot{};
    if (joined() >= participants_)
      throw Error(ErrorCode::no_space, "barrier already has its " + std::to_string(participants_) +
                                           " participants, all alive; leave() one first");
  }
  for (Slot& s : slots_) {
    if (s.pid) continue;
    detail::ThreadIdentity me = detail::self();
    s = Slot{me.pid, me.tid, detail::self_token(), 0};
    return;
  }
}

void Barrier::leave() noexcept {
  if (!lock_internal()) return;
  int i = my_slot();
  if (i >= 0) slots_[i] = Slot{};
  // The leaver may have been the last one not arrived: complete the phase.
  if (joined() == participants_ && phase_complete()) advance_locked();
  lock_.unlock();
}

bool Barrier::phase_complete() const noexcept {
  std::uint32_t arrived = 0;
  for (const Slot& s : slots_) arrived += s.pid != 0 && s.arrived_phase == std::uint64_t{phase_} + 1;
  return arrived == participants_;
}

void Barrier::advance_locked() noexcept {
  ++phase_;
  phase_word_.fetch_add(1, std::memory_order_release);  // a change counter, never stored back
  detail::futex_wake(&phase_word_, INT32_MAX);
}

bool Barrier::check_dead_locked() noexcept {
  if (broken_pid_.load(std::memory_order_relaxed)) return true;
  for (const Slot& s : slots_) {
    if (!s.pid || s.arrived_phase == std::uint64_t{phase_} + 1) continue;
    if (!participant_dead(s)) continue;
    log::warn("{}: participant pid {} tid {} died before arriving; breaking the barrier",
              detail::object_label(this, "barrier"), s.pid, s.tid);
    broken_pid_.store(s.pid, std::memory_order_release);
    last_dead_pid_.store(s.pid, std::memory_order_release);
    ++epoch_;
    phase_word_.fetch_add(1, std::memory_order_release);  // wakes sleepers; phase_ itself does not advance
    detail::futex_wake(&phase_word_, INT32_MAX);
    return true;
  }
  return false;
}

BarrierResult Barrier::arrive(std::uint64_t deadline_ns) noexcept {
  BarrierResult out;
  if (!lock_internal()) return {BarrierResult::not_recoverable, 0};
  if (std::uint32_t dead = broken_pid_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    return {BarrierResult::broken, dead};
  }
  int i = my_slot();
  if (i < 0) {
    lock_.unlock();
    return {BarrierResult::not_joined, 0};
  }
  slots_[i].arrived_phase = std::uint64_t{phase_} + 1;  // step 2
  if (joined() == participants_ && phase_complete()) {  // step 3
    advance_locked();
    lock_.unlock();
    return out;
  }
  const std::uint32_t my_phase = phase_;
  const std::uint32_t my_epoch = epoch_;
  std::uint32_t seen = phase_word_.load(std::memory_order_acquire);
  lock_.unlock();

  const std::uint64_t slice = std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count();
  for (;;) {  // step 4
    std::uint32_t now_word = phase_word_.load(std::memory_order_acquire);
    if (now_word != seen) {
      if (!lock_internal()) return {BarrierResult::not_recoverable, 0};
      bool moved = phase_ != my_phase;
      bool broke = epoch_ != my_epoch;
      std::uint32_t dead = last_dead_pid_.load(std::memory_order_relaxed);
      lock_.unlock();
      if (moved) return out;
      if (broke) return {BarrierResult::broken, dead};
      seen = now_word;
    }
    std::uint64_t now = detail::monotonic_ns();
    if (now >= deadline_ns) {
      // Withdraw the arrival so a later phase does not count it twice.
      if (lock_internal()) {
        bool moved = phase_ != my_phase;
        bool broke = epoch_ != my_epoch;
        std::uint32_t dead = last_dead_pid_.load(std::memory_order_relaxed);
        if (!moved && !broke && (i = my_slot()) >= 0) slots_[i].arrived_phase = 0;
        lock_.unlock();
        if (moved) return out;
        if (broke) return {BarrierResult::broken, dead};
      }
      return {BarrierResult::timed_out, 0};
    }
    if (detail::futex_wait(&phase_word_, seen, std::min(deadline_ns, now + slice)) == detail::WaitResult::timed_out) {
      if (!lock_internal()) return {BarrierResult::not_recoverable, 0};
      check_dead_locked();
      lock_.unlock();
    }
  }
}

BarrierResult Barrier::arrive_and_wait_for(std::chrono::nanoseconds timeout) noexcept {
  return arrive(detail::deadline_after(timeout));
}

void Barrier::reset() noexcept {
  if (!lock_internal()) return;
  for (Slot& s : slots_) {
    if (s.pid && participant_dead(s)) s = Slot{};
    s.arrived_phase = 0;
  }
  broken_pid_.store(0, std::memory_order_release);
  ++epoch_;  // anyone still asleep in the old epoch returns broken, not ok
  phase_word_.fetch_add(1, std::memory_order_release);
  detail::futex_wake(&phase_word_, INT32_MAX);
  lock_.unlock();
}

}  // namespace ipc
