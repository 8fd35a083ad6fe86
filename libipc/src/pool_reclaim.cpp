// ClientTable (per-process client slots: J1–J5, D1–D2, K1–K5 in
// pool_state.hpp), reclaim of dead processes, and recount of the counters
// from the descriptors (pool.hpp "Accounting").
#include "ipc/detail/process.hpp"
#include "ipc/pool.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

namespace pool_detail {

void add_count(PidCounts& counts, std::uint32_t pid, std::uint64_t n) {
  for (auto& [p, b] : counts)
    if (p == pid) {
      b += n;
      return;
    }
  counts.emplace_back(pid, n);
}

// ---- ClientTable -----------------------------------------------------------------------

int ClientTable::find(std::uint32_t p) const noexcept {
  for (int i = 0; i < BufferPool::kMaxClients; ++i)
    if (slots_[i].pid.load(std::memory_order_acquire) == p) return i;
  return -1;
}

bool ClientTable::reap(int k, std::uint32_t p, Reclaim reclaim, std::uint32_t* freed) noexcept {
  const std::uint32_t owner = p & kClientPidMask;
  // A registrant has no buffers yet and no valid token: pid alone decides.
  const std::uint64_t tok = (p & kRegistering) ? 0 : slots_[k].token.load(std::memory_order_relaxed);
  if (detail::process_liveness(static_cast<pid_t>(owner), tok) != detail::Liveness::dead) return false;
  if (p & kRegistering)
    slots_[k].pid.compare_exchange_strong(p, 0, std::memory_order_acq_rel);
  else
    *freed += reclaim(owner);
  return true;
}

int ClientTable::join(std::uint32_t pid, Reclaim reclaim) noexcept {
  if (mine_ >= 0) return mine_;
  const std::uint64_t token = detail::self_token();
  std::uint32_t unused = 0;
  int i = find(pid);
  if (i >= 0) {  // J1
    if (slots_[i].token.load(std::memory_order_relaxed) == token) return mine_ = i;
    // My pid, another token: a dead predecessor (pid reuse) whose buffers go
    // back first — only once its token proves it dead, never for a live
    // namesake of another PID namespace (segments refuse those at open, but
    // an inherited mapping can reach one).
    reap(i, pid, reclaim, &unused);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (i = 0; i < BufferPool::kMaxClients; ++i) {
      std::uint32_t p = slots_[i].pid.load(std::memory_order_acquire);
      if (p != 0 && pass == 1 && reap(i, p, reclaim, &unused))  // J2
        p = slots_[i].pid.load(std::memory_order_acquire);
      if (p != 0) continue;
      // J3–J5: reserve the slot, fill it, then publish our pid: another
      // handle of this process must never see our pid with a missing token
      // (it would take us for a dead predecessor and reclaim us).
      if (slots_[i].pid.compare_exchange_strong(p, pid | kRegistering, std::memory_order_acq_rel)) {
        PoolClient& cl = slots_[i];
        cl.token.store(token, std::memory_order_relaxed);
        cl.bytes.store(0, std::memory_order_relaxed);
        for (auto& a : cl.admitted) a.store(0, std::memory_order_relaxed);
        cl.op_kind.store(kOpNone, std::memory_order_relaxed);
        cl.pid.store(pid, std::memory_order_release);
        return mine_ = i;
      }
    }
  }
  return -1;
}

std::uint32_t ClientTable::reap_dead(Reclaim reclaim) noexcept {
  std::uint32_t total = 0;
  for (int i = 0; i < BufferPool::kMaxClients; ++i) {
    std::uint32_t p = slots_[i].pid.load(std::memory_order_acquire);
    if (p != 0) reap(i, p, reclaim, &total);
  }
  return total;
}

int ClientTable::begin_reclaim(std::uint32_t dead) noexcept {
  int dead_slot = -1;
  for (int k = 0; k < BufferPool::kMaxClients && dead_slot < 0; ++k) {
    std::uint32_t p = slots_[k].pid.load(std::memory_order_acquire);
    if (p == dead && slots_[k].pid.compare_exchange_strong(p, dead | kReclaiming, std::memory_order_acq_rel))
      p = dead | kReclaiming;
    if (p == (dead | kReclaiming)) dead_slot = k;
  }
  return dead_slot;
}

bool ClientTable::take_pending_free(int k, PendingFree* out) noexcept {
  PoolClient& dead = slots_[k];
  if (dead.op_kind.load(std::memory_order_relaxed) != kOpFree) return false;
  out->c = dead.op_class.load(std::memory_order_relaxed);
  out->index = dead.op_index.load(std::memory_order_relaxed);
  out->state = dead.op_state.load(std::memory_order_relaxed);
  dead.op_kind.store(kOpNone, std::memory_order_relaxed);
  return true;
}

void ClientTable::end_reclaim(int k, std::uint32_t dead, const std::uint32_t* still_held, std::uint32_t classes,
                              detail::FunctionRef<void(std::uint32_t c, std::uint32_t leaked)> forget) noexcept {
  PoolClient& cl = slots_[k];
  for (std::uint32_t c = 0; c < classes; ++c) {  // K4
    std::uint32_t admitted = cl.admitted[c].load(std::memory_order_relaxed);
    if (admitted <= still_held[c]) continue;
    forget(c, admitted - still_held[c]);
  }
  for (auto& a : cl.admitted) a.store(0, std::memory_order_relaxed);
  cl.bytes.store(0, std::memory_order_relaxed);
  cl.token.store(0, std::memory_order_relaxed);
  std::uint32_t marked = dead | kReclaiming;
  cl.pid.compare_exchange_strong(marked, 0, std::memory_order_acq_rel);  // K5
}

void ClientTable::set_admitted(std::uint32_t c, const PidCounts& per_pid) noexcept {
  for (int k = 0; k < BufferPool::kMaxClients; ++k) {
    std::uint32_t p = slots_[k].pid.load(std::memory_order_acquire);
    std::uint64_t n = 0;
    for (auto& [q, cnt] : per_pid)
      if (q == p) n = cnt;
    slots_[k].admitted[c].store(p ? static_cast<std::uint32_t>(n) : 0, std::memory_order_relaxed);
  }
}

void ClientTable::set_bytes(const PidCounts& per_pid) noexcept {
  for (int k = 0; k < BufferPool::kMaxClients; ++k) {
    std::uint32_t p = slots_[k].pid.load(std::memory_order_acquire);
    std::uint64_t n = 0;
    for (auto& [q, b] : per_pid)
      if (q == p) n = b;
    slots_[k].bytes.store(p ? n : 0, std::memory_order_relaxed);
  }
}

void ClientTable::describe(std::vector<ClientStats>& out) const {
  for (int i = 0; i < BufferPool::kMaxClients; ++i) {
    std::uint32_t p = slots_[i].pid.load(std::memory_order_acquire);
    if (p == 0) continue;
    ClientStats cl;
    cl.pid = p & kClientPidMask;
    for (const auto& a : slots_[i].admitted) cl.buffers += a.load(std::memory_order_relaxed);
    cl.bytes = slots_[i].bytes.load(std::memory_order_relaxed);
    cl.alive = detail::process_liveness(static_cast<pid_t>(cl.pid), slots_[i].token.load(std::memory_order_relaxed)) !=
               detail::Liveness::dead;
    out.push_back(cl);
  }
}

}  // namespace pool_detail

// ---- State: registration and reclaim -------------------------------------------------------

int BufferPool::State::client_slot() noexcept {
  if (clients.mine() >= 0) return clients.mine();
  return clients.join(pid, [this](std::uint32_t dead) { return reclaim_everywhere(dead); });
}

std::uint32_t BufferPool::State::reclaim_everywhere(std::uint32_t dead) noexcept {
  std::uint32_t n = 0;
  if (root == this)
    for (std::uint16_t i = 1; i <= header->max_extensions; ++i)
      if (State* p = part(i)) n += p->reclaim(dead);
  return n + reclaim(dead);
}

// K2: a dead process that had dropped the last reference of a buffer but not
// freed it yet (kOpFree with the descriptor unchanged since) would leave the
// buffer orphaned: free it. Counters are recounted afterwards.
void BufferPool::State::finish_dead_op(int dead_slot) noexcept {
  ClientTable::PendingFree op;
  if (!clients.take_pending_free(dead_slot, &op)) return;
  const std::uint32_t c = op.c, i = op.index;
  const std::uint64_t before = op.state;
  const bool region_buffer = c == kRegionClass;
  if (!(region_buffer ? region && i < region.blocks() : c < header->class_count && i < classes[c].count)) return;
  PoolDescriptor* d = desc(c, i);
  std::uint64_t now = d->state.load(std::memory_order_acquire);
  if (now != before || !all_holders_zero(d) || (d->meta.load(std::memory_order_relaxed) & kCachedBit)) return;
  if (region_buffer) {
    region_free(i, owner_of(before), gen_of(before));
  } else if (d->state.compare_exchange_strong(now, make_state(0, gen_of(now)), std::memory_order_acq_rel)) {
    d->meta.store(0, std::memory_order_relaxed);
    bitmap(c)[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_acq_rel);
  }
}

std::uint32_t BufferPool::State::reclaim(std::uint32_t dead) noexcept {
  dead &= kClientPidMask;
  if (dead == 0) return 0;
  // K1: mark the dead client's slot as being reclaimed (the pid stays
  // visible), so that a new process cannot register into it meanwhile; a
  // reclaimer killed here leaves a slot the next reclaim(dead) finishes.
  // Everything below is idempotent (CASes from observed values), so two
  // reclaimers of one pid are safe.
  const int dead_slot = clients.begin_reclaim(dead);
  if (dead_slot >= 0) finish_dead_op(dead_slot);  // K2, first: it may free an orphaned buffer
  // K3
  std::uint32_t freed = 0;
  std::uint32_t still_held[kMaxClasses] = {};  // buffers the dead pid owns that others still hold
  for (std::uint32_t c = 0; c < header->class_count; ++c) {
    for (std::uint32_t i = 0; i < classes[c].count; ++i) {
      PoolDescriptor* d = desc(c, i);
      const bool was_last = drop_all_references(d, dead);
      std::uint64_t st = d->state.load(std::memory_order_acquire);
      const std::uint32_t owner = owner_of(st);
      if (owner == 0) continue;
      // Free when the dead pid owned it and nobody else holds it, or when it
      // held the last reference. (A buffer with no holders whose owner is
      // alive is between A2 and A3 of an allocation: leave it alone.)
      if ((owner == dead && all_holders_zero(d)) || was_last) {
        d->meta.store(0, std::memory_order_relaxed);
        if (d->state.compare_exchange_strong(st, make_state(0, gen_of(st)), std::memory_order_acq_rel)) {
          bitmap(c)[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_acq_rel);
          unadmit(c, owner, owner == dead ? dead_slot : -1);
          ++freed;
          continue;
        }
        st = d->state.load(std::memory_order_acquire);
      }
      if (owner_of(st) == dead) ++still_held[c];
    }
  }
  if (region) {
    for (std::uint32_t i = 0; i < region.blocks(); ++i) {
      PoolDescriptor* d = region.desc(i);
      const bool was_last = drop_all_references(d, dead);
      const std::uint64_t st = d->state.load(std::memory_order_acquire);
      const std::uint32_t owner = owner_of(st);
      if (owner != 0 && ((owner == dead && all_holders_zero(d)) || was_last)) {
        region_free(i, owner, gen_of(st));
        ++freed;
      }
    }
  }
  // K4–K5: admissions the dead client made that own no buffer any more:
  // those that died between A1 and A2. Subtract them, class by class, then
  // free its slot. (Buffers it owns that others still hold stay counted
  // until released.)
  if (dead_slot >= 0)
    clients.end_reclaim(dead_slot, dead, still_held, header->class_count, [&](std::uint32_t c, std::uint32_t leaked) {
      classes[c].claimed.fetch_sub(leaked, std::memory_order_acq_rel);
      root->header->claimed_bytes.fetch_sub(std::uint64_t{leaked} * classes[c].stride, std::memory_order_acq_rel);
    });
  if (freed) root->header->freed.notify();
  return freed;
}

// ---- recount -------------------------------------------------------------------------------

std::uint64_t BufferPool::State::recount_part(PidCounts& bytes) noexcept {
  std::uint64_t total = 0;
  for (std::uint32_t c = 0; c < header->class_count; ++c) {
    PoolClass& pc = classes[c];
    std::uint32_t owned = 0;
    PidCounts per_pid;
    for (std::uint32_t i = 0; i < pc.count; ++i) {
      std::uint32_t owner = owner_of(desc(c, i)->state.load(std::memory_order_acquire));
      if (owner == 0) continue;
      ++owned;
      add_count(per_pid, owner, 1);
      add_count(bytes, owner, pc.stride);
    }
    pc.claimed.store(owned, std::memory_order_release);
    total += std::uint64_t{owned} * pc.stride;
    clients.set_admitted(c, per_pid);
  }
  return total;
}

// Counters from the descriptors, which are authoritative. Exact when no
// allocation or free runs meanwhile; otherwise off by at most the operations
// in flight, which later frees/reclaims absorb (counters are read as signed).
void BufferPool::recount() noexcept {
  State& s = *s_;
  PidCounts bytes;
  std::uint64_t total = 0;
  for (std::uint16_t i = 0; i <= s.header->max_extensions; ++i)
    if (State* p = s.part(i)) total += p->recount_part(bytes);
  s.header->claimed_bytes.store(total, std::memory_order_release);
  if (s.region)
    for (std::uint32_t i = 0; i < s.region.blocks(); ++i) {
      PoolDescriptor* d = s.region.desc(i);
      std::uint32_t owner = owner_of(d->state.load(std::memory_order_acquire));
      if (owner) add_count(bytes, owner, std::uint64_t{d->run} * s.region.min_block());
    }
  s.clients.set_bytes(bytes);
}

std::uint32_t BufferPool::reclaim(std::uint32_t pid) noexcept {
  if (!detail::reclaim_allowed(pid, "pool", s_->name)) return 0;
  std::uint32_t n = s_->reclaim_everywhere(pid);
  recount();
  return n;
}

std::uint32_t BufferPool::reclaim_dead() noexcept {
  State& s = *s_;
  const std::uint32_t total = s.clients.reap_dead([&s](std::uint32_t dead) { return s.reclaim_everywhere(dead); });
  recount();
  return total;
}

std::vector<BufferHandle> BufferPool::held_by(std::uint32_t pid) const {
  std::vector<BufferHandle> out;
  for (std::uint16_t part = 0; part <= s_->header->max_extensions; ++part) {
    State* sp = s_->part(part);
    if (!sp) continue;
    State& s = *sp;
    for (std::uint32_t c = 0; c < s.header->class_count; ++c)
      for (std::uint32_t i = 0; i < s.classes[c].count; ++i) {
        PoolDescriptor* d = s.desc(c, i);
        std::uint64_t st = d->state.load(std::memory_order_acquire);
        if (owned_or_held(d, st, pid))
          out.push_back(BufferHandle{s.header->pool_id, static_cast<std::uint16_t>(c), part, i, gen_of(st)});
      }
  }
  if (s_->region)
    for (std::uint32_t i = 0; i < s_->region.blocks(); ++i) {
      PoolDescriptor* d = s_->region.desc(i);
      std::uint64_t st = d->state.load(std::memory_order_acquire);
      if (owned_or_held(d, st, pid)) out.push_back(BufferHandle{s_->header->pool_id, kRegionClass, 0, i, gen_of(st)});
    }
  return out;
}

}  // namespace ipc
