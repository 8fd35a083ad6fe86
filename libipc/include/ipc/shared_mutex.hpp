// ipc/shared_mutex.hpp — a robust process-shared reader/writer lock.
//
// Types: `SharedMutex`.
//
// Layout:
//   writer_       ipc::Mutex: serialises writers; robust (kernel + backstop)
//   state_        32-bit futex word: kWriter while a writer holds or is
//                 draining readers, else 0; readers sleep on it
//   suspect_      1 after a writer died holding the lock, until a writer
//                 calls mark_consistent()
//   drain_seq_    32-bit futex word a draining writer sleeps on; bumped by a
//                 reader that releases while state_ != 0
//   readers_[]    kReaderSlots cache lines {word = owner << 32 | count, token}:
//                 one slot per process holding read locks, so a dead process's
//                 read locks can be dropped (one shared count could not tell
//                 whose they were). owner 0 = free; pid | kClaiming while being
//                 claimed. Owner and count share one 64-bit word so that
//                 claiming and reclaiming are single CASes (no kill point
//                 between "take the slot" and "fix its count").
//
// Finding my slot: owner == my pid *and* token == my identity token. A slot with
// my pid and another token belongs to a dead process whose pid I reuse.
// Claiming: C1 CAS word 0 → (pid|kClaiming, 0); C2 token = mine; C3 word =
// (pid, 0) (release). A reader of the slot loads the word (acquire) before the
// token, so it never pairs a new owner with an old token. Dying after C1
// leaves a claiming slot that reclaimers free once that pid is gone.
// Reclaiming a dead owner's slot: one CAS from the exact word observed to 0.
//
// lock_shared():                         lock():
//   R1 find/claim my slot                  W1 writer_.lock()  (owner_died → suspect_ = 1)
//   R2 CAS count + 1        (seq_cst)      W2 state_ = kWriter       (seq_cst)
//   R3 if state_ == 0       (seq_cst)      W3 s = drain_seq_; if every count == 0 go to W4;
//        return (owner_died if suspect_)      else FUTEX_WAIT(drain_seq_, s, slice); after
//   R4 CAS count - 1, bump drain_seq_ and     a slice, reclaim slots of dead processes;
//      wake, sleep on state_, go to R2        repeat W3
//                                          W4 return (owner_died if suspect_)
// unlock_shared(): CAS count - 1 on my slot; if state_ != 0, bump drain_seq_
// and wake the writer.
// unlock(): state_ = 0 (seq_cst); wake sleeping readers; writer_.unlock().
// R2/R3 against W2/W3 is a Dekker pair (all seq_cst): either the reader sees
// the writer and backs off, or the writer sees the reader's count and waits;
// a release after the writer read drain_seq_ bumps it, so its sleep ends.
//
// Crash behaviour:
//   * a writer dies holding the lock: the kernel releases writer_. The next
//     writer gets owner_died from writer_; sleeping readers notice within one
//     Mutex::kLivenessSlice (they try_lock writer_, get owner_died, clear
//     state_). Either way suspect_ is set and every later lock()/lock_shared()
//     returns owner_died until a writer repairs the data and calls
//     mark_consistent() — never silently reused.
//   * a reader process dies holding read locks: a draining writer drops its
//     slot after one slice (identity-token liveness check).
//   * a thread exits holding a read lock while its process lives on: the lock
//     stays held until the process exits (slots are per process).
// The slot table holds kReaderSlots processes *holding read locks* at once:
// a claimant with no free slot takes a dead process's slot, or an idle slot
// (count 0) of a live one, by CAS from the exact word it saw; the idle owner's
// next R2 CAS fails, and it finds or claims another slot. A reader that finds
// none (kReaderSlots live processes all holding read locks) sleeps a slice and
// retries, within its deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipc/mutex.hpp"

namespace ipc {

class alignas(64) SharedMutex {
 public:
  static constexpr int kReaderSlots = 32;

  SharedMutex() noexcept = default;  // placement-new into shared memory
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  // Exclusive. Results as for Mutex::lock().
  [[nodiscard]] LockResult lock() noexcept { return lock_until_ns(detail::kNoDeadline); }
  [[nodiscard]] LockResult try_lock() noexcept { return lock_until_ns(0); }
  [[nodiscard]] LockResult try_lock_for(std::chrono::nanoseconds timeout) noexcept;
  void unlock() noexcept;
  // After owner_died, with the exclusive lock held: the data is repaired.
  void mark_consistent() noexcept { suspect_.store(0, std::memory_order_release); }

  // Shared. acquired, owner_died (held, but a writer died mid-update and
  // nobody repaired the data yet), timed_out, not_recoverable.
  [[nodiscard]] LockResult lock_shared() noexcept { return lock_shared_until_ns(detail::kNoDeadline); }
  [[nodiscard]] LockResult try_lock_shared() noexcept { return lock_shared_until_ns(0); }
  [[nodiscard]] LockResult try_lock_shared_for(std::chrono::nanoseconds timeout) noexcept;
  void unlock_shared() noexcept;

  // Diagnostics: the writer's LockInfo and the number of read locks held.
  LockInfo writer_info() const noexcept { return writer_.info(); }
  std::uint32_t readers() const noexcept;

 private:
  static constexpr std::uint32_t kWriter = 1;
  struct alignas(64) ReaderSlot {
    std::atomic<std::uint64_t> word{0};   // owner << 32 | count
    std::atomic<std::uint64_t> token{0};  // owner's identity token
  };
  LockResult lock_until_ns(std::uint64_t deadline_ns) noexcept;
  LockResult lock_shared_until_ns(std::uint64_t deadline_ns) noexcept;
  ReaderSlot* my_slot() noexcept;
  bool reclaim_if_dead(ReaderSlot& slot, std::uint64_t observed) noexcept;
  void abandon_write() noexcept;
  bool probe_dead_writer() noexcept;
  void reader_released() noexcept;

  Mutex writer_;
  alignas(64) std::atomic<std::uint32_t> state_{0};
  std::atomic<std::uint32_t> suspect_{0};
  std::atomic<std::uint32_t> sleepers_{0};  // readers asleep on state_ (hint)
  std::atomic<std::uint32_t> drain_seq_{0};
  ReaderSlot readers_[kReaderSlots];
};

}  // namespace ipc
