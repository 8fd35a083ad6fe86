#include "ipc/broadcast.hpp"

#include <sched.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>

#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"

namespace ipc {

namespace {

constexpr std::uint32_t kBroadcastMagic = 0x42524443;  // "BRDC"
constexpr std::uint32_t kBroadcastVersion = 1;
constexpr std::uint64_t kActive = 1;

struct alignas(64) BroadcastHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t capacity;
  std::uint32_t slot_bytes;
  std::uint32_t policy;
  std::uint32_t pool_id;
  std::uint32_t tag;
  std::uint32_t max_subscribers;
  std::uint64_t subs_offset;
  std::uint64_t slots_offset;
  std::uint64_t object_bytes;
  alignas(64) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> publishes;
  std::atomic<std::uint64_t> recovered;
  std::atomic<std::uint64_t> publish_blocked_ns;
  alignas(64) std::atomic<std::uint64_t> claim_generation;
  std::atomic<std::uint64_t> joins;  // bumped after each subscriber activation: invalidates cached min cursors
  alignas(64) std::atomic<std::uint32_t> data_waiters;
  alignas(64) std::atomic<std::uint32_t> space_waiters;
  Event data;
  Event space;
};
static_assert(sizeof(BroadcastHeader) % 64 == 0);
// The segment format, pinned: a change here is a layout version bump.
static_assert(sizeof(BroadcastHeader) == 4544 && alignof(BroadcastHeader) == 64);
static_assert(offsetof(BroadcastHeader, magic) == 0 && offsetof(BroadcastHeader, version) == 4 &&
              offsetof(BroadcastHeader, capacity) == 8 && offsetof(BroadcastHeader, slot_bytes) == 12);
static_assert(offsetof(BroadcastHeader, policy) == 16 && offsetof(BroadcastHeader, pool_id) == 20 &&
              offsetof(BroadcastHeader, tag) == 24 && offsetof(BroadcastHeader, max_subscribers) == 28);
static_assert(offsetof(BroadcastHeader, subs_offset) == 32 && offsetof(BroadcastHeader, slots_offset) == 40 &&
              offsetof(BroadcastHeader, object_bytes) == 48 && offsetof(BroadcastHeader, tail) == 64);
static_assert(offsetof(BroadcastHeader, publishes) == 72 && offsetof(BroadcastHeader, recovered) == 80 &&
              offsetof(BroadcastHeader, publish_blocked_ns) == 88 &&
              offsetof(BroadcastHeader, claim_generation) == 128);
static_assert(offsetof(BroadcastHeader, joins) == 136 && offsetof(BroadcastHeader, data_waiters) == 192 &&
              offsetof(BroadcastHeader, space_waiters) == 256 && offsetof(BroadcastHeader, data) == 320);
static_assert(offsetof(BroadcastHeader, space) == 2432);

struct alignas(64) SubscriberSlot {
  std::atomic<std::uint64_t> owner;  // pid << 32 | generation << 1 | active; 0 = free
  std::atomic<std::uint64_t> token;
  std::atomic<std::uint64_t> cursor;
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint64_t> missed;
};
static_assert(sizeof(SubscriberSlot) == 64);
// The segment format, pinned: a change here is a layout version bump.
static_assert(sizeof(SubscriberSlot) == 64 && alignof(SubscriberSlot) == 64);
static_assert(offsetof(SubscriberSlot, owner) == 0 && offsetof(SubscriberSlot, token) == 8 &&
              offsetof(SubscriberSlot, cursor) == 16 && offsetof(SubscriberSlot, received) == 24);
static_assert(offsetof(SubscriberSlot, missed) == 32);

void validate(const BroadcastConfig& c, std::string_view name) {
  const std::string what = "broadcast '" + std::string(name) + "': ";
  ring::validate_geometry("broadcast '" + std::string(name) + "'", c.capacity, c.slot_bytes);
  if (c.max_subscribers < 1 || c.max_subscribers > Broadcast::kMaxSubscribersLimit)
    throw Error(ErrorCode::invalid_argument,
                what + "max_subscribers " + std::to_string(c.max_subscribers) + " must be between 1 and 4096");
  if (c.policy != BroadcastPolicy::lossy && c.policy != BroadcastPolicy::blocking)
    throw Error(ErrorCode::invalid_argument, what + "unknown policy");
}

}  // namespace

struct Broadcast::State {
  std::string name;
  BroadcastHeader* h = nullptr;
  SubscriberSlot* subs = nullptr;
  std::byte* slots = nullptr;
  BufferPool* pool = nullptr;
  std::uint32_t capacity = 0;
  std::uint32_t mask = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t tag = 0;
  std::uint32_t max_subscribers = 0;
  bool blocking = false;
  // Publisher side, per process: a lower bound of the slowest cursor, valid
  // while `joins` still equals min_epoch (a join may start below it).
  std::atomic<std::uint64_t> min_cursor{0};
  std::atomic<std::uint64_t> min_epoch{UINT64_MAX};
  // What keeps being in the way of this process's publishers.
  ring::StuckTimer stuck_slot, stuck_subscriber;

  ring::SlotHeader* slot(std::uint64_t pos) const noexcept { return ring::slot_at(slots, slot_bytes, mask, pos); }
  std::uint32_t holder(std::uint64_t pos) const noexcept {
    return ring::slot_holder(tag, static_cast<std::uint32_t>(pos & mask));
  }
  std::size_t payload_capacity() const noexcept { return slot_bytes - ring::kSlotHeaderBytes; }

  SendStatus put(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept;
  bool room_for(std::uint64_t pos) noexcept;
  void release_slot_handles(ring::SlotHeader* s, std::uint64_t pos) noexcept {
    ring::release_handles(s, payload_capacity(), pool, holder(pos));
  }
  bool recover(ring::SlotHeader* s, std::uint64_t observed) noexcept;
  std::uint16_t high_bits_near_tail(std::uint32_t seq) const noexcept;
  bool free_subscriber_if_dead(int i, bool check_now) noexcept;
  void notify_data() noexcept {
    if (h->data_waiters.load(std::memory_order_seq_cst) != 0) h->data.notify();
  }
};

std::size_t Broadcast::bytes_needed(const BroadcastConfig& c) {
  return sizeof(BroadcastHeader) + std::size_t(c.max_subscribers) * sizeof(SubscriberSlot) +
         std::size_t(c.capacity) * c.slot_bytes;
}

namespace {

std::shared_ptr<Broadcast::State> attach(Segment& segment, std::string_view name, void* data, std::size_t size,
                                         BufferPool* pool) {
  const std::string what = "broadcast '" + std::string(name) + "' in segment '" + segment.name() + "'";
  auto* h = static_cast<BroadcastHeader*>(data);
  if (size < sizeof(BroadcastHeader))
    throw Error(ErrorCode::corrupted, what + ": object too small for a broadcast header");
  if (h->magic != kBroadcastMagic) throw Error(ErrorCode::bad_magic, what + ": not an initialised broadcast channel");
  if (h->version != kBroadcastVersion)
    throw Error(ErrorCode::version_mismatch, what + ": layout version " + std::to_string(h->version) +
                                                 ", this libipc reads " + std::to_string(kBroadcastVersion));
  BroadcastConfig c;
  c.capacity = h->capacity;
  c.slot_bytes = h->slot_bytes;
  c.policy = static_cast<BroadcastPolicy>(h->policy);
  c.max_subscribers = h->max_subscribers;
  try {
    validate(c, name);
  } catch (const Error& e) {
    throw Error(ErrorCode::corrupted, what + ": bad header (" + e.what() + ")");
  }
  if (h->subs_offset != sizeof(BroadcastHeader) ||
      h->slots_offset != sizeof(BroadcastHeader) + std::size_t(c.max_subscribers) * sizeof(SubscriberSlot) ||
      Broadcast::bytes_needed(c) > size)
    throw Error(ErrorCode::corrupted, what + ": subscriber table or slot area does not fit the object");
  ring::check_pool(what, h->pool_id, pool);
  auto s = std::make_shared<Broadcast::State>();
  s->name = std::string(name);
  s->h = h;
  s->subs = reinterpret_cast<SubscriberSlot*>(reinterpret_cast<std::byte*>(h) + h->subs_offset);
  s->slots = reinterpret_cast<std::byte*>(h) + h->slots_offset;
  s->pool = pool;
  s->capacity = c.capacity;
  s->mask = c.capacity - 1;
  s->slot_bytes = c.slot_bytes;
  s->tag = h->tag;
  s->max_subscribers = c.max_subscribers;
  s->blocking = c.policy == BroadcastPolicy::blocking;
  return s;
}

}  // namespace

Broadcast Broadcast::create(Segment& segment, std::string_view name, const BroadcastConfig& config, BufferPool* pool) {
  validate(config, name);
  const std::uint32_t tag = ring::holder_tag(pool);
  const std::size_t bytes = bytes_needed(config);
  Object obj = segment.create_object(name, ObjectType::broadcast, bytes, [&](void* data, std::size_t) {
    auto* h = new (data) BroadcastHeader{};
    h->capacity = config.capacity;
    h->slot_bytes = config.slot_bytes;
    h->policy = static_cast<std::uint32_t>(config.policy);
    h->pool_id = pool ? pool->pool_id() : 0;
    h->tag = tag;
    h->max_subscribers = config.max_subscribers;
    h->subs_offset = sizeof(BroadcastHeader);
    h->slots_offset = sizeof(BroadcastHeader) + std::size_t(config.max_subscribers) * sizeof(SubscriberSlot);
    h->object_bytes = bytes;
    new (&h->data) Event();
    new (&h->space) Event();
    auto* base = static_cast<std::byte*>(data);
    for (std::uint32_t i = 0; i < config.max_subscribers; ++i)
      new (base + h->subs_offset + i * sizeof(SubscriberSlot)) SubscriberSlot{};
    ring::init_slots(base + h->slots_offset, config.capacity, config.slot_bytes);
    h->version = kBroadcastVersion;
    h->magic = kBroadcastMagic;
  });
  return Broadcast(attach(segment, name, obj.data, obj.info.size, pool));
}

Broadcast Broadcast::open(Segment& segment, std::string_view name, BufferPool* pool) {
  Object obj = segment.open_object(name, ObjectType::broadcast);
  return Broadcast(attach(segment, name, obj.data, obj.info.size, pool));
}

Broadcast::Broadcast(std::shared_ptr<State> s) noexcept : s_(std::move(s)) {}
Broadcast::Broadcast(Broadcast&&) noexcept = default;
Broadcast& Broadcast::operator=(Broadcast&&) noexcept = default;
Broadcast::~Broadcast() = default;

std::uint32_t Broadcast::capacity() const noexcept { return s_->capacity; }
std::size_t Broadcast::max_payload() const noexcept { return s_->payload_capacity(); }
const std::string& Broadcast::name() const noexcept { return s_->name; }

// ---- subscribers -----------------------------------------------------------------------------------

// Frees subscriber slot i if its owner is dead. check_now: look even if we
// found it dead a moment ago (callers rate-limit).
bool Broadcast::State::free_subscriber_if_dead(int i, bool) noexcept {
  SubscriberSlot& sl = subs[i];
  std::uint64_t owner = sl.owner.load(std::memory_order_acquire);
  if (owner == 0) return false;
  // The token is written after the claim: until the owner is active it may
  // still be the previous owner's, so judge by the pid alone then.
  const std::uint64_t token = (owner & kActive) ? sl.token.load(std::memory_order_acquire) : 0;
  if (detail::process_liveness(static_cast<pid_t>(owner >> 32), token) != detail::Liveness::dead) return false;
  return sl.owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
}

Subscription Broadcast::subscribe(StartAt start) {
  State& s = *s_;
  const std::uint64_t pid = detail::self_pid();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < s.max_subscribers; ++i) {
      SubscriberSlot& sl = s.subs[i];
      std::uint64_t owner = sl.owner.load(std::memory_order_acquire);
      if (owner != 0 && !(pass == 1 && s.free_subscriber_if_dead(static_cast<int>(i), true))) continue;
      owner = 0;
      const std::uint64_t gen = s.h->claim_generation.fetch_add(1, std::memory_order_relaxed) + 1;
      const std::uint64_t claimed = pid << 32 | (gen & 0x7fffffff) << 1;  // not active yet: cursor not valid
      if (!sl.owner.compare_exchange_strong(owner, claimed, std::memory_order_acq_rel)) continue;
      sl.token.store(detail::self_token(), std::memory_order_relaxed);
      sl.received.store(0, std::memory_order_relaxed);
      sl.missed.store(0, std::memory_order_relaxed);
      const std::uint64_t tail = s.h->tail.load(std::memory_order_acquire);
      std::uint64_t cursor = tail;
      if (start == StartAt::newest && tail > 0) cursor = tail - 1;
      if (start == StartAt::oldest) cursor = tail > s.capacity ? tail - s.capacity : 0;
      sl.cursor.store(cursor, std::memory_order_relaxed);
      // Activate by CAS: if a reclaimer wrongly freed the claim meanwhile
      // (impossible while we live, but cheap to rule out), start over.
      // seq_cst, then `joins`: a blocking publisher that scans after this
      // sees our cursor; one whose scan raced with it may overwrite our first
      // position once — then we start with a counted overrun, never a torn message.
      std::uint64_t expected = claimed;
      if (!sl.owner.compare_exchange_strong(expected, claimed | kActive, std::memory_order_seq_cst)) continue;
      s.h->joins.fetch_add(1, std::memory_order_seq_cst);
      return Subscription(s_, static_cast<int>(i), claimed | kActive);
    }
  }
  throw Error(ErrorCode::no_space, "broadcast '" + s.name + "': all " + std::to_string(s.max_subscribers) +
                                       " subscriber slots belong to live processes; unsubscribe idle subscribers or "
                                       "create the broadcast with a larger BroadcastConfig::max_subscribers (≤ 4096)");
}

Subscription::Subscription(std::shared_ptr<Broadcast::State> s, int slot, std::uint64_t owner) noexcept
    : s_(std::move(s)), slot_(slot), owner_(owner) {
  cursor_ = s_->subs[slot_].cursor.load(std::memory_order_relaxed);
}

Subscription::Subscription(Subscription&& o) noexcept
    : s_(std::move(o.s_)),
      slot_(o.slot_),
      owner_(o.owner_),
      cursor_(o.cursor_),
      stuck_(o.stuck_),
      pending_missed_(o.pending_missed_),
      empty_polls_(o.empty_polls_) {
  o.slot_ = -1;
}

Subscription& Subscription::operator=(Subscription&& o) noexcept {
  if (this != &o) {
    unsubscribe();
    s_ = std::move(o.s_);
    slot_ = o.slot_;
    owner_ = o.owner_;
    cursor_ = o.cursor_;
    stuck_ = o.stuck_;
    pending_missed_ = o.pending_missed_;
    empty_polls_ = o.empty_polls_;
    o.slot_ = -1;
  }
  return *this;
}

Subscription::~Subscription() { unsubscribe(); }

void Subscription::unsubscribe() noexcept {
  if (slot_ < 0 || !s_) return;
  std::uint64_t owner = owner_;
  s_->subs[slot_].owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
  slot_ = -1;
  if (s_->blocking && s_->h->space_waiters.load(std::memory_order_seq_cst)) s_->h->space.notify();
}

std::uint64_t Subscription::cursor() const noexcept { return cursor_; }
std::uint64_t Subscription::lag() const noexcept {
  const std::uint64_t tail = s_->h->tail.load(std::memory_order_acquire);
  return tail > cursor_ ? tail - cursor_ : 0;
}
std::uint64_t Subscription::missed() const noexcept {
  return slot_ >= 0 ? s_->subs[slot_].missed.load(std::memory_order_relaxed) : 0;
}
std::uint64_t Subscription::received() const noexcept {
  return slot_ >= 0 ? s_->subs[slot_].received.load(std::memory_order_relaxed) : 0;
}

// ---- publish ---------------------------------------------------------------------------------------

// B0: is every active cursor past pos - capacity? Rescans only when the
// cached lower bound says no; frees dead subscribers that hold us back.
bool Broadcast::State::room_for(std::uint64_t pos) noexcept {
  if (pos < capacity) return true;
  const std::uint64_t epoch = h->joins.load(std::memory_order_seq_cst);
  if (epoch == min_epoch.load(std::memory_order_relaxed) && pos - capacity < min_cursor.load(std::memory_order_relaxed))
    return true;
  min_epoch.store(epoch, std::memory_order_relaxed);
  std::uint64_t lowest = UINT64_MAX;
  int slowest = -1;
  for (std::uint32_t i = 0; i < max_subscribers; ++i) {
    const std::uint64_t owner = subs[i].owner.load(std::memory_order_seq_cst);
    if (!(owner & kActive)) continue;
    const std::uint64_t c = subs[i].cursor.load(std::memory_order_seq_cst);
    if (c < lowest) {
      lowest = c;
      slowest = static_cast<int>(i);
    }
  }
  if (slowest < 0) lowest = pos;  // nobody subscribed: nothing to wait for
  min_cursor.store(lowest, std::memory_order_relaxed);
  if (pos - capacity < lowest) return true;
  // Held back by `slowest`. Its cursor may sit on a slot a dead publisher
  // left writing (a poll-driven subscriber would never look again): recover
  // it, the subscriber is notified and skips it. Or the subscriber itself is
  // dead: drop it. Both only after kStuckCheck without progress.
  ring::SlotHeader* at = slot(lowest);
  const std::uint64_t w = at->word.load(std::memory_order_acquire);
  if (ring::distance(w, lowest) == 0 && ring::state_of(w) == ring::SlotState::writing &&
      ring::claimer_dead(w, stuck_slot))
    recover(at, w);
  if (stuck_subscriber.expired(std::uint64_t(slowest) << 48 ^ lowest) && free_subscriber_if_dead(slowest, true)) {
    min_epoch.store(UINT64_MAX, std::memory_order_relaxed);
    return room_for(pos);
  }
  return false;
}

// R1–R3 for a slot left (pos, writing, dead).
bool Broadcast::State::recover(ring::SlotHeader* s, std::uint64_t observed) noexcept {
  const std::uint64_t pos = ring::seq_of(observed);
  std::uint64_t w = observed;
  if (!s->word.compare_exchange_strong(w, ring::make_word(pos, ring::SlotState::writing, detail::self_pid()),
                                       std::memory_order_acq_rel))
    return false;
  std::atomic_thread_fence(std::memory_order_release);  // the word change is ordered before our slot writes (seqlock)
  release_slot_handles(s, pos);
  ring::store_field(s->bytes, 0);
  ring::store_field(s->flags, ring::kSkip);
  ring::store_field(s->pos_high, high_bits_near_tail(static_cast<std::uint32_t>(pos)));
  s->word.store(ring::make_word(pos, ring::SlotState::full, 0), std::memory_order_seq_cst);
  h->recovered.fetch_add(1, std::memory_order_relaxed);
  notify_data();
  return true;
}

// Bits 32–47 of the position whose low 32 bits are `seq`, taking the one
// within a lap of tail (a slot being written is at most one lap behind it).
std::uint16_t Broadcast::State::high_bits_near_tail(std::uint32_t seq) const noexcept {
  const std::uint64_t tail = h->tail.load(std::memory_order_acquire);
  std::uint64_t p = (tail & ~std::uint64_t{0xffffffff}) | seq;
  if (p > tail + capacity) p -= std::uint64_t{1} << 32;
  return static_cast<std::uint16_t>(p >> 32);
}

SendStatus Broadcast::State::put(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept {
  if (SendStatus st = ring::check_message(bytes, buffers, payload_capacity(), pool); st != SendStatus::ok) return st;
  const std::uint32_t me = detail::self_pid();
  for (;;) {
    const std::uint64_t pos = h->tail.load(std::memory_order_acquire);
    if (blocking && !room_for(pos)) return SendStatus::full;  // B0
    ring::SlotHeader* s = slot(pos);
    std::uint64_t w = s->word.load(std::memory_order_acquire);
    const std::int32_t d = ring::distance(w, pos);
    const ring::SlotState st = ring::state_of(w);
    const bool free_slot = (d == 0 && st == ring::SlotState::empty) ||
                           (d == -static_cast<std::int32_t>(capacity) && st == ring::SlotState::full);
    if (!free_slot) {
      if (d == -static_cast<std::int32_t>(capacity)) {  // the previous lap is still being written
        if (ring::state_of(w) == ring::SlotState::writing && ring::claimer_dead(w, stuck_slot) && recover(s, w))
          continue;
        return SendStatus::full;
      }
      std::uint64_t expected = pos;  // pos already claimed: help tail along
      h->tail.compare_exchange_strong(expected, pos + 1, std::memory_order_acq_rel);
      continue;
    }
    if (!s->word.compare_exchange_strong(w, ring::make_word(pos, ring::SlotState::writing, me),
                                         std::memory_order_acq_rel))
      continue;  // B1
    // SYNC POINT: readers validate the word after copying (S4); our payload
    // writes must not become visible before the word says `writing`.
    std::atomic_thread_fence(std::memory_order_release);
    std::uint64_t expected = pos;
    h->tail.compare_exchange_strong(expected, pos + 1, std::memory_order_relaxed);  // B2
    release_slot_handles(s, pos);  // B3 (the old message's references; same slot, same holder id)
    // B4 (pos_high first: S2 reads it with the rest, S4 validates)
    ring::store_field(s->pos_high, pos >> 32);
    if (!ring::fill_slot(s, bytes, buffers, pool, me, holder(pos))) {
      s->word.store(ring::make_word(pos, ring::SlotState::full, 0), std::memory_order_seq_cst);
      return SendStatus::bad_buffer;
    }
    s->word.store(ring::make_word(pos, ring::SlotState::full, 0), std::memory_order_seq_cst);  // B5
    h->publishes.fetch_add(1, std::memory_order_relaxed);
    return SendStatus::ok;
  }
}

SendStatus Broadcast::try_publish(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept {
  SendStatus st = s_->put(bytes, buffers);
  s_->notify_data();  // B6 (also after a skip commit)
  return st;
}

SendStatus Broadcast::publish(std::span<const std::byte> bytes, std::span<Buffer> buffers,
                              std::chrono::nanoseconds timeout) noexcept {
  State& s = *s_;
  SendStatus st = s.put(bytes, buffers);
  if (st == SendStatus::full && !s.blocking) {  // a lossy ring is "full" only behind a writer: let it finish
    const std::uint64_t deadline = detail::deadline_after(timeout);
    while (st == SendStatus::full && detail::monotonic_ns() < deadline) {
      sched_yield();
      st = s.put(bytes, buffers);
    }
    if (st == SendStatus::full) st = SendStatus::timed_out;
  } else if (st == SendStatus::full) {
    const std::uint64_t start = detail::monotonic_ns();
    if (!s.h->space.sleep_until(s.h->space_waiters, detail::deadline_after(timeout), ring::kSleepSliceNs, [&] {
          st = s.put(bytes, buffers);
          return st != SendStatus::full;
        }))
      st = SendStatus::timed_out;
    s.h->publish_blocked_ns.fetch_add(detail::monotonic_ns() - start, std::memory_order_relaxed);
  }
  s.notify_data();
  return st;
}

// ---- receive ---------------------------------------------------------------------------------------

// How many polls that found nothing pass between checks of the 64-bit tail
// (a subscriber 2^31+ positions behind sees laps that look older than its
// cursor; reading tail on every empty poll would bounce the publishers' line).
constexpr std::uint32_t kTailCheckEvery = 256;

ReceiveStatus Subscription::take(Message& out) noexcept {
  Broadcast::State& s = *s_;
  SubscriberSlot& me = s.subs[slot_];
  constexpr std::uint64_t kPosMask = (std::uint64_t{1} << 48) - 1;
  for (;;) {
    const std::uint64_t c = cursor_;
    ring::SlotHeader* sl = s.slot(c);
    if (s.slot_bytes > 64) __builtin_prefetch(reinterpret_cast<const char*>(sl) + 64);  // as Channel::take
    const std::uint64_t w = sl->word.load(std::memory_order_acquire);                   // S1
    const std::int32_t d = ring::distance(w, c);
    const ring::SlotState st = ring::state_of(w);
    bool overrun = d > 0;
    if (!overrun && (d < 0 || st != ring::SlotState::full)) {
      if (d == 0 && st == ring::SlotState::writing && ring::claimer_dead(w, stuck_) && s.recover(sl, w)) continue;
      // Nothing new — unless we are so far behind that a newer lap looks old.
      if (++empty_polls_ % kTailCheckEvery != 0) return ReceiveStatus::empty;
      const std::uint64_t tail = s.h->tail.load(std::memory_order_acquire);
      if (tail <= c || tail - c <= s.capacity) return ReceiveStatus::empty;
      overrun = true;
    }
    if (!overrun) {
      // (c, full): S2. The word has the position's low 32 bits, pos_high the next 16.
      const std::uint16_t high = ring::load_field(sl->pos_high);
      const bool skip = ring::load_field(sl->flags) & ring::kSkip;
      const std::uint32_t n = std::min<std::uint32_t>(
          ring::load_field(sl->handles), static_cast<std::uint32_t>(s.payload_capacity() / ring::kHandleBytes));
      const std::uint32_t len = std::min<std::uint32_t>(
          ring::load_field(sl->bytes), static_cast<std::uint32_t>(s.payload_capacity() - n * ring::kHandleBytes));
      std::memcpy(out.prepare(len), ring::payload_of(sl) + std::size_t(n) * ring::kHandleBytes, len);
      BufferHandle handles[ring::kMaxHandles];
      for (std::uint32_t i = 0; i < n; ++i) handles[i] = ring::handle_at(sl, static_cast<int>(i));
      std::atomic_thread_fence(std::memory_order_acquire);
      if (sl->word.load(std::memory_order_relaxed) != w) continue;  // overwritten during the copy: S1 again sees it
      if (((std::uint64_t{high} << 32 | ring::seq_of(w)) & kPosMask) != (c & kPosMask)) {
        overrun = true;  // a lap 2^32·k positions newer than ours
      } else {
        // S3: references of our own, then S4: still the same message?
        std::uint32_t lost = 0;
        if (!skip)
          for (std::uint32_t i = 0; i < n; ++i) {
            // One pool call: a reference of our own (BufferPool::share H1–H6;
            // all holder slots in use → retried for up to kHolderWait).
            std::optional<Buffer> b = s.pool ? s.pool->share(handles[i], kHolderWait) : std::nullopt;
            if (b)
              out.buffers().push_back(std::move(*b));
            else
              ++lost;
          }
        std::atomic_thread_fence(std::memory_order_acquire);
        if (sl->word.load(std::memory_order_acquire) != w) {  // S4 failed: release, S1 again sees the overrun
          out.buffers().clear();
          continue;
        }
        cursor_ = c + 1;  // S5
        if (s.blocking) {
          me.cursor.store(cursor_, std::memory_order_seq_cst);
          if (s.h->space_waiters.load(std::memory_order_seq_cst)) s.h->space.notify();
        } else {
          me.cursor.store(cursor_, std::memory_order_release);
        }
        if (skip) continue;
        for (std::uint32_t i = 0; i < lost; ++i) out.add_lost();
        me.received.store(me.received.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        out.add_missed(pending_missed_);
        pending_missed_ = 0;
        out.set_position(c);
        return ReceiveStatus::ok;
      }
    }
    // Overrun: position c is gone. Jump to the oldest position still in the
    // ring (its slot is the next to be overwritten; S4 tells if it already was).
    const std::uint64_t tail = s.h->tail.load(std::memory_order_acquire);
    const std::uint64_t next = std::max(c + 1, tail > s.capacity ? tail - s.capacity : c + 1);
    me.missed.fetch_add(next - c, std::memory_order_relaxed);
    pending_missed_ += next - c;  // reported with the next message received
    cursor_ = next;
    me.cursor.store(cursor_, std::memory_order_release);
  }
}

ReceiveStatus Subscription::try_receive(Message& out) noexcept {
  out.clear();
  if (slot_ < 0) return ReceiveStatus::empty;
  return take(out);
}

ReceiveStatus Subscription::receive(Message& out, std::chrono::nanoseconds timeout) noexcept {
  out.clear();
  if (slot_ < 0) return ReceiveStatus::empty;
  ReceiveStatus st = take(out);
  if (st == ReceiveStatus::ok || timeout <= std::chrono::nanoseconds::zero()) return st;
  Broadcast::State& s = *s_;
  if (!s.h->data.sleep_until(s.h->data_waiters, detail::deadline_after(timeout), ring::kSleepSliceNs, [&] {
        st = take(out);
        return st != ReceiveStatus::empty;
      }))
    return ReceiveStatus::timed_out;
  return st;
}

// ---- reclaim, stats --------------------------------------------------------------------------------

std::uint32_t Broadcast::reclaim(std::uint32_t pid) noexcept {
  State& s = *s_;
  std::uint32_t n = 0;
  if (!detail::reclaim_allowed(pid, "broadcast", s.name)) return 0;
  for (std::uint32_t i = 0; i < s.max_subscribers; ++i) {
    std::uint64_t owner = s.subs[i].owner.load(std::memory_order_acquire);
    if (owner != 0 && (owner >> 32) == pid &&
        s.subs[i].owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel))
      ++n;
  }
  for (std::uint32_t i = 0; i < s.capacity; ++i) {
    ring::SlotHeader* sl = s.slot(i);
    const std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (ring::state_of(w) == ring::SlotState::writing && ring::pid_of(w) == (pid & ring::kPidMask))
      n += s.recover(sl, w) ? 1 : 0;
  }
  if (n && s.blocking && s.h->space_waiters.load(std::memory_order_seq_cst)) s.h->space.notify();
  return n;
}

std::uint32_t Broadcast::reclaim_dead() noexcept {
  State& s = *s_;
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < s.max_subscribers; ++i)
    n += s.free_subscriber_if_dead(static_cast<int>(i), true) ? 1 : 0;
  for (std::uint32_t i = 0; i < s.capacity; ++i) {
    ring::SlotHeader* sl = s.slot(i);
    const std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (ring::state_of(w) != ring::SlotState::writing) continue;
    const std::uint32_t pid = ring::pid_of(w);
    if (pid && detail::process_liveness(static_cast<pid_t>(pid), 0) == detail::Liveness::dead)
      n += s.recover(sl, w) ? 1 : 0;
  }
  if (n && s.blocking && s.h->space_waiters.load(std::memory_order_seq_cst)) s.h->space.notify();
  return n;
}

BroadcastStats Broadcast::stats() const {
  const State& s = *s_;
  BroadcastStats st;
  st.name = s.name;
  st.policy = s.blocking ? BroadcastPolicy::blocking : BroadcastPolicy::lossy;
  st.capacity = s.capacity;
  st.slot_bytes = s.slot_bytes;
  st.max_subscribers = s.max_subscribers;
  st.tail = s.h->tail.load(std::memory_order_acquire);
  st.publishes = s.h->publishes.load(std::memory_order_relaxed);
  st.recovered = s.h->recovered.load(std::memory_order_relaxed);
  st.publish_blocked_ns = s.h->publish_blocked_ns.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < s.max_subscribers; ++i) {
    const std::uint64_t owner = s.subs[i].owner.load(std::memory_order_acquire);
    if (!(owner & kActive)) continue;
    SubscriptionStats sub;
    sub.pid = static_cast<std::uint32_t>(owner >> 32);
    sub.cursor = s.subs[i].cursor.load(std::memory_order_relaxed);
    sub.lag = st.tail > sub.cursor ? st.tail - sub.cursor : 0;
    sub.received = s.subs[i].received.load(std::memory_order_relaxed);
    sub.missed = s.subs[i].missed.load(std::memory_order_relaxed);
    sub.alive = detail::process_liveness(static_cast<pid_t>(sub.pid),
                                         s.subs[i].token.load(std::memory_order_relaxed)) != detail::Liveness::dead;
    st.subscribers.push_back(sub);
  }
  return st;
}

// ---- poller ----------------------------------------------------------------------------------------

SubscriptionPoller::SubscriptionPoller(Subscription& subscription)
    : WaitingListener(subscription.s_->h->data_waiters, subscription.s_->h->data) {}

}  // namespace ipc
