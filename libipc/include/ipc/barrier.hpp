// ipc/barrier.hpp — a process-shared, reusable barrier that breaks, instead
// of hanging, when a participant dies.
//
// Types: `Barrier`, `BarrierResult`.
//
// N participants (threads in any processes) join() once, then call
// arrive_and_wait() once per phase. When all N joined participants have
// arrived, the phase completes and every waiter returns `ok`.
//
// Layout: an internal robust Mutex guarding {participants_, phase_, slots[]}
// where slot i = {pid, tid, token, arrived_phase}; a 32-bit futex word
// `phase_word_` (a counter bumped on every phase change, break and reset) that
// waiters sleep on; broken_pid_.
//
// arrive_and_wait (mutex held for the bookkeeping only):
//   1. lock; if broken → unlock, return broken (with the dead pid);
//   2. my slot.arrived_phase = phase_;
//   3. if every joined slot arrived at phase_: phase_ += 1,
//      phase_word_ += 1 (release), FUTEX_WAKE all; unlock; return ok;
//   4. remember phase_ and epoch_; unlock; sleep on phase_word_ in slices of
//      Mutex::kLivenessSlice; after a slice without a wake-up, lock and check
//      every joined slot that has not arrived: if its thread or process is
//      dead, set broken_pid_ and last_dead_pid_, epoch_ += 1, bump
//      phase_word_, wake all. Return ok when phase_ moved on; broken when
//      epoch_ moved without the phase completing (a break, or a reset() by
//      another survivor while this one slept).
// A participant dying between any two steps: inside the lock → the next
// locker gets owner_died; the state needs no repair (each step is one store
// and the completion check is recomputed from the slots every time). Outside
// the lock → step 4 of the others notices it within one slice.
// After a break, reset() (by a survivor) clears dead slots, arrivals and the
// broken state and bumps epoch_; survivors and replacements then join() again
// as needed. A participant is a (pid, tid, identity token): a slot is found by
// all three, and counts as dead when its thread exited (tgkill → ESRCH) or
// its process did.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "ipc/mutex.hpp"

namespace ipc {

struct BarrierResult {
  enum Status : std::uint8_t { ok, broken, timed_out, not_joined, not_recoverable } status = ok;
  std::uint32_t dead_pid = 0;  // for broken: the participant that died
  // "participant pid 1234 died; call reset() and re-join"
  std::string message() const;
};

class alignas(64) Barrier {
 public:
  static constexpr std::uint32_t kMaxParticipants = 64;

  // participants: 1..kMaxParticipants (else participants() reports 0 and
  // join() throws invalid_argument).
  explicit Barrier(std::uint32_t participants) noexcept;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Registers the calling thread. Throws ipc::Error when all slots are taken
  // by live participants, or the thread already joined. Slots of dead
  // processes are reclaimed first.
  void join();
  // Unregisters the calling thread (a barrier with fewer than N joined
  // participants cannot complete a phase until someone joins).
  void leave() noexcept;

  BarrierResult arrive_and_wait() noexcept { return arrive(detail::kNoDeadline); }
  BarrierResult arrive_and_wait_for(std::chrono::nanoseconds timeout) noexcept;

  // Clears a broken barrier: drops slots of dead processes and the broken flag.
  void reset() noexcept;

  std::uint32_t participants() const noexcept { return participants_; }
  std::uint32_t joined() const noexcept;
  // Completed phases since creation (racy read; diagnostics).
  std::uint32_t phase() const noexcept { return phase_.load(std::memory_order_relaxed); }
  std::uint32_t broken_pid() const noexcept { return broken_pid_.load(std::memory_order_acquire); }

 private:
  struct Slot {
    std::uint32_t pid;  // 0 = free
    std::uint32_t tid;
    std::uint64_t token;
    std::uint64_t arrived_phase;  // phase + 1 of the last arrival, 0 = none
  };
  BarrierResult arrive(std::uint64_t deadline_ns) noexcept;
  bool lock_internal() noexcept;
  int my_slot() const noexcept;
  bool phase_complete() const noexcept;
  void advance_locked() noexcept;
  bool check_dead_locked() noexcept;  // sets broken_pid_; true if broken

  Mutex lock_;
  std::uint32_t participants_;
  std::atomic<std::uint32_t> phase_{0};                   // written under lock_; atomic for the racy phase() read
  alignas(64) std::atomic<std::uint32_t> phase_word_{0};  // futex word
  std::atomic<std::uint32_t> broken_pid_{0};
  std::atomic<std::uint32_t> last_dead_pid_{0};  // survives reset(), for waiters that slept through it
  std::uint32_t epoch_ = 0;                      // breaks + resets, under lock_
  Slot slots_[kMaxParticipants]{};
};

}  // namespace ipc
