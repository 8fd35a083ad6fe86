// The shared priority queue: layout, push/pop with a journal, and the
// owner-died repair. The protocol (steps P1-P6, Q1-Q6, R1-R6) is written
// out in ipc/priority_queue.hpp; the step labels below refer to it.
#include "ipc/priority_queue.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include "ipc/detail/cpu.hpp"
#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"
#include "log.hpp"

namespace ipc {

namespace {

constexpr std::uint64_t kQueueMagic = 0x3145555150435049ull;  // "IPCPQUE1" (little endian)
constexpr std::uint32_t kQueueLayoutVersion = 1;

// Journal op values. Zero (zeroed memory) is "nothing in flight".
constexpr std::uint32_t kOpNone = 0;
constexpr std::uint32_t kOpPush = 1;
constexpr std::uint32_t kOpPop = 2;
constexpr std::uint32_t kOpRepair = 3;

// A heap key (array slot or journal). The element's bytes live in payload
// slot `payload`, so a sift moves 16 bytes, not the element.
struct EntryHead {
  std::atomic<std::uint64_t> seq;  // 0 = empty slot; an atomic so no store is merged away
  std::int32_t priority;
  std::uint32_t payload;  // index into the payload array
};
static_assert(sizeof(EntryHead) == 16);
constexpr std::size_t kKeyBytes = sizeof(EntryHead);
constexpr std::size_t kSeqBytes = sizeof(std::uint64_t);

// Keeps the crash-visible order of plain stores (see "Ordering" in the
// header): a compiler barrier; the hardware keeps a killed process's
// retired stores in program order for the repairer, who synchronises
// through the robust lock.
inline void crash_order() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

std::uint32_t stride_for(std::uint32_t element_size) { return static_cast<std::uint32_t>(round_up(element_size, 8)); }

struct Offsets {
  std::uint64_t keys, free, payload, total;
};
Offsets offsets_for(std::uint64_t header, std::uint32_t capacity, std::uint32_t element_size) {
  Offsets o;
  o.keys = header;
  o.free = o.keys + round_up(std::uint64_t{capacity} * kKeyBytes, 64);
  o.payload = o.free + round_up(std::uint64_t{capacity} * 4, 64);
  o.total = o.payload + round_up(std::uint64_t{capacity} * stride_for(element_size), 64);
  return o;
}

}  // namespace

const char* to_string(QueueStatus s) noexcept {
  switch (s) {
    case QueueStatus::ok: return "ok";
    case QueueStatus::full: return "full";
    case QueueStatus::empty: return "empty";
    case QueueStatus::timed_out: return "timed_out";
    case QueueStatus::not_recoverable: return "not_recoverable";
  }
  return "unknown";
}

struct alignas(64) detail::PriorityQueueHeader {
  // Line 0: immutable after creation.
  std::uint64_t magic = 0;  // written last by the creator
  std::uint32_t layout_version = kQueueLayoutVersion;
  std::uint32_t element_size = 0;
  std::uint32_t capacity = 0;
  std::uint32_t stride = 0;  // bytes per payload slot (element size rounded up to 8)
  std::uint64_t total_bytes = 0;
  std::uint64_t entries_offset = 0;  // keys; all offsets from the start of this header
  std::uint64_t free_offset = 0;     // free payload slots: a stack of u32
  std::uint64_t payload_offset = 0;

  // Lines 1-2: guards lines 3 and the entries.
  Mutex lock;

  // Line 3: written by the lock holder.
  alignas(64) std::uint32_t size = 0;
  std::atomic<std::uint32_t> journal_op{kOpNone};
  std::uint64_t next_seq = 1;  // 0 marks an empty slot
  std::atomic<std::uint64_t> pushes{0};
  std::atomic<std::uint64_t> pops{0};
  std::atomic<std::uint64_t> repairs{0};
  std::atomic<std::uint32_t> depth{0};  // lock-free mirror of size (seq_cst: Dekker with sleepers)
  std::uint32_t free_count = 0;         // entries in the free stack (rebuilt by a repair)
  EntryHead journal_key{};              // the key that may exist nowhere else (op != none)

  // Line 4: written only by callers that block.
  alignas(64) std::atomic<std::uint32_t> pop_waiters{0};
  std::atomic<std::uint32_t> push_waiters{0};
  std::atomic<std::uint64_t> wait_ns{0};

  Event not_empty;
  Event not_full;

  std::byte* base() noexcept { return reinterpret_cast<std::byte*>(this); }
  std::byte* slot(std::uint32_t i) noexcept { return base() + entries_offset + std::uint64_t{i} * kKeyBytes; }
  std::byte* journal() noexcept { return reinterpret_cast<std::byte*>(&journal_key); }
  std::uint32_t* free_stack() noexcept { return reinterpret_cast<std::uint32_t*>(base() + free_offset); }
  std::byte* payload(std::uint32_t p) noexcept { return base() + payload_offset + std::uint64_t{p} * stride; }
};

static_assert(sizeof(detail::PriorityQueueHeader) == 64 + 128 + 64 + 64 + 2 * sizeof(Event),
              "priority queue header layout is part of the segment format");

namespace {

using Header = detail::PriorityQueueHeader;

EntryHead* head(std::byte* e) noexcept { return reinterpret_cast<EntryHead*>(e); }
std::uint64_t seq_of(std::byte* e) noexcept { return head(e)->seq.load(std::memory_order_relaxed); }

// a leaves before b: higher priority, then lower seq (FIFO).
bool before(std::byte* a, std::byte* b) noexcept {
  const std::int32_t pa = head(a)->priority, pb = head(b)->priority;
  return pa > pb || (pa == pb && seq_of(a) < seq_of(b));
}

// Moves an entry into a slot: empty the slot, copy, then publish the seq.
// A put cut short leaves an empty slot, never a valid seq with a torn payload.
void put(const Header&, std::byte* dst, std::byte* src) noexcept {
  head(dst)->seq.store(0, std::memory_order_relaxed);
  crash_order();
  std::memcpy(dst + kSeqBytes, src + kSeqBytes, kKeyBytes - kSeqBytes);
  crash_order();
  head(dst)->seq.store(seq_of(src), std::memory_order_relaxed);
}

// Sift up with a hole from slot `hole` (empty), then place e (P4).
void sift_up(Header& h, std::uint32_t hole, std::byte* e) noexcept {
  std::uint32_t i = hole;
  while (i > 0) {
    std::uint32_t p = (i - 1) / 2;
    if (!before(e, h.slot(p))) break;
    put(h, h.slot(i), h.slot(p));  // the parent keeps its copy until the next move overwrites it
    i = p;
  }
  put(h, h.slot(i), e);
}

// Sift x down with a hole from `start` within [0, n) (Q3, R5). x lies
// outside [0, n) or in the journal, so the moves never overwrite it.
void sift_down(Header& h, std::uint32_t start, std::uint32_t n, std::byte* x) noexcept {
  std::uint32_t i = start;
  for (;;) {
    std::uint64_t c = 2 * std::uint64_t{i} + 1;
    if (c >= n) break;
    if (c + 1 < n && before(h.slot(static_cast<std::uint32_t>(c + 1)), h.slot(static_cast<std::uint32_t>(c)))) ++c;
    std::byte* child = h.slot(static_cast<std::uint32_t>(c));
    if (!before(child, x)) break;
    put(h, h.slot(i), child);  // the child keeps its copy until the next move
    i = static_cast<std::uint32_t>(c);
  }
  put(h, h.slot(i), x);
}

// Copies an entry into the journal and publishes `op` (P2, Q2, R5). The op is
// none while the copy is written, so a repairer never reads a torn journal.
void journal(Header& h, std::byte* src_head_and_payload, std::uint64_t seq, std::uint32_t op) noexcept {
  std::byte* j = h.journal();
  std::memcpy(j + kSeqBytes, src_head_and_payload + kSeqBytes, kKeyBytes - kSeqBytes);
  head(j)->seq.store(seq, std::memory_order_relaxed);
  crash_order();
  h.journal_op.store(op, std::memory_order_relaxed);
  crash_order();
}

void journal_clear(Header& h) noexcept {
  crash_order();
  h.journal_op.store(kOpNone, std::memory_order_relaxed);
  crash_order();
}

void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // lock holder only
}

std::string describe(const std::string& name, const Segment& segment) {
  return "priority queue '" + name + "' in segment '" + segment.name() + "'";
}

}  // namespace

// ---- setup ---------------------------------------------------------------------------

std::size_t PriorityQueueCore::bytes_needed(std::uint32_t capacity, std::uint32_t element_size) noexcept {
  return offsets_for(sizeof(Header), capacity, element_size).total;
}

PriorityQueueCore PriorityQueueCore::create(Segment& segment, std::string_view name, std::uint32_t capacity,
                                            std::uint32_t element_size) {
  const std::string what = describe(std::string(name), segment);
  if (capacity == 0 || capacity > kMaxCapacity)
    throw Error(ErrorCode::invalid_argument, what + ": capacity " + std::to_string(capacity) +
                                                 " is out of range; pass 1.." + std::to_string(kMaxCapacity));
  if (element_size == 0 || element_size > kMaxElementSize)
    throw Error(ErrorCode::invalid_argument, what + ": element size " + std::to_string(element_size) +
                                                 " is out of range; pass 1.." + std::to_string(kMaxElementSize) +
                                                 " bytes (queue a BufferHandle for larger data)");
  const std::size_t total = bytes_needed(capacity, element_size);
  if (total > segment.size())
    throw Error(ErrorCode::no_space, what + " needs " + std::to_string(total) + " bytes but the segment has only " +
                                         std::to_string(segment.size()) +
                                         "; create a larger segment or lower the capacity");
  Object obj = segment.create_object(name, ObjectType::priority_queue, total, [&](void* p, std::size_t) {
    auto* h = new (p) Header{};
    h->element_size = element_size;
    h->capacity = capacity;
    h->stride = stride_for(element_size);
    h->total_bytes = total;
    const Offsets o = offsets_for(sizeof(Header), capacity, element_size);
    h->entries_offset = o.keys;
    h->free_offset = o.free;
    h->payload_offset = o.payload;
    // The keys are zeroed storage: every slot empty (seq 0). Every payload slot is free.
    for (std::uint32_t i = 0; i < capacity; ++i) h->free_stack()[i] = capacity - 1 - i;
    h->free_count = capacity;
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kQueueMagic;  // published last: a zeroed magic means "not initialised"
  });
  return PriorityQueueCore(static_cast<Header*>(obj.data), std::string(name));
}

PriorityQueueCore PriorityQueueCore::open(Segment& segment, std::string_view name, std::uint32_t element_size) {
  Object obj = segment.open_object(name, ObjectType::priority_queue);
  const std::string what = describe(std::string(name), segment);
  auto* h = static_cast<Header*>(obj.data);
  if (obj.info.size < sizeof(Header) || h->magic != kQueueMagic)
    throw Error(ErrorCode::bad_magic, what + " has no valid queue header (not initialised or corrupted); re-create it");
  if (h->layout_version != kQueueLayoutVersion)
    throw Error(ErrorCode::version_mismatch, what + " has layout version " + std::to_string(h->layout_version) +
                                                 ", this libipc reads " + std::to_string(kQueueLayoutVersion) +
                                                 "; re-create the queue or use a matching libipc");
  if (h->capacity == 0 || h->capacity > kMaxCapacity || h->element_size == 0 || h->element_size > kMaxElementSize ||
      h->stride != stride_for(h->element_size) || h->total_bytes != bytes_needed(h->capacity, h->element_size) ||
      h->total_bytes > obj.info.size ||
      h->entries_offset != offsets_for(sizeof(Header), h->capacity, h->element_size).keys ||
      h->free_offset != offsets_for(sizeof(Header), h->capacity, h->element_size).free ||
      h->payload_offset != offsets_for(sizeof(Header), h->capacity, h->element_size).payload || !h->lock.valid())
    throw Error(ErrorCode::corrupted, what + ": header fields are inconsistent; re-create the queue");
  if (element_size != 0 && element_size != h->element_size)
    throw Error(ErrorCode::invalid_argument, what + " holds " + std::to_string(h->element_size) +
                                                 "-byte elements, but the caller's element type has " +
                                                 std::to_string(element_size) +
                                                 " bytes; open it with the type it was created with");
  return PriorityQueueCore(h, std::string(name));
}

// ---- locking and repair --------------------------------------------------------------

QueueStatus PriorityQueueCore::lock() noexcept {
  LockResult r = h_->lock.lock();
  if (r == LockResult::acquired) [[likely]]
    return QueueStatus::ok;
  if (r != LockResult::owner_died) return QueueStatus::not_recoverable;  // not_recoverable (deadlock: a bug)
  log::warn("priority queue '{}': a process died inside push/pop; repairing", name_);
  repair();
  h_->lock.mark_consistent();
  // The dead process may have owed a wake-up; waiters re-check under the lock.
  if (h_->pop_waiters.load(std::memory_order_seq_cst)) h_->not_empty.notify();
  if (h_->push_waiters.load(std::memory_order_seq_cst)) h_->not_full.notify();
  return QueueStatus::ok;
}

void PriorityQueueCore::repair() noexcept {
  Header& h = *h_;
  const std::uint32_t cap = h.capacity;
  auto valid = [&](std::uint32_t i) { return seq_of(h.slot(i)) != 0; };
  for (std::uint32_t i = 0; i < cap; ++i)  // defensive: a key naming no payload slot is garbage
    if (valid(i) && head(h.slot(i))->payload >= cap) head(h.slot(i))->seq.store(0, std::memory_order_relaxed);

  // R1: dedup. Copies of one seq are identical (puts copy whole entries and
  // a torn put leaves seq 0), so any copy may stay; keep the lowest slot.
  try {
    std::vector<std::pair<std::uint64_t, std::uint32_t>> seen;
    seen.reserve(cap);
    for (std::uint32_t i = 0; i < cap; ++i)
      if (valid(i)) seen.emplace_back(seq_of(h.slot(i)), i);
    std::sort(seen.begin(), seen.end());
    for (std::size_t k = 1; k < seen.size(); ++k)
      if (seen[k].first == seen[k - 1].first) head(h.slot(seen[k].second))->seq.store(0, std::memory_order_relaxed);
  } catch (const std::bad_alloc&) {
    for (std::uint32_t i = 0; i < cap; ++i)  // quadratic, but needs no memory
      for (std::uint32_t k = 0; k < i && valid(i); ++k)
        if (seq_of(h.slot(k)) == seq_of(h.slot(i))) head(h.slot(i))->seq.store(0, std::memory_order_relaxed);
  }
  crash_order();

  // R2: compact. A valid entry from the top moves into the lowest empty slot;
  // death between the put and the emptying leaves a duplicate (R1 next time).
  std::uint32_t lo = 0, hi = cap;
  for (;;) {
    while (lo < hi && valid(lo)) ++lo;
    while (hi > lo && !valid(hi - 1)) --hi;
    if (lo >= hi) break;
    put(h, h.slot(lo), h.slot(hi - 1));
    crash_order();
    head(h.slot(hi - 1))->seq.store(0, std::memory_order_relaxed);
    crash_order();
  }
  std::uint32_t m = lo;  // [0, m) valid, [m, cap) empty

  // R3: the journal's element, if the array lost it (a pop's top, a push's
  // new element before its final put, a heapify sift's element).
  std::byte* j = h.journal();
  const std::uint64_t jseq = seq_of(j);
  if (h.journal_op.load(std::memory_order_relaxed) != kOpNone && jseq != 0) {
    bool present = false;
    for (std::uint32_t i = 0; i < m && !present; ++i) present = seq_of(h.slot(i)) == jseq;
    if (!present) {
      if (m < cap) {
        put(h, h.slot(m), j);
        ++m;
      } else {
        log::error("priority queue '{}': repair found the array full and dropped the journal's element seq {}", name_,
                   jseq);
      }
    }
  }
  journal_clear(h);  // R4

  // R5: Floyd heapify; each sift journals its element (its slot becomes the hole).
  for (std::uint32_t k = m / 2; k-- > 0;) {
    std::byte* e = h.slot(k);
    journal(h, e, seq_of(e), kOpRepair);
    sift_down(h, k, m, j);
    journal_clear(h);
  }

  // R6: the free stack is whatever no key names, rebuilt in place: mark,
  // then compact (the write index never passes the read index).
  std::uint32_t* free = h.free_stack();
  for (std::uint32_t s = 0; s < cap; ++s) free[s] = 1;
  for (std::uint32_t i = 0; i < m; ++i) free[head(h.slot(i))->payload] = 0;
  std::uint32_t nfree = 0;
  for (std::uint32_t s = 0; s < cap; ++s)
    if (free[s] != 0) free[nfree++] = s;
  h.free_count = nfree;
  std::uint64_t max_seq = 0;
  for (std::uint32_t i = 0; i < m; ++i) max_seq = std::max(max_seq, seq_of(h.slot(i)));
  h.next_seq = std::max(h.next_seq, max_seq + 1);
  h.size = m;
  h.depth.store(m, std::memory_order_seq_cst);
  bump(h.repairs);
}

// ---- operations ----------------------------------------------------------------------

QueueStatus PriorityQueueCore::try_push(const void* element, std::int32_t priority) noexcept {
  if (QueueStatus st = lock(); st != QueueStatus::ok) return st;  // P1
  Header& h = *h_;
  if (const std::uint32_t size = h.size; size >= h.capacity) {
    h.lock.unlock();
    return size == h.capacity ? QueueStatus::full : QueueStatus::not_recoverable;  // size > capacity: corrupted
  }
  // Shared data is not trusted blindly: a corrupted count must not send us out of bounds.
  if (h.free_count == 0 || h.free_count > h.capacity || h.free_stack()[h.free_count - 1] >= h.capacity) {
    h.lock.unlock();
    return QueueStatus::not_recoverable;
  }
  // P2: the element into a free payload slot, its key into the journal.
  const std::uint32_t p = h.free_stack()[h.free_count - 1];
  std::memcpy(h.payload(p), element, h.element_size);
  std::byte* j = h.journal();
  head(j)->priority = priority;
  head(j)->payload = p;
  head(j)->seq.store(h.next_seq, std::memory_order_relaxed);
  crash_order();
  h.journal_op.store(kOpPush, std::memory_order_relaxed);
  crash_order();
  h.next_seq += 1;  // P3
  h.free_count -= 1;
  sift_up(h, h.size, j);  // P4
  crash_order();
  h.size += 1;  // P5
  // SYNC POINT: pairs with a sleeper's waiters++ (seq_cst) then depth load (seq_cst).
  h.depth.store(h.size, std::memory_order_seq_cst);
  journal_clear(h);  // P6
  bump(h.pushes);
  h.lock.unlock();
  // SYNC POINT: the other half of the Dekker pair (depth store above, this load).
  // Every push notifies while a consumer waits or listens, not only the
  // empty → non-empty one: a producer killed between its unlock and this
  // notify would otherwise leave a listener deaf until the queue drained.
  if (h.pop_waiters.load(std::memory_order_seq_cst) != 0) [[unlikely]]
    h.not_empty.notify();
  return QueueStatus::ok;
}

QueueStatus PriorityQueueCore::try_pop(void* out, std::int32_t* priority) noexcept {
  if (QueueStatus st = lock(); st != QueueStatus::ok) return st;  // Q1
  Header& h = *h_;
  const std::uint32_t s = h.size;
  if (s == 0) {
    h.lock.unlock();
    return QueueStatus::empty;
  }
  // Q2: the caller's copy first, then the journal's.
  std::byte* top = h.slot(0);
  const std::uint32_t p = head(top)->payload;
  if (s > h.capacity || p >= h.capacity || h.free_count >= h.capacity) {  // corrupted: never index with it
    h.lock.unlock();
    return QueueStatus::not_recoverable;
  }
  std::memcpy(out, h.payload(p), h.element_size);
  if (priority) *priority = head(top)->priority;
  crash_order();
  journal(h, top, seq_of(top), kOpPop);
  std::byte* last = h.slot(s - 1);
  if (s > 1) sift_down(h, 0, s - 1, last);  // Q3: overwrites the root first
  crash_order();
  head(last)->seq.store(0, std::memory_order_relaxed);  // Q4 (s == 1: the top itself, journaled)
  crash_order();
  h.size = s - 1;                      // Q5
  h.free_stack()[h.free_count++] = p;  // the payload slot; reused only after Q6
  // SYNC POINT: pairs with a blocked producer's waiters++ then depth load.
  h.depth.store(s - 1, std::memory_order_seq_cst);
  journal_clear(h);  // Q6
  bump(h.pops);
  h.lock.unlock();
  // As in push: every pop notifies while a producer waits.
  if (h.push_waiters.load(std::memory_order_seq_cst) != 0) [[unlikely]]
    h.not_full.notify();
  return QueueStatus::ok;
}

QueueStatus PriorityQueueCore::peek(void* out, std::int32_t* priority) noexcept {
  if (QueueStatus st = lock(); st != QueueStatus::ok) return st;
  Header& h = *h_;
  QueueStatus st = QueueStatus::empty;
  if (h.size > h.capacity || (h.size > 0 && head(h.slot(0))->payload >= h.capacity)) {
    st = QueueStatus::not_recoverable;  // corrupted: never index with it
  } else if (h.size > 0) {
    std::memcpy(out, h.payload(head(h.slot(0))->payload), h.element_size);
    if (priority) *priority = head(h.slot(0))->priority;
    st = QueueStatus::ok;
  }
  h.lock.unlock();
  return st;
}

namespace {

constexpr int kSpinBeforeSleep = 128;

constexpr bool retry(QueueStatus st) noexcept { return st == QueueStatus::full || st == QueueStatus::empty; }

// The blocking loop shared by push_until and pop_until: try; spin briefly
// while `blocked()` holds; then sleep on `event` (Event::sleep_until, the
// notifier side is push/pop's depth store then the waiters load) in slices
// of the mutex liveness slice, retrying under the lock (which repairs after
// a death) whenever `blocked()` stops holding.
template <typename Try, typename Blocked>
QueueStatus wait_loop(Header& h, Event& event, std::atomic<std::uint32_t>& waiters, std::uint64_t deadline_ns,
                      Try attempt, Blocked blocked) noexcept {
  QueueStatus st = attempt();
  if (!retry(st)) return st;
  const std::uint64_t start = detail::monotonic_ns();
  // A short spin first: a partner on another CPU usually acts within
  // microseconds, and a futex sleep + wake costs more than that.
  for (int i = 0; i < kSpinBeforeSleep && blocked(); ++i) detail::cpu_relax();
  const auto done = [&] {
    if (blocked()) return false;
    st = attempt();
    return !retry(st);
  };
  const std::uint64_t slice =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Mutex::kLivenessSlice).count());
  if (!done() && !event.sleep_until(waiters, deadline_ns, slice, done)) st = QueueStatus::timed_out;
  h.wait_ns.fetch_add(detail::monotonic_ns() - start, std::memory_order_relaxed);
  return st;
}

}  // namespace

QueueStatus PriorityQueueCore::push_until(const void* element, std::int32_t priority,
                                          std::uint64_t deadline_ns) noexcept {
  Header& h = *h_;
  return wait_loop(
      h, h.not_full, h.push_waiters, deadline_ns, [&] { return try_push(element, priority); },
      [&] { return h.depth.load(std::memory_order_seq_cst) >= h.capacity; });
}

QueueStatus PriorityQueueCore::pop_until(void* out, std::int32_t* priority, std::uint64_t deadline_ns) noexcept {
  Header& h = *h_;
  return wait_loop(
      h, h.not_empty, h.pop_waiters, deadline_ns, [&] { return try_pop(out, priority); },
      [&] { return h.depth.load(std::memory_order_seq_cst) == 0; });
}

// ---- introspection -------------------------------------------------------------------

std::uint32_t PriorityQueueCore::size() const noexcept { return h_->depth.load(std::memory_order_acquire); }
std::uint32_t PriorityQueueCore::capacity() const noexcept { return h_->capacity; }
std::uint32_t PriorityQueueCore::element_size() const noexcept { return h_->element_size; }
Event& PriorityQueueCore::not_empty_event() const noexcept { return h_->not_empty; }

QueueStats PriorityQueueCore::stats() const noexcept {
  const Header& h = *h_;
  QueueStats s;
  s.depth = h.depth.load(std::memory_order_relaxed);
  s.capacity = h.capacity;
  s.element_size = h.element_size;
  s.pushes = h.pushes.load(std::memory_order_relaxed);
  s.pops = h.pops.load(std::memory_order_relaxed);
  s.repairs = h.repairs.load(std::memory_order_relaxed);
  s.wait_ns = h.wait_ns.load(std::memory_order_relaxed);
  s.pop_waiters = h.pop_waiters.load(std::memory_order_relaxed);
  s.push_waiters = h.push_waiters.load(std::memory_order_relaxed);
  return s;
}

std::optional<std::string> PriorityQueueCore::check() noexcept {
  if (lock() != QueueStatus::ok) return std::string("the queue lock is not recoverable");
  Header& h = *h_;
  std::optional<std::string> problem;
  try {
    std::vector<std::uint64_t> seqs;
    for (std::uint32_t i = 0; i < h.capacity && !problem; ++i) {
      const std::uint64_t seq = seq_of(h.slot(i));
      if (i >= h.size) {
        if (seq != 0)
          problem = "slot " + std::to_string(i) + " beyond size " + std::to_string(h.size) + " is not empty";
        continue;
      }
      if (seq == 0)
        problem = "slot " + std::to_string(i) + " below size " + std::to_string(h.size) + " is empty";
      else if (seq >= h.next_seq)
        problem = "slot " + std::to_string(i) + " has seq " + std::to_string(seq) + " >= next seq";
      else if (i > 0 && before(h.slot(i), h.slot((i - 1) / 2)))
        problem = "heap order violated between slot " + std::to_string(i) + " and its parent";
      seqs.push_back(seq);
    }
    std::sort(seqs.begin(), seqs.end());
    if (!problem && std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) problem = "duplicate seq in the heap";
    // Every payload slot is named by exactly one key or sits in the free stack once.
    std::vector<std::uint32_t> uses(h.capacity, 0);
    for (std::uint32_t i = 0; i < h.size && !problem; ++i) {
      const std::uint32_t p = head(h.slot(i))->payload;
      if (p >= h.capacity)
        problem = "slot " + std::to_string(i) + " names payload " + std::to_string(p) + " out of range";
      else
        ++uses[p];
    }
    if (!problem && h.free_count != h.capacity - h.size) problem = "free count differs from capacity - size";
    for (std::uint32_t k = 0; k < h.free_count && !problem; ++k) {
      const std::uint32_t p = h.free_stack()[k];
      if (p >= h.capacity)
        problem = "free stack holds an out-of-range payload slot";
      else
        ++uses[p];
    }
    if (!problem && std::any_of(uses.begin(), uses.end(), [](std::uint32_t u) { return u != 1; }))
      problem = "a payload slot is used twice or lost";
    if (!problem && h.depth.load(std::memory_order_relaxed) != h.size) problem = "depth differs from size";
    if (!problem && h.journal_op.load(std::memory_order_relaxed) != kOpNone) problem = "journal not cleared";
  } catch (const std::bad_alloc&) {
    problem = "out of memory while checking";
  }
  h.lock.unlock();
  return problem;
}

PriorityQueueListener PriorityQueueCore::listen() const {
  return PriorityQueueListener(h_->not_empty, &h_->pop_waiters);
}

PriorityQueueListener::PriorityQueueListener(Event& event, std::atomic<std::uint32_t>* waiters)
    : listener_(std::make_unique<EventListener>(event)), waiters_(waiters) {
  // A standing consumer waiter: pushes notify while this listener lives.
  // SYNC POINT: before the caller's first arm()/try_pop (Dekker with push).
  waiters_->fetch_add(1, std::memory_order_seq_cst);
}

PriorityQueueListener::PriorityQueueListener(PriorityQueueListener&& other) noexcept
    : listener_(std::move(other.listener_)), waiters_(std::exchange(other.waiters_, nullptr)) {}

PriorityQueueListener& PriorityQueueListener::operator=(PriorityQueueListener&& other) noexcept {
  if (this != &other) {
    if (waiters_) waiters_->fetch_sub(1, std::memory_order_relaxed);
    listener_ = std::move(other.listener_);
    waiters_ = std::exchange(other.waiters_, nullptr);
  }
  return *this;
}

PriorityQueueListener::~PriorityQueueListener() {
  if (waiters_) waiters_->fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ipc
