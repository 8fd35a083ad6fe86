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
//   readers_[]    kReaderSlots cache lines {pid, token, count}: one slot per
//                 process holding read locks, so a dead process's read locks
//                 can be subtracted (a single shared count could not tell
//                 whose they were).
//
// lock_shared():                         lock():
//   R1 find/claim my process's slot        W1 writer_.lock()  (owner_died → suspect_ = 1)
//   R2 slot.count += 1      (seq_cst)      W2 state_ = kWriter       (seq_cst)
//   R3 if state_ == 0       (seq_cst)      W3 for each slot: wait until count == 0
//        return (owner_died if suspect_)      (FUTEX_WAIT on the count; after each
//   R4 slot.count -= 1, wake a draining       slice, a slot of a dead process is zeroed)
//      writer, sleep on state_, go to R2   W4 return (owner_died if suspect_)
// unlock_shared(): decrement any slot of my process whose count is > 0 (a
// process may own two slots after a claim race; only the per-process sum
// matters); if state_ != 0 wake that slot's futex.
// Reclaiming a dead process's slot: CAS pid dead → kReclaiming (one winner),
// count = 0, pid = 0; so a new claimant's count is never wiped.
// unlock(): state_ = 0 (release); wake readers; writer_.unlock().
// R2/R3 against W2/W3 is a Dekker pair (all seq_cst): either the reader sees
// the writer and backs off, or the writer sees the reader's count and waits.
//
// Crash behaviour:
//   * a writer dies holding the lock: the kernel releases writer_. The next
//     writer gets owner_died from writer_; sleeping readers notice within one
//     Mutex::kLivenessSlice (they try_lock writer_, get owner_died, clear
//     state_). Either way suspect_ is set and every later lock()/lock_shared()
//     returns owner_died until a writer repairs the data and calls
//     mark_consistent() — never silently reused.
//   * a reader process dies holding read locks: a draining writer zeroes its
//     slot after one slice (pid + start-time liveness check).
//   * a thread exits holding a read lock while its process lives on: the lock
//     stays held until the process exits (slots are per process).
//   * any death between two steps above leaves either a count the writer's
//     liveness check removes, or a writer_ the kernel releases.
// The reader slot table holds kReaderSlots processes at once; a reader that
// finds no slot (all held by live processes) waits for one like a timeout.
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
  [[nodiscard]] LockResult lock() noexcept { return lock_until_ns(kForever); }
  [[nodiscard]] LockResult try_lock() noexcept { return lock_until_ns(0); }
  [[nodiscard]] LockResult try_lock_for(std::chrono::nanoseconds timeout) noexcept;
  void unlock() noexcept;
  // After owner_died, with the exclusive lock held: the data is repaired.
  void mark_consistent() noexcept { suspect_.store(0, std::memory_order_release); }

  // Shared. acquired, owner_died (held, but a writer died mid-update and
  // nobody repaired the data yet), timed_out, not_recoverable.
  [[nodiscard]] LockResult lock_shared() noexcept { return lock_shared_until_ns(kForever); }
  [[nodiscard]] LockResult try_lock_shared() noexcept { return lock_shared_until_ns(0); }
  [[nodiscard]] LockResult try_lock_shared_for(std::chrono::nanoseconds timeout) noexcept;
  void unlock_shared() noexcept;

  // Diagnostics: the writer's LockInfo and the number of read locks held.
  LockInfo writer_info() const noexcept { return writer_.info(); }
  std::uint32_t readers() const noexcept;

 private:
  static constexpr std::uint64_t kForever = ~std::uint64_t{0};
  static constexpr std::uint32_t kWriter = 1;
  struct alignas(64) ReaderSlot {
    std::atomic<std::uint32_t> pid{0};    // 0 = free
    std::atomic<std::uint32_t> count{0};  // futex word for draining writers
    std::atomic<std::uint64_t> token{0};
  };
  LockResult lock_until_ns(std::uint64_t deadline_ns) noexcept;
  LockResult lock_shared_until_ns(std::uint64_t deadline_ns) noexcept;
  ReaderSlot* my_slot(bool claim) noexcept;
  void abandon_write() noexcept;
  bool probe_dead_writer() noexcept;

  Mutex writer_;
  alignas(64) std::atomic<std::uint32_t> state_{0};
  std::atomic<std::uint32_t> suspect_{0};
  std::atomic<std::uint32_t> sleepers_{0};  // readers asleep on state_ (hint)
  ReaderSlot readers_[kReaderSlots];
};

}  // namespace ipc
