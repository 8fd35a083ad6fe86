// BufferPool: handles and references — validation, the reference word
// (generation | refmask) and holder slots, retain / release / transfer /
// adopt, the receivers' single calls take() and share(), and Buffer.
// Protocol: pool.hpp ("Descriptor", and the comments above take()/share()).
#include <sched.h>

#include <algorithm>

#include "ipc/detail/process.hpp"
#include "ipc/pool.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

const char* BufferPool::to_string(HandleStatus s) noexcept {
  switch (s) {
    case HandleStatus::ok: return "ok";
    case HandleStatus::foreign_pool: return "foreign_pool: the handle belongs to another pool";
    case HandleStatus::bad_class: return "bad_class: size class out of range";
    case HandleStatus::bad_index: return "bad_index: buffer index out of range";
    case HandleStatus::stale: return "stale: the buffer was freed, reclaimed or reused (double free / use after free)";
    case HandleStatus::not_held: return "not_held: this holder holds no reference to the buffer";
    case HandleStatus::too_many_holders: return "too_many_holders: all holder slots of the buffer are in use";
  }
  return "unknown";
}

// ---- the reference word --------------------------------------------------------------

namespace pool_detail {
namespace {
// Clears reference bit k; true if that made the buffer unreferenced.
bool clear_reference(PoolDescriptor* d, int k, bool* cleared) {
  const std::uint32_t bit = 1u << k;
  std::uint64_t w = d->refword.load(std::memory_order_acquire);
  while (mask_of(w) & bit)
    if (d->refword.compare_exchange_weak(w, w & ~std::uint64_t{bit}, std::memory_order_acq_rel)) {
      *cleared = true;
      return (mask_of(w) & ~bit) == 0;
    }
  *cleared = false;
  return false;
}
}  // namespace

bool release_slot(PoolDescriptor* d, int k, std::uint32_t holder, bool holder_dead, bool* dropped) {
  auto& slot = d->holders[k];
  std::uint32_t v = slot.load(std::memory_order_acquire);
  if (v == holder && !slot.compare_exchange_strong(v, holder | kDropping, std::memory_order_acq_rel)) {
    *dropped = false;  // transferred or released by someone else meanwhile
    return false;
  }
  if (v != holder && v != (holder | kDropping)) {
    *dropped = false;
    return false;
  }
  bool cleared = false;
  const bool last = clear_reference(d, k, &cleared);
  std::uint32_t marked = holder | kDropping;
  if (!cleared) {
    // The slot was reserved but never counted (an unfinished retain): not a
    // reference. A dead retainer's slot is freed; a live one (another thread
    // of this process, mid-retain) gets it back.
    *dropped = false;
    slot.compare_exchange_strong(marked, holder_dead ? 0 : holder, std::memory_order_acq_rel);
    return false;
  }
  slot.compare_exchange_strong(marked, 0, std::memory_order_acq_rel);  // fails harmlessly if A3 rewrote it
  *dropped = true;
  return last;
}

bool drop_all_references(PoolDescriptor* d, std::uint32_t pid) {
  bool last = false;
  for (int k = 0; k < BufferPool::kMaxHolders; ++k) {
    std::uint32_t v = d->holders[k].load(std::memory_order_acquire);
    if (v != pid && v != (pid | kDropping)) continue;
    bool dropped = false;
    last |= release_slot(d, k, pid, true, &dropped);
  }
  return last;
}

bool owned_or_held(const PoolDescriptor* d, std::uint64_t st, std::uint32_t pid) {
  if (owner_of(st) == 0) return false;
  bool held = owner_of(st) == pid;
  for (const auto& slot : d->holders) held |= slot.load(std::memory_order_relaxed) == pid;
  return held;
}
}  // namespace pool_detail

// ---- Buffer --------------------------------------------------------------------

Buffer::Buffer(Buffer&& other) noexcept { *this = std::move(other); }

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    handle_ = std::exchange(other.handle_, BufferHandle{});
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

BufferHandle Buffer::detach() noexcept {
  BufferHandle h = handle_;
  pool_ = nullptr;
  handle_ = {};
  data_ = nullptr;
  capacity_ = 0;
  return h;
}

void Buffer::reset() noexcept {
  if (pool_) static_cast<BufferPool::State*>(pool_)->release_own(handle_);
  detach();
}

// ---- State: one part's handles ---------------------------------------------------------------

PoolDescriptor* BufferPool::State::check(const BufferHandle& h, HandleStatus* status) const noexcept {
  auto fail = [&](HandleStatus st) -> PoolDescriptor* {
    if (status) *status = st;
    return nullptr;
  };
  if (h.pool_id != header->pool_id || h.extension != ext_index) return fail(HandleStatus::foreign_pool);
  if (h.size_class == kRegionClass) {
    if (!region) return fail(HandleStatus::bad_class);
    if (h.index >= region.blocks()) return fail(HandleStatus::bad_index);
  } else {
    if (h.size_class >= header->class_count) return fail(HandleStatus::bad_class);
    if (h.index >= classes[h.size_class].count) return fail(HandleStatus::bad_index);
  }
  PoolDescriptor* d = desc(h.size_class, h.index);
  std::uint64_t st = d->state.load(std::memory_order_acquire);
  if (owner_of(st) == 0 || gen_of(st) != h.generation || (d->meta.load(std::memory_order_relaxed) & kCachedBit))
    return fail(HandleStatus::stale);
  if (status) *status = HandleStatus::ok;
  return d;
}

// retain() / share() H3–H4: reserve a holder slot, then count it.
BufferPool::HandleStatus BufferPool::State::add_reference(PoolDescriptor* d, const BufferHandle& h,
                                                          std::uint32_t holder) noexcept {
  for (int k = 0; k < kMaxHolders; ++k) {
    std::uint32_t zero = 0;
    auto& slot = d->holders[k];
    if (slot.load(std::memory_order_relaxed) != 0 ||
        !slot.compare_exchange_strong(zero, holder, std::memory_order_acq_rel))
      continue;
    // Slot reserved; now count it — only while this incarnation is still
    // referenced (the generation in the word rules out the next one).
    std::uint64_t w = d->refword.load(std::memory_order_acquire);
    while (static_cast<std::uint32_t>(w >> 32) == h.generation && mask_of(w) != 0 && !(mask_of(w) & (1u << k)))
      if (d->refword.compare_exchange_weak(w, w | (std::uint64_t{1} << k), std::memory_order_acq_rel))
        return HandleStatus::ok;
    std::uint32_t mine = holder;
    slot.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);  // never clobber a newer owner's slot
    return HandleStatus::stale;                                        // the last reference went away meanwhile
  }
  return HandleStatus::too_many_holders;
}

// transfer() / adopt() / take() T3: one CAS on a counted holder slot.
BufferPool::HandleStatus BufferPool::State::move_reference(PoolDescriptor* d, std::uint32_t from,
                                                           std::uint32_t to) noexcept {
  if (from == 0 || to == 0) return HandleStatus::not_held;
  const std::uint32_t counted = mask_of(d->refword.load(std::memory_order_acquire));
  for (int k = 0; k < kMaxHolders; ++k) {
    std::uint32_t expected = from;
    auto& slot = d->holders[k];
    if ((counted & (1u << k)) && slot.load(std::memory_order_relaxed) == from &&
        slot.compare_exchange_strong(expected, to, std::memory_order_acq_rel))
      return HandleStatus::ok;
  }
  return HandleStatus::not_held;
}

BufferPool::HandleStatus BufferPool::State::drop(PoolDescriptor* d, const BufferHandle& h,
                                                 std::uint32_t holder) noexcept {
  // A death after our reference is dropped and before the buffer is freed
  // would orphan it — unless we own it (reclaim of the owner frees it):
  // record the pending free first (D1; see finish_dead_op).
  const std::uint64_t word = d->state.load(std::memory_order_acquire);
  if (owner_of(word) != pid) {
    if (clients.mine() < 0) client_slot();
    clients.begin_free(h.size_class, h.index, word, pid);
  }
  for (int k = 0; k < kMaxHolders; ++k) {
    if (d->holders[k].load(std::memory_order_acquire) != holder) continue;
    bool dropped = false;
    const bool last = release_slot(d, k, holder, false, &dropped);  // the one atomic decision
    if (!dropped) continue;                                         // not a counted reference of ours after all
    if (last) release_unreferenced(h.size_class, h.index, h.generation);
    clients.end_op();  // D2
    count_op(h.size_class, false, false);
    return HandleStatus::ok;
  }
  clients.end_op();
  return HandleStatus::not_held;
}

BufferPool::HandleStatus BufferPool::State::release(const BufferHandle& h, std::uint32_t holder) noexcept {
  ensure_process();
  HandleStatus st;
  PoolDescriptor* d = check(h, &st);
  if (!d) return st;
  return drop(d, h, holder == 0 ? pid : holder);
}

// A Buffer's own reference: valid for as long as the Buffer lives (only a
// dead process's references are reclaimed), so no handle check is needed.
void BufferPool::State::release_own(const BufferHandle& h) noexcept {
  if (detail::self_pid() != pid) return;  // a fork child's copy: the parent's reference
  drop(desc(h.size_class, h.index), h, pid);
}

Buffer BufferPool::State::make_buffer(const BufferHandle& h) noexcept {
  const std::size_t capacity =
      h.size_class == kRegionClass ? region.capacity(h.index) : classes[h.size_class].buffer_size;
  return Buffer(this, h, data(h.size_class, h.index), capacity);
}

// ---- BufferPool: handles --------------------------------------------------------------------

void BufferPool::prefetch(const BufferHandle& h) const noexcept {
  if (h.pool_id != s_->header->pool_id || h.extension != 0) return;  // base pool only: no mapping on this path
  const State& s = *s_;
  if (h.size_class == kRegionClass) {
    if (!s.region || h.index >= s.region.blocks()) return;
  } else if (h.size_class >= s.header->class_count || h.index >= s.classes[h.size_class].count) {
    return;
  }
  __builtin_prefetch(s.desc(h.size_class, h.index), 1);  // take/share/release CAS it: ask for ownership
  __builtin_prefetch(s.data(h.size_class, h.index), 0);
}

std::byte* BufferPool::resolve(const BufferHandle& h, HandleStatus* status) const noexcept {
  State* p = s_->part(h.extension);
  if (!p) {
    if (status) *status = HandleStatus::foreign_pool;
    return nullptr;
  }
  return p->check(h, status) ? p->data(h.size_class, h.index) : nullptr;
}

BufferPool::HandleStatus BufferPool::retain(const BufferHandle& h, std::uint32_t holder) noexcept {
  s_->ensure_process();
  State* p = s_->part(h.extension);
  if (!p) return HandleStatus::foreign_pool;
  State& s = *p;
  s.ensure_process();
  HandleStatus st;
  PoolDescriptor* d = s.check(h, &st);
  if (!d) return st;
  if (holder == 0) {
    if (s.client_slot() < 0) return HandleStatus::too_many_holders;
    holder = s.pid;
  }
  return s.add_reference(d, h, holder);
}

BufferPool::HandleStatus BufferPool::release(const BufferHandle& h, std::uint32_t holder) noexcept {
  State* p = s_->part(h.extension);
  return p ? p->release(h, holder) : HandleStatus::foreign_pool;
}

BufferPool::HandleStatus BufferPool::transfer(const BufferHandle& h, std::uint32_t from, std::uint32_t to) noexcept {
  State* p = s_->part(h.extension);
  if (!p) return HandleStatus::foreign_pool;
  HandleStatus st;
  PoolDescriptor* d = p->check(h, &st);
  if (!d) return st;
  return p->move_reference(d, from, to);
}

namespace {
// T1 / H1: the part a received handle names, with this process's identity
// (fork) brought up to date in the base and in the part.
BufferPool::State* receiving_part(BufferPool::State& base, const BufferHandle& h,
                                  BufferPool::HandleStatus* status) noexcept {
  base.ensure_process();
  BufferPool::State* p = base.part(h.extension);
  if (!p) {
    if (status) *status = BufferPool::HandleStatus::foreign_pool;
    return nullptr;
  }
  p->ensure_process();
  return p;
}
}  // namespace

std::optional<Buffer> BufferPool::adopt(const BufferHandle& h, std::uint32_t from_holder,
                                        HandleStatus* status) noexcept {
  State* p = receiving_part(*s_, h, status);
  if (!p) return std::nullopt;
  State& s = *p;
  HandleStatus st = HandleStatus::too_many_holders;  // no client slot
  if (s.client_slot() >= 0)
    if (PoolDescriptor* d = s.check(h, &st)) st = s.move_reference(d, from_holder, s.pid);
  if (status) *status = st;
  if (st != HandleStatus::ok) return std::nullopt;
  return s.make_buffer(h);
}

std::optional<Buffer> BufferPool::take(const BufferHandle& h, std::uint32_t from_holder,
                                       HandleStatus* status) noexcept {
  State* p = receiving_part(*s_, h, status);  // T1
  if (!p) return std::nullopt;
  State& s = *p;
  const bool registered = s.client_slot() >= 0;  // T1
  HandleStatus st;
  PoolDescriptor* d = s.check(h, &st);                                                                // T2
  if (d) st = registered ? s.move_reference(d, from_holder, s.pid) : HandleStatus::too_many_holders;  // T3
  if (status) *status = st;
  if (st == HandleStatus::ok) return s.make_buffer(h);  // T4
  // T5: a reference we could not take over is not left behind.
  if (d && from_holder != 0) s.drop(d, h, from_holder);
  return std::nullopt;
}

std::optional<Buffer> BufferPool::share(const BufferHandle& h, std::chrono::nanoseconds holder_wait,
                                        HandleStatus* status) noexcept {
  State* p = receiving_part(*s_, h, status);  // H1
  if (!p) return std::nullopt;
  State& s = *p;
  HandleStatus st = HandleStatus::too_many_holders;  // no client slot: nothing is added
  if (s.client_slot() >= 0) {                        // H1
    auto attempt = [&] {
      PoolDescriptor* d = s.check(h, &st);       // H2
      if (d) st = s.add_reference(d, h, s.pid);  // H3–H4
    };
    attempt();
    for (std::uint64_t until = 0; st == HandleStatus::too_many_holders;) {  // H5
      const std::uint64_t now = detail::monotonic_ns();
      if (until == 0) until = now + static_cast<std::uint64_t>(std::max<std::int64_t>(0, holder_wait.count()));
      if (now >= until) break;
      sched_yield();
      attempt();
    }
  }
  if (status) *status = st;
  if (st != HandleStatus::ok) return std::nullopt;
  return s.make_buffer(h);  // H6
}

std::uint32_t BufferPool::holders(const BufferHandle& h) const noexcept {
  State* p = s_->part(h.extension);
  if (!p) return 0;
  PoolDescriptor* d = p->check(h, nullptr);
  if (!d) return 0;
  return static_cast<std::uint32_t>(__builtin_popcount(mask_of(d->refword.load(std::memory_order_acquire))));
}

}  // namespace ipc
