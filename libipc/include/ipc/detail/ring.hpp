// ipc/detail/ring.hpp — internals shared by ring channels (ipc/channel.hpp)
// and broadcast channels (ipc/broadcast.hpp): the slot format and the steps
// both ring kinds share. Not an API: users include channel.hpp/broadcast.hpp.
//
// Types, in `ipc::ring`: the slot encoding (`SlotState`, `SlotHeader`, word helpers, `slot_holder()`),
// the steps both ring kinds share (validation, filling a slot and moving
// references into it, releasing them) and `WaitingListener` (the pollable
// fd behind ChannelPoller and SubscriptionPoller).
//
// A ring is `capacity` (a power of two) slots of `slot_bytes` each (a
// multiple of 64, so a slot starts on a cache line). A slot is a 16-byte
// header followed by its payload:
//
//   word      64 bits: seq (32) | state (2) | pid (30)
//               seq   the ring position (mod 2^32) this slot currently serves;
//                     slot i serves positions i, i + capacity, i + 2·capacity …
//               state empty / writing / full / reading
//               pid   the process that claimed it (writing, reading), else 0
//             The word is the slot's only synchronisation: every transition
//             is one store or CAS of it, so the state, the lap and the owner
//             change together and a survivor always knows who to blame.
//   bytes     inline payload length
//   handles   number of BufferHandles at the start of the payload
//   flags     kSkip: a slot whose producer gave up; consumers skip it
//   pos_high  broadcast only: bits 32–47 of the position, so a subscriber
//             that fell 2^32 or more behind is told it was overrun instead
//             of mistaking a newer lap for its own (48-bit positions: at
//             10^7 messages/s they wrap after 325 days)
//   payload   handles[handles] (16 B each), then `bytes` inline bytes
//
// References. A handle in a slot is one counted reference in the pool, held
// under the slot's own holder id `slot_holder(tag, index)` = bit 30 | a
// random 14-bit ring tag << 16 | slot index. Holder ids of processes are pids
// (< 2^22), so pool.reclaim(pid) never drops a ring's reference, and because
// the id names the slot, releasing one slot's references can never drop a
// reference that another slot holds to the same buffer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "ipc/channel_message.hpp"
#include "ipc/detail/clock.hpp"
#include "ipc/event.hpp"
#include "ipc/pool.hpp"

namespace ipc {
namespace ring {

enum class SlotState : std::uint32_t { empty = 0, writing = 1, full = 2, reading = 3 };

inline constexpr std::uint32_t kPidMask = (1u << 30) - 1;
inline constexpr std::size_t kSlotHeaderBytes = 16;
inline constexpr std::size_t kHandleBytes = sizeof(BufferHandle);
inline constexpr std::uint8_t kSkip = 1;
inline constexpr std::uint32_t kMaxCapacity = 1u << 16;  // the slot index is 16 bits of the holder id
inline constexpr std::uint32_t kMaxHandles = 255;

constexpr std::uint64_t make_word(std::uint64_t pos, SlotState s, std::uint32_t pid) noexcept {
  return (pos & 0xffffffffu) << 32 | std::uint64_t(static_cast<std::uint32_t>(s)) << 30 | (pid & kPidMask);
}
constexpr std::uint32_t seq_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
constexpr SlotState state_of(std::uint64_t w) noexcept { return static_cast<SlotState>((w >> 30) & 3u); }
constexpr std::uint32_t pid_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w) & kPidMask; }
// seq - pos as a signed lap distance (positions compared mod 2^32).
constexpr std::int32_t distance(std::uint64_t w, std::uint64_t pos) noexcept {
  return static_cast<std::int32_t>(seq_of(w) - static_cast<std::uint32_t>(pos));
}
constexpr std::uint32_t slot_holder(std::uint32_t tag, std::uint32_t index) noexcept {
  return 0x40000000u | (tag & 0x3fffu) << 16 | (index & 0xffffu);
}

struct SlotHeader {
  std::atomic<std::uint64_t> word;
  std::uint32_t bytes;
  std::uint8_t handles;
  std::uint8_t flags;
  std::uint16_t pos_high;  // broadcast: bits 32–47 of the position (the word has the low 32)
};
static_assert(sizeof(SlotHeader) == kSlotHeaderBytes);

// The plain header fields (bytes, handles, flags, pos_high) of a broadcast
// slot are read by subscribers *while* a publisher may rewrite them (the
// seqlock S1–S4 validates afterwards), so both sides access them as relaxed
// atomics: no data race in the C++ model, and plain moves on x86/aarch64.
// Channel slots are exclusive to their claimer and may use them directly.
template <class T>
T load_field(T& field) noexcept {
  return std::atomic_ref<T>(field).load(std::memory_order_relaxed);
}
template <class T, class V>
void store_field(T& field, V value) noexcept {
  std::atomic_ref<T>(field).store(static_cast<T>(value), std::memory_order_relaxed);
}

inline SlotHeader* slot_at(std::byte* slots, std::uint32_t slot_bytes, std::uint32_t mask, std::uint64_t pos) noexcept {
  return reinterpret_cast<SlotHeader*>(slots + std::size_t(pos & mask) * slot_bytes);
}
inline std::byte* payload_of(SlotHeader* s) noexcept { return reinterpret_cast<std::byte*>(s) + kSlotHeaderBytes; }
inline BufferHandle handle_at(SlotHeader* s, int i) noexcept {
  BufferHandle h;
  std::memcpy(&h, payload_of(s) + std::size_t(i) * kHandleBytes, sizeof h);
  return h;
}

// Throws invalid_argument naming `what` (e.g. "channel 'jobs'") unless
// capacity is a power of two in 2…kMaxCapacity and slot_bytes a multiple of
// 64 in 64…65536.
void validate_geometry(const std::string& what, std::uint32_t capacity, std::uint32_t slot_bytes);
// Throws invalid_argument unless `pool` is the pool the ring was created
// with (`ring_pool_id`, 0 = none): a process that cannot release the slots'
// references must not touch slots that hold them.
void check_pool(const std::string& what, std::uint32_t ring_pool_id, const BufferPool* pool);
// The 14-bit tag of a new ring's holder ids (slot_holder()): the pool's next
// (unique among its rings: BufferPool::next_holder_tag), or a random one for
// a ring without a pool, whose slots never hold references.
std::uint32_t holder_tag(BufferPool* pool) noexcept;
// Slot i starts as (i, empty).
void init_slots(std::byte* slots, std::uint32_t capacity, std::uint32_t slot_bytes) noexcept;
// Whether a message fits a slot and its buffers can travel (ok, too_large,
// no_pool, bad_buffer).
SendStatus check_message(std::span<const std::byte> bytes, std::span<const Buffer> buffers,
                         std::size_t payload_capacity, const BufferPool* pool) noexcept;
// Writes a claimed slot: handles, inline bytes, counts (handles last), then
// moves each buffer's reference from `me` to `holder` and detaches the
// Buffers. If a reference cannot be moved, the moved ones are moved back,
// the slot is marked kSkip with no handles, and it returns false (the caller
// still commits the slot, as a skip).
bool fill_slot(SlotHeader* s, std::span<const std::byte> bytes, std::span<Buffer> buffers, BufferPool* pool,
               std::uint32_t me, std::uint32_t holder) noexcept;
// Releases every reference the slot lists under `holder` (a handle the slot
// does not hold is a no-op in the pool), then handles = 0.
void release_handles(SlotHeader* s, std::size_t payload_capacity, BufferPool* pool, std::uint32_t holder) noexcept;

// How long a slot (or cursor) may show no progress before its claimer's
// liveness is checked, and how often a blocked caller wakes to look again.
inline constexpr std::chrono::milliseconds kStuckCheck{5};
inline constexpr std::uint64_t kSleepSliceNs = 50'000'000;

// Remembers what keeps being in the way and since when. expired(key) is true
// once the same key has been seen for kStuckCheck (then it re-arms, so the
// next true comes one interval later). Relaxed atomics: threads of one
// process may share it; a lost update only delays a check, and callers
// decide by liveness, never by the timer alone.
class StuckTimer {
 public:
  StuckTimer() = default;
  StuckTimer(const StuckTimer& o) noexcept { *this = o; }
  StuckTimer& operator=(const StuckTimer& o) noexcept {
    key_.store(o.key_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    since_.store(o.since_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }
  bool expired(std::uint64_t key) noexcept;

 private:
  std::atomic<std::uint64_t> key_{0};
  std::atomic<std::uint64_t> since_{0};
};

// True once the slot word `w` (writing or reading) has been in the way for
// kStuckCheck and its claimer is provably dead.
bool claimer_dead(std::uint64_t w, StuckTimer& timer) noexcept;

// A pollable listener on a ring's data Event that counts as a waiter while
// it lives (so producers notify on every message).
class WaitingListener {
 public:
  WaitingListener(std::atomic<std::uint32_t>& waiters, Event& event);  // throws no_space (see EventListener)
  ~WaitingListener();
  WaitingListener(const WaitingListener&) = delete;
  WaitingListener& operator=(const WaitingListener&) = delete;
  int fd() const noexcept { return listener_.fd(); }
  void arm() noexcept { listener_.arm(); }
  int drain() noexcept { return listener_.drain(); }

 private:
  std::atomic<std::uint32_t>* waiters_;
  EventListener listener_;
};

}  // namespace ring
}  // namespace ipc
