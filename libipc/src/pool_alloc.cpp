// BufferPool: size-class allocation and free — admission (A1), the claim CAS
// on the descriptor (A2), A3, free (F1–F4), the per-handle caches, and the
// blocking allocate loops; the large region's budgets and waiters (R6).
// Protocol: pool.hpp ("Allocation", "Free", "Per-handle cache").
#include <algorithm>

#include "ipc/detail/process.hpp"
#include "ipc/pool.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

const char* to_string(AllocStatus s) noexcept {
  switch (s) {
    case AllocStatus::ok: return "ok";
    case AllocStatus::exhausted: return "exhausted";
    case AllocStatus::too_large: return "too_large";
    case AllocStatus::over_budget: return "over_budget";
    case AllocStatus::timed_out: return "timed_out";
    case AllocStatus::no_client_slot: return "no_client_slot";
  }
  return "unknown";
}

// ---- admission ------------------------------------------------------------------------

AllocStatus BufferPool::State::admit(std::uint32_t c, Priority priority) noexcept {
  PoolClass& pc = cls(c);
  int slot = client_slot();
  if (slot < 0) return AllocStatus::no_client_slot;
  const std::uint32_t limit = pc.count - (priority == Priority::normal ? pc.reserve : 0);
  int root_slot = root == this ? slot : root->client_slot();
  if (root_slot < 0) return AllocStatus::no_client_slot;
  // seq_cst: half of the Dekker pair with shrink()'s retiring check (S1/S2).
  // Counters are compared as signed: a transient drift below zero (see
  // recount()) must never look like a full pool.
  const auto n = static_cast<std::int32_t>(pc.claimed.fetch_add(1, std::memory_order_seq_cst) + 1);  // A1
  std::int64_t b = static_cast<std::int64_t>(
      root->header->claimed_bytes.fetch_add(pc.stride, std::memory_order_acq_rel) + pc.stride);
  if (root->region) b += static_cast<std::int64_t>(root->region.used_bytes());
  const auto cb = static_cast<std::int64_t>(root->clients.charge(root_slot, pc.stride));
  clients.count_admission(slot, c);
  const PoolHeader* rh = root->header;
  AllocStatus st = AllocStatus::ok;
  if (n > static_cast<std::int32_t>(limit))
    st = AllocStatus::exhausted;
  else if ((rh->budget_bytes && b > static_cast<std::int64_t>(rh->budget_bytes)) ||
           (rh->client_budget_bytes && cb > static_cast<std::int64_t>(rh->client_budget_bytes)))
    st = AllocStatus::over_budget;
  else if (ext_index != 0 && !root->extensions.admits(ext_index, ext_epoch))
    st = AllocStatus::exhausted;  // this incarnation of the extension is being retired (or gone)
  if (st != AllocStatus::ok) {
    unadmit(c, pid, slot);
    return st;
  }
  std::uint32_t peak = pc.peak.load(std::memory_order_relaxed);
  while (n > static_cast<std::int32_t>(peak) &&
         !pc.peak.compare_exchange_weak(peak, static_cast<std::uint32_t>(n), std::memory_order_relaxed)) {
  }
  return st;
}

void BufferPool::State::unadmit(std::uint32_t c, std::uint32_t owner_pid, int owner_slot) noexcept {
  PoolClass& pc = cls(c);
  pc.claimed.fetch_sub(1, std::memory_order_acq_rel);
  root->header->claimed_bytes.fetch_sub(pc.stride, std::memory_order_acq_rel);
  if (owner_slot < 0) owner_slot = clients.find(owner_pid);
  if (owner_slot >= 0) clients.uncount_admission(owner_slot, c);
  int root_slot = root == this ? owner_slot : root->clients.find(owner_pid);
  if (root_slot >= 0) root->clients.refund(root_slot, pc.stride);
}

// ---- claim and free ---------------------------------------------------------------------

bool BufferPool::State::claim_descriptor(std::uint32_t c, std::uint32_t* index) noexcept {
  PoolClass& pc = cls(c);
  std::atomic<std::uint64_t>* bm = bitmap(c);
  const std::uint32_t words = (pc.count + 63) / 64;
  auto try_claim = [&](std::uint32_t i) {
    PoolDescriptor* d = desc(c, i);
    std::uint64_t st = d->state.load(std::memory_order_acquire);
    if (owner_of(st) != 0) return false;
    return d->state.compare_exchange_strong(st, make_state(pid, gen_of(st) + 1), std::memory_order_seq_cst);  // A2
  };
  // Fast: the hint bitmap, starting where this handle last found one.
  for (std::uint32_t k = 0; k < words; ++k) {
    std::uint32_t w = (cursor[c] + k) % words;
    std::uint64_t bits = bm[w].load(std::memory_order_acquire);
    while (bits) {
      std::uint32_t b = static_cast<std::uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      std::uint32_t i = w * 64 + b;
      if (i >= pc.count) break;
      bool got = try_claim(i);
      bm[w].fetch_and(~(std::uint64_t{1} << b), std::memory_order_acq_rel);  // claimed, or a stale hint
      if (got) {
        cursor[c] = w;
        *index = i;
        return true;
      }
    }
  }
  // Slow: the descriptors decide (finds buffers whose hint bit was lost).
  for (int pass = 0; pass < 3; ++pass)
    for (std::uint32_t i = 0; i < pc.count; ++i)
      if (try_claim(i)) {
        *index = i;
        return true;
      }
  return false;
}

AllocStatus BufferPool::State::claim_shared(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept {
  AllocStatus st = admit(c, priority);
  if (st != AllocStatus::ok) return st;
  if (!claim_descriptor(c, index)) {
    unadmit(c, pid, clients.mine());
    return AllocStatus::exhausted;
  }
  // SYNC POINT with shrink() S1/S2: A2 (seq_cst CAS on the descriptor), then
  // a seq_cst load of the entry word. Either shrink's descriptor scan sees
  // our claim, or we see "retiring" here and give the buffer back.
  if (ext_index != 0 && !root->extensions.admits(ext_index, ext_epoch)) {
    PoolDescriptor* d = desc(c, *index);
    std::uint64_t st = d->state.load(std::memory_order_acquire);
    if (d->state.compare_exchange_strong(st, make_state(0, gen_of(st)), std::memory_order_seq_cst))
      bitmap(c)[*index / 64].fetch_or(std::uint64_t{1} << (*index % 64), std::memory_order_acq_rel);
    unadmit(c, pid, clients.mine());
    return AllocStatus::exhausted;
  }
  root->check_pressure();
  return AllocStatus::ok;
}

void BufferPool::State::free_shared(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept {
  PoolDescriptor* d = desc(c, i);
  clients.begin_free(c, i, state, pid);  // D1
  d->meta.store(0, std::memory_order_relaxed);
  if (!d->state.compare_exchange_strong(state, make_state(0, gen_of(state)), std::memory_order_acq_rel)) {  // F1
    clients.end_op();
    return;  // somebody else freed or cached it
  }
  clients.end_op();  // D2: freed, no longer an orphan risk
  bitmap(c)[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_acq_rel);  // F2
  const std::uint32_t owner = owner_of(state);
  unadmit(c, owner, owner == pid ? clients.mine() : -1);  // F3
  // F4: SYNC POINT with the waiter's alloc_waiters++ before its re-check.
  if (root->header->alloc_waiters.load(std::memory_order_seq_cst) != 0) root->header->freed.notify();
  root->check_pressure();
}

void BufferPool::State::release_unreferenced(std::uint32_t c, std::uint32_t i, std::uint32_t gen) noexcept {
  if (c == kRegionClass) {
    region_free(i, 0, gen);
    return;
  }
  PoolDescriptor* d = desc(c, i);
  std::uint64_t st = d->state.load(std::memory_order_acquire);
  // Only the incarnation whose last reference we dropped: never a newer one.
  if (owner_of(st) == 0 || gen_of(st) != gen) return;
  PoolClass& pc = cls(c);
  auto& cache = caches[c];
  // Keep it in this handle's cache only while the class is less than half
  // used: cached buffers must not starve other processes.
  if (owner_of(st) == pid && cache.size() < header->cache_per_class &&
      pc.claimed.load(std::memory_order_relaxed) * 2 < pc.count) {
    const std::uint64_t next = make_state(pid, gen_of(st) + 1);
    // We own it: if we die from here on, reclaim(us) frees it as ours, so
    // the pending-free record must not also account for it.
    clients.end_op();
    // CAS from the exact incarnation: a reclaimer finishing a dead holder's
    // free (finish_dead_op) may race with us; exactly one wins.
    if (!d->state.compare_exchange_strong(st, next, std::memory_order_acq_rel)) return;
    d->meta.store(kCachedBit, std::memory_order_relaxed);
    cache.push_back(i);
    ++pending[c].cached;
    return;
  }
  free_shared(c, i, st);
}

// ---- the large region, with this pool's budgets and waiters ---------------------------------

AllocStatus BufferPool::State::region_alloc(std::size_t size, std::uint32_t* index) noexcept {
  const std::uint32_t n = region.run_for(size);
  if (n == 0) return AllocStatus::too_large;
  int slot = client_slot();
  if (slot < 0) return AllocStatus::no_client_slot;
  const PoolHeader* rh = header;
  // Called under the region lock at R1, once a run was found.
  auto admit_run = [&](std::uint64_t bytes) {
    std::uint64_t b = used_bytes() + bytes;
    std::uint64_t cb = clients.charge(slot, bytes);
    if ((rh->budget_bytes && b > rh->budget_bytes) || (rh->client_budget_bytes && cb > rh->client_budget_bytes)) {
      clients.refund(slot, bytes);
      return false;
    }
    return true;
  };
  return region.alloc(n, pid, admit_run, index);
}

// R4–R6: frees the run headed at i, if it is still incarnation `gen` (and, if
// only_owner != 0, owned by that pid).
void BufferPool::State::region_free(std::uint32_t i, std::uint32_t only_owner, std::uint32_t gen) noexcept {
  std::uint32_t owner = 0;
  std::uint64_t bytes = 0;
  if (!region.free(i, only_owner, gen, &owner, &bytes)) return;
  int slot = owner == pid && clients.mine() >= 0 ? clients.mine() : clients.find(owner);  // R6
  if (slot >= 0) clients.refund(slot, bytes);
  if (root->header->alloc_waiters.load(std::memory_order_seq_cst) != 0) root->header->freed.notify();
  root->check_pressure();
}

// ---- allocate -------------------------------------------------------------------------------

Allocation BufferPool::allocate(std::size_t size, Priority priority) noexcept {
  State& s = *s_;
  // Fast path: a buffer from this handle's cache (no shared write but the
  // buffer's own descriptor line). bench/pool_bench alloc_free_256B.
  if (s.pid == detail::self_pid()) {
    const std::uint32_t classes = s.header->class_count;
    std::uint32_t c = 0;
    while (c < classes && s.classes[c].buffer_size < size) ++c;
    if (c < classes && !s.caches[c].empty()) {
      std::uint32_t index = s.caches[c].back();
      s.caches[c].pop_back();
      --s.pending[c].cached;
      PoolDescriptor* d = s.desc(c, index);
      d->holders[0].store(s.pid, std::memory_order_relaxed);
      d->refword.store(make_refword(gen_of(d->state.load(std::memory_order_relaxed)), 1), std::memory_order_release);
      d->meta.store(static_cast<std::uint32_t>(std::min<std::size_t>(size, 0x7fffffff)), std::memory_order_relaxed);
      s.count_op(c, true, false);
      BufferHandle h{s.header->pool_id, static_cast<std::uint16_t>(c), 0, index,
                     gen_of(d->state.load(std::memory_order_relaxed))};
      Allocation out;
      out.buffer = Buffer(&s, h, s.data(c, index), s.classes[c].buffer_size);
      return out;
    }
  }
  const std::uint64_t deadline = s_->header->policy == static_cast<std::uint32_t>(ExhaustionPolicy::wait)
                                     ? detail::monotonic_ns() + s_->header->wait_timeout_ns
                                     : 0;
  return allocate_impl(size, priority, deadline);
}

Allocation BufferPool::allocate_for(std::size_t size, std::chrono::nanoseconds timeout, Priority priority) noexcept {
  return allocate_impl(size, priority, detail::deadline_after(timeout));
}

AllocStatus BufferPool::State::try_alloc(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept {
  auto& cache = caches[c];
  if (!cache.empty()) {  // the cache: only this buffer's own line is touched
    *index = cache.back();
    cache.pop_back();
    --pending[c].cached;
    return AllocStatus::ok;
  }
  return claim_shared(c, priority, index);
}

Allocation BufferPool::allocate_impl(std::size_t size, Priority priority, std::uint64_t deadline_ns) noexcept {
  State& s = *s_;
  s.ensure_process();
  const std::uint32_t classes = s.header->class_count;
  std::uint32_t c = 0;
  while (c < classes && s.classes[c].buffer_size < size) ++c;
  Allocation out;
  if (c == classes) {
    if (!s.region) {
      out.status = AllocStatus::too_large;
      return out;
    }
    std::uint32_t head = 0;
    AllocStatus st = s.region_alloc(size, &head);
    if (st == AllocStatus::exhausted && deadline_ns != 0 &&
        !s.header->freed.sleep_until(s.header->alloc_waiters, deadline_ns, detail::kNoDeadline, [&] {
          st = s.region_alloc(size, &head);
          return st != AllocStatus::exhausted;
        }))
      st = AllocStatus::timed_out;
    if (st != AllocStatus::ok) {
      s.region.shared().failures.fetch_add(1, std::memory_order_relaxed);
      out.status = st;
      return out;
    }
    PoolDescriptor* d = s.desc(kRegionClass, head);
    d->holders[0].store(s.pid, std::memory_order_relaxed);  // A3
    d->refword.store(make_refword(gen_of(d->state.load(std::memory_order_relaxed)), 1), std::memory_order_release);
    d->meta.store(static_cast<std::uint32_t>(std::min<std::size_t>(size, 0x7fffffff)), std::memory_order_relaxed);
    BufferHandle h{s.header->pool_id, kRegionClass, 0, head, gen_of(d->state.load(std::memory_order_relaxed))};
    out.buffer = Buffer(&s, h, s.data(kRegionClass, head), s.region.capacity(head));
    return out;
  }
  // Parts in order: the base pool, then active extensions; grow if allowed.
  State* part = &s;
  std::uint32_t index = 0;
  auto try_all = [&]() {
    part = &s;
    AllocStatus st = s.try_alloc(c, priority, &index);
    if (st != AllocStatus::exhausted) return st;
    for (std::uint16_t i = 1; i <= s.extensions.capacity(); ++i) {
      if (!s.extensions.active(i)) continue;
      State* p = s.part(i);
      if (!p) continue;
      AllocStatus pst = p->try_alloc(c, priority, &index);
      if (pst != AllocStatus::exhausted) {
        part = p;
        return pst;
      }
    }
    return AllocStatus::exhausted;
  };
  AllocStatus st = try_all();
  const bool grow = s.header->policy == static_cast<std::uint32_t>(ExhaustionPolicy::grow);
  // At most one growth per call: grow() may report room that another
  // process takes first; a wait policy (or the caller) retries.
  if (st == AllocStatus::exhausted && grow && s.extensions.grow(c, priority)) st = try_all();
  // Wait for a free. SYNC POINT: alloc_waiters++ before the re-check (W1 of
  // Event::sleep_until); free_shared() loads it after freeing (F4), in every part.
  if (st == AllocStatus::exhausted && deadline_ns != 0 &&
      !s.header->freed.sleep_until(s.header->alloc_waiters, deadline_ns, detail::kNoDeadline, [&] {
        st = try_all();
        return st != AllocStatus::exhausted;
      }))
    st = AllocStatus::timed_out;
  if (st != AllocStatus::ok) {
    s.count_op(c, true, true);
    out.status = st;
    return out;
  }
  PoolDescriptor* d = part->desc(c, index);
  d->holders[0].store(part->pid, std::memory_order_relaxed);  // A3
  d->refword.store(make_refword(gen_of(d->state.load(std::memory_order_relaxed)), 1), std::memory_order_release);
  d->meta.store(static_cast<std::uint32_t>(std::min<std::size_t>(size, 0x7fffffff)), std::memory_order_relaxed);
  std::uint64_t state = d->state.load(std::memory_order_relaxed);
  part->count_op(c, true, false);
  BufferHandle h{s.header->pool_id, static_cast<std::uint16_t>(c), part->ext_index, index, gen_of(state)};
  out.buffer = Buffer(part, h, part->data(c, index), part->classes[c].buffer_size);
  return out;
}

// ---- caches ------------------------------------------------------------------------------------

void BufferPool::State::flush() noexcept {
  if (detail::self_pid() != pid) return;  // a fork child: the caches are the parent's
  for (std::uint32_t c = 0; c < caches.size(); ++c) {
    for (std::uint32_t i : caches[c]) {
      PoolDescriptor* d = desc(c, i);
      std::uint64_t st = d->state.load(std::memory_order_acquire);
      if (owner_of(st) == pid) free_shared(c, i, st);
      --pending[c].cached;
    }
    caches[c].clear();
  }
  publish();
  extensions.publish();
}

void BufferPool::flush() noexcept {
  s_->flush();
  if (s_->header->max_extensions) s_->extensions.shrink();
}

}  // namespace ipc
