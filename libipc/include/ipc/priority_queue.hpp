// ipc/priority_queue.hpp — a bounded, multi-producer/multi-consumer priority
// queue in shared memory that survives SIGKILL of any user at any instant.
//
// Types: `QueueStatus` (what a push/pop did), `QueueStats`,
// `PriorityQueueCore` (type-erased: element size fixed at creation),
// `PriorityQueue<T>` (typed wrapper), `PriorityQueueListener` (pollable fd).
//
// Order: the element with the *largest* int32 priority leaves first; among
// equal priorities, the one pushed first (FIFO). Every push takes the next
// value of a 64-bit sequence counter and (priority desc, seq asc) is a strict
// total order, so the heap is stable.
//
// Shared-memory layout (one named object, ObjectType::priority_queue):
//
//   QueueHeader  line 0   immutable: magic "IPCPQUE1", layout version,
//                          element size, capacity, payload stride, offsets
//                lines 1-2 Mutex lock (robust; guards everything below
//                          except the atomics marked "lock-free")
//                line 3   size, journal op, next seq, counters (pushes/pops/
//                          repairs: written under the lock, read lock-free),
//                          depth (lock-free mirror of size), free count,
//                          the journal key
//                line 4   pop_waiters, push_waiters, wait_ns (written only by
//                          callers that block; read by every push/pop, so on
//                          the uncontended path this line stays shared-clean)
//                         Event not_empty, Event not_full (2112 bytes each)
//   keys         capacity × 16 B: a binary max-heap in [0, size) of
//                Key = { u64 seq (0 = empty slot), i32 priority, u32 payload }
//   free stack   capacity × u32: payload slots no key names
//   payloads     capacity × element size (rounded up to 8)
// A sift moves 16-byte keys; an element's bytes are written once (push)
// and read once (pop). Every key slot at or beyond `size` is empty (seq 0)
// when no operation is in flight, so zeroed keys are an empty heap and a
// repair can scan the whole key array without knowing how far a dead writer
// got. The free stack is derived data: a repair rebuilds it from the keys.
//
// Moving a key into a slot ("put") is three ordered writes:
//   slot.seq = 0; copy priority + payload index; slot.seq = source seq.
// A put cut short leaves seq 0 (an empty slot), never a valid seq with a
// half-copied key. Every put in this file overwrites either an empty slot
// or a slot whose key has a complete copy elsewhere (in another slot or in
// the journal), so the element set is never reduced by a torn put.
// Ordering of these plain stores: a SIGKILLed process stops at an
// instruction boundary and its retired stores are a prefix of program order,
// so only the compiler must keep the order (std::atomic_signal_fence); the
// repairer synchronises with the dead writer through the robust lock.
//
// push(e, p) — lock held throughout:
//   P1. lock (owner_died → repair, below); full → unlock, return `full`.
//   P2. copy e into the payload slot on top of the free stack; journal key =
//       {next_seq, p, that slot}; then journal op = push.
//   P3. next_seq += 1; pop the free stack.
//   P4. sift up with a hole from slot `size`: put(parent → child) while the
//       parent comes after e; then put(e → hole).
//   P5. size += 1; depth = size (seq_cst, Dekker with a sleeping consumer).
//   P6. journal op = none; pushes += 1; unlock; if a consumer is registered
//       as waiting or listening, notify not_empty (on every push, not only
//       the first: a producer killed between unlock and notify must not leave
//       a listener deaf while later pushes go on).
//   Death before P2's op store: nothing changed. Between P2 and P6: the
//   array holds every old element at least once (a hole move copies before
//   the source is overwritten) and perhaps e; e is in the journal. The
//   repairer keeps e (the push had not returned: either outcome is allowed).
//
// pop(out) — lock held throughout:
//   Q1. lock (owner_died → repair); empty → unlock, return `empty`.
//   Q2. copy the top's element into `out`, its key into the journal;
//       journal op = pop.
//   Q3. sift the last element x (slot size-1) down from the root with a hole:
//       put(better child → hole) while that child comes before x; put(x → hole).
//   Q4. slot size-1 = empty (x has its copy in the hole now).
//   Q5. size -= 1; depth = size (seq_cst); push the top's payload slot on
//       the free stack (nothing reuses it before Q6).
//   Q6. journal op = none; pops += 1; unlock; if a producer waits, notify
//       not_full (every pop, for the same reason).
//   Death between Q2 and Q6: the top exists only in the journal (Q3's first
//   put overwrote the root); every other element is in the array at least
//   once (x stays in slot size-1 until Q4). The repairer puts the top back:
//   the dead pop consumed nothing. Death after Q6's journal store (in the
//   unlock, or after return) counts as a completed pop. `out` was written at
//   Q2, before the element left the queue: if `out` is in shared memory, a
//   survivor finds a popped element either in the queue or in `out` (or
//   both), never nowhere (tests/priority_queue_test.cpp "crash: ...").
//
// Repair (the next locker got owner_died; idempotent: a repairer killed at
// any point leaves the lock owner-died again and the next one starts over):
//   R1. dedup: scan every slot; for each seq seen twice, empty the later slot.
//   R2. compact: move valid entries down into empty slots (put, then empty
//       the source; death between leaves a duplicate that R1 removes).
//   R3. if the journal op is not none and its seq is in no slot, put the
//       journal entry into the first empty slot.
//   R4. journal op = none (everything is in the array now).
//   R5. Floyd heapify over [0, m). Each sift-down journals its element
//       first (op = repair), so the hole it opens is covered like a pop's.
//   R6. rebuild the free stack: the payload slots no key in [0, m) names;
//       size = depth = m; next_seq = max(next_seq, largest seq + 1);
//       repairs += 1; mark_consistent(); notify both events (a waiter may be
//       owed a wake-up the dead process never sent).
//
// Waiting: pop/pop_for/push/push_for spin briefly (128 pauses) re-reading
// depth, then register in pop_waiters/push_waiters
// (seq_cst), read the Event value, re-check depth (seq_cst) and sleep on the
// Event in slices of Mutex::kLivenessSlice; after a slice they retry under
// the lock, which runs the repair if a process died mid-operation (so an
// element restored from a dead consumer is found within one slice even if
// nobody else touches the queue). A waiter killed while registered leaves
// its count one high: later operations notify needlessly, nothing else.
//
// Pollable consumers: PriorityQueueListener (from listen()) registers as a
// standing consumer waiter and owns an EventListener on not_empty:
//   auto l = queue.listen();               // fd() goes into your epoll set
//   for (;;) {
//     l.arm();                             // 1. arm
//     while (queue.try_pop(x) == QueueStatus::ok) handle(x);  // 2. try_pop
//     epoll_wait(ep, ..., 100 /*ms*/);     // 3. wait for fd() readable
//     l.drain();
//   }
// Use a finite epoll timeout (e.g. Mutex::kLivenessSlice) if a consumer may
// be killed inside pop while no other process touches the queue: its
// element is restored by the next locker, and nobody notifies until then.
// An EventListener built directly on not_empty_event() only receives
// datagrams while some consumer is registered; use listen().
//
// Concurrency: any number of threads in any number of processes may call
// any method. Hot paths (push/pop/peek and their variants) never throw; they
// return a QueueStatus. `not_recoverable` means the internal lock was left
// owner-died without repair by foreign code: recreate the queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "ipc/event.hpp"
#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"

namespace ipc {

namespace detail {
struct PriorityQueueHeader;  // the shared layout; defined in priority_queue.cpp
}

enum class QueueStatus : std::uint8_t {
  ok,
  full,             // try_push: no free slot
  empty,            // try_pop/peek: nothing queued
  timed_out,        // push_for/pop_for: the deadline passed
  not_recoverable,  // the internal lock is broken or the shared state is corrupted; recreate the queue
};
const char* to_string(QueueStatus s) noexcept;

struct QueueStats {
  std::uint32_t depth = 0;  // elements queued (lock-free snapshot)
  std::uint32_t capacity = 0;
  std::uint32_t element_size = 0;
  std::uint64_t pushes = 0;        // successful pushes since creation
  std::uint64_t pops = 0;          // successful pops since creation
  std::uint64_t repairs = 0;       // owner-died repairs run
  std::uint64_t wait_ns = 0;       // total time blocking calls spent waiting
  std::uint32_t pop_waiters = 0;   // consumers blocked or listening (hint)
  std::uint32_t push_waiters = 0;  // producers blocked (hint)
};

class PriorityQueueListener;

class PriorityQueueCore {
 public:
  static constexpr std::uint32_t kMaxElementSize = 64 * 1024;
  static constexpr std::uint32_t kMaxCapacity = 1u << 24;

  // Bytes the queue object needs in its segment (directory entry excluded).
  static std::size_t bytes_needed(std::uint32_t capacity, std::uint32_t element_size) noexcept;

  // Creates the queue object `name`. Throws invalid_argument for capacity 0
  // or > kMaxCapacity, element_size 0 or > kMaxElementSize; already_exists;
  // no_space (the message says how many bytes are needed).
  static PriorityQueueCore create(Segment& segment, std::string_view name, std::uint32_t capacity,
                                  std::uint32_t element_size);
  // Opens an existing queue. Throws not_found, type_mismatch (another
  // object type; the message names both), bad_magic, version_mismatch,
  // corrupted (inconsistent header), invalid_argument (element_size != 0 and
  // different from the queue's). element_size 0 accepts any.
  static PriorityQueueCore open(Segment& segment, std::string_view name, std::uint32_t element_size = 0);

  // Non-blocking. `full` / `empty` when there is nothing to do.
  [[nodiscard]] QueueStatus try_push(const void* element, std::int32_t priority) noexcept;
  // `out` receives element_size() bytes, written before the element leaves
  // the queue (see Q2). `priority` may be null.
  [[nodiscard]] QueueStatus try_pop(void* out, std::int32_t* priority = nullptr) noexcept;
  // Copies the next element without removing it.
  [[nodiscard]] QueueStatus peek(void* out, std::int32_t* priority = nullptr) noexcept;

  // Blocking; deadline is CLOCK_MONOTONIC ns (detail::kNoDeadline: forever).
  // A deadline in the past means "try once".
  [[nodiscard]] QueueStatus push_until(const void* element, std::int32_t priority, std::uint64_t deadline_ns) noexcept;
  [[nodiscard]] QueueStatus pop_until(void* out, std::int32_t* priority, std::uint64_t deadline_ns) noexcept;

  std::uint32_t size() const noexcept;  // lock-free snapshot; may lag a pending repair
  std::uint32_t capacity() const noexcept;
  std::uint32_t element_size() const noexcept;
  QueueStats stats() const noexcept;

  // The Event notified after pushes (see the header comment: use listen()).
  Event& not_empty_event() const noexcept;
  // A pollable consumer handle. Throws ipc::Error like EventListener.
  PriorityQueueListener listen() const;

  // Locks and checks the invariants: heap order, no duplicate or missing
  // seq below size, every slot at or beyond size empty. Returns a
  // description of the first violation, or nullopt. Runs the repair first
  // if a process died holding the lock. For tests and `ipcctl doctor`.
  std::optional<std::string> check() noexcept;

  const std::string& name() const noexcept { return name_; }

 private:
  using Header = detail::PriorityQueueHeader;
  PriorityQueueCore(Header* h, std::string name) noexcept : h_(h), name_(std::move(name)) {}
  QueueStatus lock() noexcept;  // acquired (ok) or not_recoverable; repairs on owner_died
  void repair() noexcept;

  Header* h_;
  std::string name_;
};

// A consumer's pollable fd for one queue: fd() turns readable after a push
// that followed arm(). Registers as a standing consumer waiter so that pushes
// notify. Belongs to the process that made it (do not use in a fork child).
class PriorityQueueListener {
 public:
  PriorityQueueListener(PriorityQueueListener&& other) noexcept;
  PriorityQueueListener& operator=(PriorityQueueListener&& other) noexcept;
  ~PriorityQueueListener();

  int fd() const noexcept { return listener_->fd(); }
  void arm() noexcept { listener_->arm(); }
  int drain() noexcept { return listener_->drain(); }

 private:
  friend class PriorityQueueCore;
  PriorityQueueListener(Event& event, std::atomic<std::uint32_t>* waiters);
  std::unique_ptr<EventListener> listener_;
  std::atomic<std::uint32_t>* waiters_ = nullptr;
};

// The typed queue. T is copied in and out by value (memcpy), across
// processes that map the segment at different addresses.
template <typename T>
class PriorityQueue {
  static_assert(std::is_trivially_copyable_v<T>,
                "PriorityQueue<T> copies T between processes with memcpy: T must be trivially copyable (no "
                "pointers into private memory, no owning members; put large data in a pool buffer and queue its "
                "ipc::BufferHandle)");

 public:
  static PriorityQueue create(Segment& segment, std::string_view name, std::uint32_t capacity) {
    return PriorityQueue(PriorityQueueCore::create(segment, name, capacity, sizeof(T)));
  }
  static PriorityQueue open(Segment& segment, std::string_view name) {
    return PriorityQueue(PriorityQueueCore::open(segment, name, sizeof(T)));
  }

  [[nodiscard]] QueueStatus try_push(const T& value, std::int32_t priority) noexcept {
    return core_.try_push(&value, priority);
  }
  [[nodiscard]] QueueStatus push(const T& value, std::int32_t priority) noexcept {
    return core_.push_until(&value, priority, detail::kNoDeadline);
  }
  [[nodiscard]] QueueStatus push_for(const T& value, std::int32_t priority, std::chrono::nanoseconds timeout) noexcept {
    return core_.push_until(&value, priority, detail::deadline_after(timeout));
  }
  [[nodiscard]] QueueStatus try_pop(T& out, std::int32_t* priority = nullptr) noexcept {
    return core_.try_pop(&out, priority);
  }
  [[nodiscard]] std::optional<T> try_pop() noexcept {
    T out;
    if (core_.try_pop(&out, nullptr) != QueueStatus::ok) return std::nullopt;
    return out;
  }
  [[nodiscard]] QueueStatus pop(T& out, std::int32_t* priority = nullptr) noexcept {
    return core_.pop_until(&out, priority, detail::kNoDeadline);
  }
  [[nodiscard]] QueueStatus pop_for(T& out, std::chrono::nanoseconds timeout,
                                    std::int32_t* priority = nullptr) noexcept {
    return core_.pop_until(&out, priority, detail::deadline_after(timeout));
  }
  [[nodiscard]] QueueStatus peek(T& out, std::int32_t* priority = nullptr) noexcept {
    return core_.peek(&out, priority);
  }

  std::uint32_t size() const noexcept { return core_.size(); }
  std::uint32_t capacity() const noexcept { return core_.capacity(); }
  QueueStats stats() const noexcept { return core_.stats(); }
  Event& not_empty_event() const noexcept { return core_.not_empty_event(); }
  PriorityQueueListener listen() const { return core_.listen(); }
  std::optional<std::string> check() noexcept { return core_.check(); }
  PriorityQueueCore& core() noexcept { return core_; }

 private:
  explicit PriorityQueue(PriorityQueueCore core) noexcept : core_(std::move(core)) {}
  PriorityQueueCore core_;
};

}  // namespace ipc
