// ipc/event.hpp — the event notifier: "wait until something changes", for
// futex sleepers and for epoll users, across processes.
//
// Types: `Event` (the shared struct), `EventListener` (a per-process pollable
// file descriptor bound to one Event), `EventWait`.
//
// An Event is a 32-bit sequence number. notify() increments it and wakes
// everyone waiting for it to change: threads blocked in wait() (futex), and
// armed EventListeners (one datagram each, which makes their fd readable).
// Channels and queues use it as "data arrived" / "space freed".
//
// Why a datagram socket and not an eventfd for the pollable side: an eventfd
// cannot be reached by another process without fd passing (SCM_RIGHTS through
// a broker, or pidfd_getfd, which needs ptrace rights). A Unix datagram socket
// bound in the *abstract* namespace ("\0ipc.ev.<random>") is addressable by
// name from any process of the same network namespace and leaves no file to
// clean up when its owner dies. The listener records that address in a slot.
//
// Layout: line 0 {seq_, waiters_, active_ bitmask}; then kMaxListeners
// slots {owner, token, address, armed_gen, sent_gen}. owner = pid << 32 |
// generation << 2 | state (free / claimed / ready); the generation makes every
// claim distinct, so a reclaim CAS can never free a slot that was re-claimed
// after it looked. Zeroed memory is a valid empty Event.
//
// Listener protocol (no lost wake-up; the same Dekker pair as CondVar):
//   listener L1 armed_gen += 1 (seq_cst) notifier N1 publish the data
//            L2 re-check the condition;           N2 seq_ += 1 (seq_cst)
//               if it holds, handle it            N3 for each active listener:
//            L3 poll/epoll on fd()                   a = armed_gen (seq_cst)
//            L4 drain(), go to L1                    if a != sent_gen: sendto,
//                                                    then CAS sent_gen → a
// Either N3 sees L1's new armed_gen and sends, or L2 sees the data. sent_gen
// is advanced only *after* the datagram went out, so a notifier killed
// between N3's check and its sendto leaves armed_gen != sent_gen and the
// next notifier sends instead: the listener can lose at most a wake-up that
// a later notify() repairs, never stay deaf. Concurrent notifiers may send
// twice; drain() reads all datagrams.
//
// Crash behaviour: a dead futex waiter leaves the waiters_ hint one high (a
// spare FUTEX_WAKE). A dead listener leaves its slot: the next notifier's
// sendto fails with ECONNREFUSED, checks the slot owner's liveness and frees
// the slot; new listeners also reclaim slots of dead processes, including
// slots whose owner died between claiming and becoming ready.
//
// Concurrency: any number of notifiers and waiters in any processes. An
// EventListener object belongs to one process (it owns the socket); do not
// use it in a fork child.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ipc/detail/clock.hpp"

namespace ipc {

enum class EventWait : std::uint8_t { changed, timed_out };

class alignas(64) Event {
 public:
  static constexpr int kMaxListeners = 64;

  Event() noexcept = default;  // placement-new into shared memory (or zeroed memory)
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // The current sequence number; pass it to wait() to sleep until it changes.
  std::uint32_t value() const noexcept { return seq_.load(std::memory_order_seq_cst); }

  // Increments the sequence and wakes all waiters and armed listeners. Costs
  // one atomic RMW and two loads when nobody waits and no listener exists;
  // with listeners, two more loads per listener.
  void notify() noexcept {
    seq_.fetch_add(1, std::memory_order_seq_cst);  // N2
    if (waiters_.load(std::memory_order_seq_cst) != 0 || active_.load(std::memory_order_seq_cst) != 0) [[unlikely]]
      wake_sleepers();
  }

  // Sleeps until value() != seen or the deadline passes. Spurious returns of
  // `changed` do not happen, but the value may have changed more than once.
  EventWait wait(std::uint32_t seen) noexcept;
  EventWait wait_for(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept;
  EventWait wait_until(std::uint32_t seen, std::chrono::steady_clock::time_point deadline) noexcept;

  // Waits until done() returns true, for structures whose notifiers follow
  // the rule "publish the change (seq_cst), then load `waiters` (seq_cst) and
  // notify() if it is not 0" — the waking half of a Dekker pair whose
  // sleeping half is this loop:
  //   W1 waiters += 1 (seq_cst), then a seq_cst fence: the re-check's loads
  //      cannot move before the announcement
  //   W2 seen = value()
  //   W3 done(): true → W5 and return true
  //   W4 sleep until value() != seen, the deadline, or slice_ns have passed
  //   W5 waiters -= 1 (relaxed); done() again; back to W1 if still false
  // Either the notifier's load sees W1 and notifies (W4 returns), or W3 sees
  // the change. The slice bounds every sleep so that callers also notice what
  // no notify announces (a dead producer's stuck slot, a dead lock holder):
  // pass kNoDeadline for "only the deadline". A process killed between W1 and
  // W5 leaves `waiters` one high: notifiers make a spare notify(), no worse.
  // Returns false when the deadline (monotonic ns; kNoDeadline: never) passed
  // before done() returned true; a deadline already passed returns false at
  // once without calling done(). done() runs with no lock held.
  template <class Done>
  bool sleep_until(std::atomic<std::uint32_t>& waiters, std::uint64_t deadline_ns, std::uint64_t slice_ns,
                   Done&& done) noexcept {
    for (;;) {
      const std::uint64_t now = detail::monotonic_ns();
      if (now >= deadline_ns) return false;
      waiters.fetch_add(1, std::memory_order_seq_cst);      // W1
      std::atomic_thread_fence(std::memory_order_seq_cst);  // SYNC POINT: with the notifier's load of `waiters`
      const std::uint32_t seen = value();                   // W2
      const bool finished = done();                         // W3
      if (!finished) wait_impl(seen, slice_ns >= deadline_ns - now ? deadline_ns : now + slice_ns);  // W4
      waiters.fetch_sub(1, std::memory_order_relaxed);                                               // W5
      if (finished || done()) return true;
    }
  }

  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }
  int listeners() const noexcept;

 private:
  friend class EventListener;
  struct Slot {
    std::atomic<std::uint64_t> owner;    // pid << 32 | generation << 2 | state
    std::atomic<std::uint64_t> token;    // process identity (detail::self_token)
    std::atomic<std::uint64_t> address;  // abstract socket name suffix
    std::atomic<std::uint32_t> armed_gen;
    std::atomic<std::uint32_t> sent_gen;
  };
  void wake_sleepers() noexcept;
  // Frees slot i if `observed` is still its owner word and that owner is dead.
  bool reclaim_if_dead(int i, std::uint64_t observed) noexcept;
  EventWait wait_impl(std::uint32_t seen, std::uint64_t deadline_ns) noexcept;

  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint32_t> waiters_{0};
  std::atomic<std::uint64_t> active_{0};  // bit i: slot i may have a ready listener (a hint; set by
                                          // the listener, cleared only by it, stale after its death)
  alignas(64) Slot slots_[kMaxListeners]{};
};

static_assert(sizeof(Event) == 64 + 64 * 32, "Event layout is part of the segment format");

// A pollable handle on an Event for one process. fd() becomes readable after
// a notify() that followed arm(). Typical loop (epoll or poll):
//
//   EventListener l(event);
//   for (;;) {
//     l.arm();
//     if (auto msg = channel.try_receive()) { handle(*msg); continue; }
//     epoll_wait(...);   // fd() readable
//     l.drain();
//   }
class EventListener {
 public:
  // Claims a listener slot and binds the socket. Throws ipc::Error
  // (no_space when all kMaxListeners slots belong to live processes).
  explicit EventListener(Event& event);
  ~EventListener();
  EventListener(const EventListener&) = delete;
  EventListener& operator=(const EventListener&) = delete;

  int fd() const noexcept { return fd_; }
  // Asks for a datagram on the next notify(). Re-check your condition after
  // (arm() ends with a seq_cst fence, so the re-check cannot move before it).
  void arm() noexcept;
  // Reads all pending datagrams (non-blocking); returns how many.
  int drain() noexcept;

 private:
  Event& event_;
  int slot_ = -1;
  std::uint64_t owner_word_ = 0;  // our ready owner word (for the release CAS)
  int fd_ = -1;
};

}  // namespace ipc
