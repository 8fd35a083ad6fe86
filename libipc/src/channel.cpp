#include "ipc/channel.hpp"

#include <sched.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>

#include "ipc/detail/cpu.hpp"
#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"

namespace ipc {

namespace {

constexpr std::uint32_t kChannelMagic = 0x43484e4c;  // "CHNL"
constexpr std::uint32_t kChannelVersion = 1;

struct alignas(64) ChannelHeader {
  // line 0: immutable after create
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t kind;
  std::uint32_t backpressure;
  std::uint32_t capacity;
  std::uint32_t slot_bytes;
  std::uint32_t pool_id;
  std::uint32_t tag;
  std::uint32_t spin;
  std::uint32_t reserved0;
  std::uint64_t slots_offset;  // from the header
  std::uint64_t object_bytes;
  // line 1: producers
  alignas(64) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> sends;
  std::atomic<std::uint64_t> drops;
  std::atomic<std::uint64_t> recovered;
  std::atomic<std::uint64_t> send_blocked_ns;
  // line 2: consumers
  alignas(64) std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> receives;
  std::atomic<std::uint64_t> receive_blocked_ns;
  alignas(64) std::atomic<std::uint32_t> data_waiters;
  alignas(64) std::atomic<std::uint32_t> space_waiters;
  Event data;
  Event space;
};
static_assert(sizeof(ChannelHeader) % 64 == 0);
// The segment format, pinned: a change here is a layout version bump.
static_assert(sizeof(ChannelHeader) == 4544 && alignof(ChannelHeader) == 64);
static_assert(offsetof(ChannelHeader, magic) == 0 && offsetof(ChannelHeader, version) == 4 &&
              offsetof(ChannelHeader, kind) == 8 && offsetof(ChannelHeader, backpressure) == 12);
static_assert(offsetof(ChannelHeader, capacity) == 16 && offsetof(ChannelHeader, slot_bytes) == 20 &&
              offsetof(ChannelHeader, pool_id) == 24 && offsetof(ChannelHeader, tag) == 28);
static_assert(offsetof(ChannelHeader, spin) == 32 && offsetof(ChannelHeader, slots_offset) == 40 &&
              offsetof(ChannelHeader, object_bytes) == 48 && offsetof(ChannelHeader, tail) == 64);
static_assert(offsetof(ChannelHeader, sends) == 72 && offsetof(ChannelHeader, drops) == 80 &&
              offsetof(ChannelHeader, recovered) == 88 && offsetof(ChannelHeader, send_blocked_ns) == 96);
static_assert(offsetof(ChannelHeader, head) == 128 && offsetof(ChannelHeader, receives) == 136 &&
              offsetof(ChannelHeader, receive_blocked_ns) == 144 && offsetof(ChannelHeader, data_waiters) == 192);
static_assert(offsetof(ChannelHeader, space_waiters) == 256 && offsetof(ChannelHeader, data) == 320 &&
              offsetof(ChannelHeader, space) == 2432);

void validate(const ChannelConfig& c, std::string_view name) {
  const std::string what = "channel '" + std::string(name) + "'";
  ring::validate_geometry(what, c.capacity, c.slot_bytes);
  if (c.kind != ChannelKind::spsc && c.kind != ChannelKind::mpmc)
    throw Error(ErrorCode::invalid_argument, what + ": unknown kind");
  if (c.backpressure > Backpressure::fail)
    throw Error(ErrorCode::invalid_argument, what + ": unknown backpressure policy");
}

}  // namespace

struct Channel::State {
  Segment* segment = nullptr;
  std::string name;
  ChannelHeader* h = nullptr;
  std::byte* slots = nullptr;
  BufferPool* pool = nullptr;
  std::uint32_t mask = 0;
  std::uint32_t capacity = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t tag = 0;
  bool spsc = false;
  bool consumer_cas = true;  // MPMC, or SPSC with drop_oldest (the producer then also consumes)
  Backpressure policy = Backpressure::block;
  // What keeps being in the way, per side (so a process meeting a stuck
  // slot on both sides does not keep resetting its own timer).
  ring::StuckTimer stuck_send, stuck_receive;

  ring::SlotHeader* slot(std::uint64_t pos) const noexcept { return ring::slot_at(slots, slot_bytes, mask, pos); }
  std::uint32_t holder(std::uint64_t pos) const noexcept {
    return ring::slot_holder(tag, static_cast<std::uint32_t>(pos & mask));
  }
  std::size_t payload_capacity() const noexcept { return slot_bytes - ring::kSlotHeaderBytes; }

  SendStatus put(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept;
  ReceiveStatus take(Message& out) noexcept;
  bool drop_oldest() noexcept;
  // Recovers `w` (in our way) if its claimer has been stuck and is dead; true if it did.
  bool check_stuck(ring::SlotHeader* s, std::uint64_t w, ring::StuckTimer& t) noexcept {
    return ring::claimer_dead(w, t) && recover(s, w);
  }
  bool recover(ring::SlotHeader* s, std::uint64_t observed) noexcept;
  void release_slot_handles(ring::SlotHeader* s, std::uint64_t pos) noexcept {
    ring::release_handles(s, payload_capacity(), pool, holder(pos));
  }
  void notify_data() noexcept {
    if (h->data_waiters.load(std::memory_order_seq_cst) != 0) h->data.notify();  // P6 (after the seq_cst P5)
  }
  void notify_space() noexcept {
    if (h->space_waiters.load(std::memory_order_seq_cst) != 0) h->space.notify();  // C5
  }
  void bump(std::atomic<std::uint64_t>& c, bool single_writer, std::uint64_t n = 1) noexcept {
    if (single_writer)
      c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    else
      c.fetch_add(n, std::memory_order_relaxed);
  }
};

// ---- setup ---------------------------------------------------------------------------------------

std::size_t Channel::bytes_needed(const ChannelConfig& c) {
  return sizeof(ChannelHeader) + std::size_t(c.capacity) * c.slot_bytes;
}

namespace {

std::unique_ptr<Channel::State> attach(Segment& segment, std::string_view name, void* data, std::size_t size,
                                       BufferPool* pool) {
  auto s = std::make_unique<Channel::State>();
  const std::string what = "channel '" + std::string(name) + "' in segment '" + segment.name() + "'";
  auto* h = static_cast<ChannelHeader*>(data);
  if (size < sizeof(ChannelHeader)) throw Error(ErrorCode::corrupted, what + ": object too small for a channel header");
  if (h->magic != kChannelMagic) throw Error(ErrorCode::bad_magic, what + ": not an initialised channel");
  if (h->version != kChannelVersion)
    throw Error(ErrorCode::version_mismatch, what + ": layout version " + std::to_string(h->version) +
                                                 ", this libipc reads " + std::to_string(kChannelVersion));
  ChannelConfig c;
  c.capacity = h->capacity;
  c.slot_bytes = h->slot_bytes;
  c.kind = static_cast<ChannelKind>(h->kind);
  c.backpressure = static_cast<Backpressure>(h->backpressure);
  try {
    validate(c, name);
  } catch (const Error& e) {
    throw Error(ErrorCode::corrupted, what + ": bad header (" + e.what() + ")");
  }
  if (h->slots_offset != sizeof(ChannelHeader) || Channel::bytes_needed(c) > size)
    throw Error(ErrorCode::corrupted, what + ": slot area does not fit the object");
  ring::check_pool(what, h->pool_id, pool);
  s->segment = &segment;
  s->name = std::string(name);
  s->h = h;
  s->slots = reinterpret_cast<std::byte*>(h) + h->slots_offset;
  s->pool = pool;
  s->capacity = c.capacity;
  s->mask = c.capacity - 1;
  s->slot_bytes = c.slot_bytes;
  s->tag = h->tag;
  s->spsc = c.kind == ChannelKind::spsc;
  s->policy = c.backpressure;
  s->consumer_cas = !s->spsc || c.backpressure == Backpressure::drop_oldest;
  return s;
}

}  // namespace

Channel Channel::create(Segment& segment, std::string_view name, const ChannelConfig& config, BufferPool* pool) {
  validate(config, name);
  const std::uint32_t tag = ring::holder_tag(pool);
  const std::size_t bytes = bytes_needed(config);
  Object obj = segment.create_object(name, ObjectType::channel, bytes, [&](void* data, std::size_t) {
    auto* h = new (data) ChannelHeader{};
    h->kind = static_cast<std::uint32_t>(config.kind);
    h->backpressure = static_cast<std::uint32_t>(config.backpressure);
    h->capacity = config.capacity;
    h->slot_bytes = config.slot_bytes;
    h->pool_id = pool ? pool->pool_id() : 0;
    h->tag = tag;
    h->spin = config.spin;
    h->slots_offset = sizeof(ChannelHeader);
    h->object_bytes = bytes;
    new (&h->data) Event();
    new (&h->space) Event();
    ring::init_slots(reinterpret_cast<std::byte*>(h) + sizeof(ChannelHeader), config.capacity, config.slot_bytes);
    h->version = kChannelVersion;
    h->magic = kChannelMagic;  // last: a half-initialised object is "not initialised"
  });
  return Channel(attach(segment, name, obj.data, obj.info.size, pool));
}

Channel Channel::open(Segment& segment, std::string_view name, BufferPool* pool) {
  Object obj = segment.open_object(name, ObjectType::channel);
  return Channel(attach(segment, name, obj.data, obj.info.size, pool));
}

Channel::Channel(std::unique_ptr<State> s) noexcept : s_(std::move(s)) {}
Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&&) noexcept = default;
Channel::~Channel() = default;

std::uint32_t Channel::capacity() const noexcept { return s_->capacity; }
std::size_t Channel::max_payload() const noexcept { return s_->payload_capacity(); }
ChannelKind Channel::kind() const noexcept { return s_->spsc ? ChannelKind::spsc : ChannelKind::mpmc; }
const std::string& Channel::name() const noexcept { return s_->name; }

// ---- send ----------------------------------------------------------------------------------------

SendStatus Channel::State::put(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept {
  if (SendStatus st = ring::check_message(bytes, buffers, payload_capacity(), pool); st != SendStatus::ok) return st;
  const std::uint32_t me = detail::self_pid();
  for (;;) {
    const std::uint64_t pos = h->tail.load(std::memory_order_acquire);
    ring::SlotHeader* s = slot(pos);
    std::uint64_t w = s->word.load(std::memory_order_acquire);
    const std::int32_t d = ring::distance(w, pos);
    if (d < 0) {  // the slot still serves pos - capacity: full, unless a dead claimer holds it
      if (ring::state_of(w) != ring::SlotState::full && check_stuck(s, w, stuck_send)) continue;
      return SendStatus::full;
    }
    if (d > 0 || ring::state_of(w) != ring::SlotState::empty) {  // pos already claimed: help tail along
      std::uint64_t expected = pos;
      h->tail.compare_exchange_strong(expected, pos + 1, std::memory_order_acq_rel);
      continue;
    }
    const std::uint64_t claimed = ring::make_word(pos, ring::SlotState::writing, me);
    if (spsc) {  // P1, P2: the only producer
      s->word.store(claimed, std::memory_order_relaxed);
      h->tail.store(pos + 1, std::memory_order_relaxed);
    } else {
      if (!s->word.compare_exchange_strong(w, claimed, std::memory_order_acquire)) continue;  // P1
      std::uint64_t expected = pos;
      h->tail.compare_exchange_strong(expected, pos + 1, std::memory_order_relaxed);  // P2
    }
    // P3, P4: payload, then the slot takes over the references (only a
    // handle that is not really ours can fail: then the slot is a skip).
    if (!ring::fill_slot(s, bytes, buffers, pool, me, holder(pos))) {
      s->word.store(ring::make_word(pos, ring::SlotState::full, 0), std::memory_order_seq_cst);
      notify_data();
      return SendStatus::bad_buffer;
    }
    // P5: commit. seq_cst: the store must be visible before P6 reads data_waiters (Dekker with a sleeper).
    s->word.store(ring::make_word(pos, ring::SlotState::full, 0), std::memory_order_seq_cst);
    bump(h->sends, spsc);
    return SendStatus::ok;
  }
}

// Backpressure::drop_oldest: discards the message at head — only when the
// ring is full at head (tail - head == capacity), so a slot that is merely
// being read or written never makes us discard younger messages. Returns
// true if a message was dropped (or a dead claimer's slot recovered).
bool Channel::State::drop_oldest() noexcept {
  const std::uint64_t pos = h->head.load(std::memory_order_acquire);
  if (h->tail.load(std::memory_order_acquire) - pos < capacity) return false;
  ring::SlotHeader* s = slot(pos);
  std::uint64_t w = s->word.load(std::memory_order_acquire);
  const std::int32_t d = ring::distance(w, pos);
  if (d > 0 || (d == 0 && ring::state_of(w) == ring::SlotState::reading)) {
    // pos was taken (or recovered) but head not advanced: help it along, as
    // take() does — with no consumer running, nobody else would.
    std::uint64_t expected = pos;
    h->head.compare_exchange_strong(expected, pos + 1, std::memory_order_acq_rel);
    return true;
  }
  if (d < 0) return false;
  if (ring::state_of(w) != ring::SlotState::full) return check_stuck(s, w, stuck_send);
  if (!s->word.compare_exchange_strong(w, ring::make_word(pos, ring::SlotState::reading, detail::self_pid()),
                                       std::memory_order_acquire))
    return false;
  std::uint64_t expected = pos;
  h->head.compare_exchange_strong(expected, pos + 1, std::memory_order_acq_rel);
  const bool skip = s->flags & ring::kSkip;
  release_slot_handles(s, pos);
  s->word.store(ring::make_word(pos + capacity, ring::SlotState::empty, 0), std::memory_order_seq_cst);
  if (!skip) h->drops.fetch_add(1, std::memory_order_relaxed);
  return true;
}

SendStatus Channel::try_send(std::span<const std::byte> bytes, std::span<Buffer> buffers) noexcept {
  SendStatus st = s_->put(bytes, buffers);
  if (st == SendStatus::ok) s_->notify_data();
  return st;
}

SendStatus Channel::send(std::span<const std::byte> bytes, std::span<Buffer> buffers,
                         std::chrono::nanoseconds timeout) noexcept {
  State& s = *s_;
  SendStatus st = s.put(bytes, buffers);
  if (st == SendStatus::ok) {
    s.notify_data();
    return st;
  }
  if (st != SendStatus::full || s.policy == Backpressure::fail) return st;
  if (s.policy == Backpressure::drop_oldest) {
    const std::uint64_t limit = detail::deadline_after(timeout);
    while (st == SendStatus::full) {
      if (detail::monotonic_ns() >= limit) return SendStatus::timed_out;
      if (!s.drop_oldest()) sched_yield();  // the slot in the way is being read or written: give it a moment
      st = s.put(bytes, buffers);
    }
    if (st == SendStatus::ok) s.notify_data();
    return st;
  }
  // Backpressure::block
  const std::uint64_t start = detail::monotonic_ns();
  for (std::uint32_t i = 0; i < s.h->spin && st == SendStatus::full; ++i) {
    detail::cpu_relax();
    st = s.put(bytes, buffers);
  }
  if (st == SendStatus::full &&
      !s.h->space.sleep_until(s.h->space_waiters, detail::deadline_after(timeout), ring::kSleepSliceNs, [&] {
        st = s.put(bytes, buffers);
        return st != SendStatus::full;
      }))
    st = SendStatus::timed_out;
  s.bump(s.h->send_blocked_ns, false, detail::monotonic_ns() - start);
  if (st == SendStatus::ok) s.notify_data();
  return st;
}

SendStatus Channel::send(Buffer&& buffer, std::span<const std::byte> bytes, std::chrono::nanoseconds timeout) noexcept {
  return send(bytes, std::span<Buffer>(&buffer, 1), timeout);
}

std::size_t Channel::send_batch(std::span<const std::span<const std::byte>> messages, std::chrono::nanoseconds timeout,
                                SendStatus* status) noexcept {
  std::size_t sent = 0;
  SendStatus st = SendStatus::ok;
  for (const auto& m : messages) {
    st = s_->put(m, {});
    if (st == SendStatus::full && s_->policy != Backpressure::fail) {
      s_->notify_data();  // let receivers make room before we wait
      st = send(m, {}, timeout);
    }
    if (st != SendStatus::ok) break;
    ++sent;
  }
  if (sent) s_->notify_data();
  if (status) *status = st;
  return sent;
}

// ---- receive -------------------------------------------------------------------------------------

ReceiveStatus Channel::State::take(Message& out) noexcept {
  const std::uint32_t me = detail::self_pid();
  for (;;) {
    const std::uint64_t pos = h->head.load(std::memory_order_acquire);
    ring::SlotHeader* s = slot(pos);
    // A message longer than 48 B spans two lines; fetch the second one in
    // parallel with the word instead of after it (one cross-core transfer
    // instead of two in series; channel_bench latency_busy_64B).
    if (slot_bytes > 64) __builtin_prefetch(reinterpret_cast<const char*>(s) + 64);
    std::uint64_t w = s->word.load(std::memory_order_acquire);
    const std::int32_t d = ring::distance(w, pos);
    if (d < 0) return ReceiveStatus::empty;  // still the previous lap (its reader is finishing)
    const ring::SlotState st = ring::state_of(w);
    if (d == 0 && st == ring::SlotState::empty) return ReceiveStatus::empty;
    if (d == 0 && st == ring::SlotState::writing) {  // a producer is filling it — or died doing so
      if (check_stuck(s, w, stuck_receive)) continue;
      return ReceiveStatus::empty;
    }
    if (d > 0 || st == ring::SlotState::reading) {  // pos already taken: help head along
      std::uint64_t expected = pos;
      h->head.compare_exchange_strong(expected, pos + 1, std::memory_order_acq_rel);
      continue;
    }
    // (pos, full): C1, C2
    const std::uint64_t claimed = ring::make_word(pos, ring::SlotState::reading, me);
    if (!consumer_cas) {
      s->word.store(claimed, std::memory_order_relaxed);
      h->head.store(pos + 1, std::memory_order_relaxed);
    } else {
      if (!s->word.compare_exchange_strong(w, claimed, std::memory_order_acquire)) continue;
      std::uint64_t expected = pos;
      h->head.compare_exchange_strong(expected, pos + 1, std::memory_order_relaxed);
    }
    if (s->flags & ring::kSkip) {  // a producer gave up on this slot
      s->handles = 0;
      s->word.store(ring::make_word(pos + capacity, ring::SlotState::empty, 0), std::memory_order_seq_cst);
      notify_space();
      continue;
    }
    // C3
    const std::uint32_t n = s->handles;
    if (pool)
      for (std::uint32_t i = 0; i < n; ++i) pool->prefetch(ring::handle_at(s, static_cast<int>(i)));
    const std::uint32_t len =
        std::min<std::uint32_t>(s->bytes, static_cast<std::uint32_t>(payload_capacity() - n * ring::kHandleBytes));
    std::memcpy(out.prepare(len), ring::payload_of(s) + std::size_t(n) * ring::kHandleBytes, len);
    out.set_position(pos);
    if (n) {
      const std::uint32_t slot_id = holder(pos);
      for (std::uint32_t i = 0; i < n; ++i) {
        // One pool call: the slot's reference becomes ours, or is dropped (BufferPool::take T1–T5).
        std::optional<Buffer> b = pool ? pool->take(ring::handle_at(s, static_cast<int>(i)), slot_id) : std::nullopt;
        if (b)
          out.buffers().push_back(std::move(*b));
        else
          out.add_lost();
      }
    }
    // C4. seq_cst: visible before C5 reads space_waiters.
    s->handles = 0;
    s->word.store(ring::make_word(pos + capacity, ring::SlotState::empty, 0), std::memory_order_seq_cst);
    bump(h->receives, !consumer_cas);
    return ReceiveStatus::ok;
  }
}

ReceiveStatus Channel::try_receive(Message& out) noexcept {
  out.clear();
  ReceiveStatus st = s_->take(out);
  if (st == ReceiveStatus::ok) s_->notify_space();
  return st;
}

ReceiveStatus Channel::receive(Message& out, std::chrono::nanoseconds timeout) noexcept {
  return receive_spin(out, s_->h->spin, timeout);
}

ReceiveStatus Channel::receive_spin(Message& out, std::uint32_t spin, std::chrono::nanoseconds timeout) noexcept {
  State& s = *s_;
  out.clear();
  ReceiveStatus st = s.take(out);
  for (std::uint32_t i = 0; i < spin && st == ReceiveStatus::empty; ++i) {
    detail::cpu_relax();
    st = s.take(out);
  }
  if (st == ReceiveStatus::ok) {
    s.notify_space();
    return st;
  }
  if (timeout <= std::chrono::nanoseconds::zero()) return st;
  const std::uint64_t start = detail::monotonic_ns();
  // The sleeping half of the Dekker pair with P5/P6.
  if (!s.h->data.sleep_until(s.h->data_waiters, detail::deadline_after(timeout), ring::kSleepSliceNs, [&] {
        st = s.take(out);
        return st != ReceiveStatus::empty;
      }))
    st = ReceiveStatus::timed_out;
  s.bump(s.h->receive_blocked_ns, false, detail::monotonic_ns() - start);
  if (st == ReceiveStatus::ok) s.notify_space();
  return st;
}

std::size_t Channel::receive_batch(std::span<Message> out, std::chrono::nanoseconds timeout) noexcept {
  if (out.empty()) return 0;
  if (receive(out[0], timeout) != ReceiveStatus::ok) return 0;
  std::size_t got = 1;
  for (; got < out.size(); ++got) {
    out[got].clear();
    if (s_->take(out[got]) != ReceiveStatus::ok) break;
  }
  if (got > 1) s_->notify_space();
  return got;
}

// ---- recovery ------------------------------------------------------------------------------------

// R1–R3 for a slot observed as `observed` (writing or reading by a dead pid).
bool Channel::State::recover(ring::SlotHeader* s, std::uint64_t observed) noexcept {
  const std::uint32_t me = detail::self_pid();
  const std::uint64_t pos_lo = ring::seq_of(observed);
  std::uint64_t w = observed;
  if (!s->word.compare_exchange_strong(w, ring::make_word(pos_lo, ring::SlotState::reading, me),
                                       std::memory_order_acq_rel))
    return false;                   // R1 lost: progress or another recoverer
  release_slot_handles(s, pos_lo);  // R2 (holder ids depend only on pos & mask)
  s->word.store(ring::make_word(pos_lo + capacity, ring::SlotState::empty, 0), std::memory_order_seq_cst);  // R3
  h->recovered.fetch_add(1, std::memory_order_relaxed);
  notify_space();
  notify_data();
  return true;
}

std::uint32_t Channel::reclaim(std::uint32_t pid) noexcept {
  State& s = *s_;
  std::uint32_t n = 0;
  if (!detail::reclaim_allowed(pid, "channel", s.name)) return 0;
  for (std::uint32_t i = 0; i < s.capacity; ++i) {
    ring::SlotHeader* sl = s.slot(i);
    const std::uint64_t w = sl->word.load(std::memory_order_acquire);
    const ring::SlotState st = ring::state_of(w);
    if ((st == ring::SlotState::writing || st == ring::SlotState::reading) && ring::pid_of(w) == (pid & ring::kPidMask))
      n += s.recover(sl, w) ? 1 : 0;
  }
  return n;
}

std::uint32_t Channel::reclaim_dead() noexcept {
  State& s = *s_;
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < s.capacity; ++i) {
    ring::SlotHeader* sl = s.slot(i);
    const std::uint64_t w = sl->word.load(std::memory_order_acquire);
    const ring::SlotState st = ring::state_of(w);
    if (st != ring::SlotState::writing && st != ring::SlotState::reading) continue;
    const std::uint32_t pid = ring::pid_of(w);
    if (pid && detail::process_liveness(static_cast<pid_t>(pid), 0) == detail::Liveness::dead)
      n += s.recover(sl, w) ? 1 : 0;
  }
  return n;
}

std::uint32_t Channel::discard_all() noexcept {
  std::uint32_t n = 0;
  Message m;
  while (s_->take(m) == ReceiveStatus::ok) {
    m.clear();
    ++n;
  }
  if (n) s_->notify_space();
  return n;
}

ChannelStats Channel::stats() const {
  const ChannelHeader* h = s_->h;
  ChannelStats st;
  st.name = s_->name;
  st.kind = kind();
  st.backpressure = s_->policy;
  st.capacity = s_->capacity;
  st.slot_bytes = s_->slot_bytes;
  const std::uint64_t head = h->head.load(std::memory_order_acquire);
  const std::uint64_t tail = h->tail.load(std::memory_order_acquire);
  st.depth = tail > head ? std::min<std::uint64_t>(tail - head, s_->capacity) : 0;
  st.sends = h->sends.load(std::memory_order_relaxed);
  st.receives = h->receives.load(std::memory_order_relaxed);
  st.drops = h->drops.load(std::memory_order_relaxed);
  st.recovered = h->recovered.load(std::memory_order_relaxed);
  st.send_blocked_ns = h->send_blocked_ns.load(std::memory_order_relaxed);
  st.receive_blocked_ns = h->receive_blocked_ns.load(std::memory_order_relaxed);
  st.data_waiters = h->data_waiters.load(std::memory_order_relaxed);
  st.space_waiters = h->space_waiters.load(std::memory_order_relaxed);
  return st;
}

// ---- poller --------------------------------------------------------------------------------------

ChannelPoller::ChannelPoller(Channel& channel) : WaitingListener(channel.s_->h->data_waiters, channel.s_->h->data) {}

}  // namespace ipc
