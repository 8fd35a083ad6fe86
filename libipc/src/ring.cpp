// The steps ring channels and broadcast channels share: see ipc/detail/ring.hpp.
#include "ipc/detail/ring.hpp"
#include "ipc/channel_message.hpp"

#include <sys/random.h>

#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"

namespace ipc {

const char* to_string(SendStatus s) noexcept {
  switch (s) {
    case SendStatus::ok: return "ok";
    case SendStatus::full: return "full";
    case SendStatus::timed_out: return "timed_out";
    case SendStatus::too_large: return "too_large";
    case SendStatus::no_pool: return "no_pool";
    case SendStatus::bad_buffer: return "bad_buffer";
  }
  return "unknown";
}

const char* to_string(ReceiveStatus s) noexcept {
  switch (s) {
    case ReceiveStatus::ok: return "ok";
    case ReceiveStatus::empty: return "empty";
    case ReceiveStatus::timed_out: return "timed_out";
  }
  return "unknown";
}

namespace ring {

bool StuckTimer::expired(std::uint64_t key) noexcept {
  const std::uint64_t now = detail::monotonic_ns();
  if (key != key_.load(std::memory_order_relaxed)) {
    key_.store(key, std::memory_order_relaxed);
    since_.store(now, std::memory_order_relaxed);
    return false;
  }
  if (now - since_.load(std::memory_order_relaxed) <
      static_cast<std::uint64_t>(std::chrono::nanoseconds(kStuckCheck).count()))
    return false;
  since_.store(now, std::memory_order_relaxed);
  return true;
}

bool claimer_dead(std::uint64_t w, StuckTimer& timer) noexcept {
  const SlotState st = state_of(w);
  if (st != SlotState::writing && st != SlotState::reading) return false;
  if (!timer.expired(w)) return false;
  const std::uint32_t pid = pid_of(w);
  return pid != 0 && detail::process_liveness(static_cast<pid_t>(pid), 0) == detail::Liveness::dead;
}

void validate_geometry(const std::string& what, std::uint32_t capacity, std::uint32_t slot_bytes) {
  if (capacity < 2 || capacity > kMaxCapacity || (capacity & (capacity - 1)))
    throw Error(ErrorCode::invalid_argument, what + ": capacity " + std::to_string(capacity) +
                                                 " is not a power of two between 2 and 65536 (e.g. 256)");
  if (slot_bytes < 64 || slot_bytes > 65536 || slot_bytes % 64)
    throw Error(ErrorCode::invalid_argument, what + ": slot_bytes " + std::to_string(slot_bytes) +
                                                 " must be a multiple of 64 between 64 and 65536 "
                                                 "(16 bytes of it are the slot header)");
}

void check_pool(const std::string& what, std::uint32_t ring_pool_id, const BufferPool* pool) {
  if (!pool && ring_pool_id != 0)
    throw Error(ErrorCode::invalid_argument,
                what + " carries buffers of pool id " + std::to_string(ring_pool_id) +
                    ": open it with that BufferPool (a process without the pool could not take over or release "
                    "the references its slots hold)");
  if (pool && ring_pool_id != pool->pool_id())
    throw Error(ErrorCode::invalid_argument,
                what + " was created for pool id " + std::to_string(ring_pool_id) + ", not pool '" + pool->name() +
                    "' (id " + std::to_string(pool->pool_id()) + "): open it with the pool it was created with");
}

std::uint32_t holder_tag(BufferPool* pool) noexcept {
  if (pool) return pool->next_holder_tag();
  std::uint32_t tag = 0;
  if (::getrandom(&tag, sizeof tag, 0) != sizeof tag) tag = static_cast<std::uint32_t>(detail::monotonic_ns());
  return tag & 0x3fff;
}

void init_slots(std::byte* slots, std::uint32_t capacity, std::uint32_t slot_bytes) noexcept {
  for (std::uint32_t i = 0; i < capacity; ++i) {
    auto* s = new (slots + std::size_t(i) * slot_bytes) SlotHeader{};
    s->word.store(make_word(i, SlotState::empty, 0), std::memory_order_relaxed);
  }
}

SendStatus check_message(std::span<const std::byte> bytes, std::span<const Buffer> buffers,
                         std::size_t payload_capacity, const BufferPool* pool) noexcept {
  const std::size_t n = buffers.size();
  if (n > kMaxHandles || bytes.size() + n * kHandleBytes > payload_capacity) return SendStatus::too_large;
  if (n) {
    if (!pool) return SendStatus::no_pool;
    for (const Buffer& b : buffers)
      if (!b || b.handle().pool_id != pool->pool_id()) return SendStatus::bad_buffer;
  }
  return SendStatus::ok;
}

bool fill_slot(SlotHeader* s, std::span<const std::byte> bytes, std::span<Buffer> buffers, BufferPool* pool,
               std::uint32_t me, std::uint32_t holder) noexcept {
  const std::size_t n = buffers.size();
  std::byte* p = payload_of(s);
  for (std::size_t i = 0; i < n; ++i) std::memcpy(p + i * kHandleBytes, &buffers[i].handle(), kHandleBytes);
  if (!bytes.empty()) std::memcpy(p + n * kHandleBytes, bytes.data(), bytes.size());
  // Relaxed atomics: broadcast subscribers may read these concurrently (load_field).
  store_field(s->bytes, bytes.size());
  store_field(s->flags, 0);
  store_field(s->handles, n);  // before the moves: a recoverer releases what the slot lists
  std::size_t moved = 0;
  for (; moved < n; ++moved)
    if (pool->transfer(buffers[moved].handle(), me, holder) != BufferPool::HandleStatus::ok) break;
  if (moved < n) {  // only a handle that is not really ours can fail
    for (std::size_t i = 0; i < moved; ++i) pool->transfer(buffers[i].handle(), holder, me);
    store_field(s->handles, 0);
    store_field(s->flags, kSkip);
    return false;
  }
  for (std::size_t i = 0; i < n; ++i) buffers[i].detach();
  return true;
}

void release_handles(SlotHeader* s, std::size_t payload_capacity, BufferPool* pool, std::uint32_t holder) noexcept {
  const std::uint32_t n =
      std::min<std::uint32_t>(load_field(s->handles), static_cast<std::uint32_t>(payload_capacity / kHandleBytes));
  if (pool)
    for (std::uint32_t i = 0; i < n; ++i) pool->release(handle_at(s, static_cast<int>(i)), holder);
  store_field(s->handles, 0);
}

WaitingListener::WaitingListener(std::atomic<std::uint32_t>& waiters, Event& event)
    : waiters_(&waiters), listener_(event) {
  waiters_->fetch_add(1, std::memory_order_seq_cst);  // a standing waiter: every commit notifies
}

WaitingListener::~WaitingListener() { waiters_->fetch_sub(1, std::memory_order_relaxed); }

}  // namespace ring
}  // namespace ipc
