// BufferPool: statistics (per-handle pending counters published every
// kPublishEvery operations), pressure levels and pressure handlers.
#include <algorithm>

#include "ipc/error.hpp"
#include "ipc/pool.hpp"
#include "log.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

const char* to_string(PressureLevel l) noexcept {
  switch (l) {
    case PressureLevel::none: return "none";
    case PressureLevel::low: return "low";
    case PressureLevel::medium: return "medium";
    case PressureLevel::high: return "high";
    case PressureLevel::critical: return "critical";
  }
  return "unknown";
}

// ---- statistics ---------------------------------------------------------------------------

void BufferPool::State::publish() noexcept {
  ops = 0;
  for (std::uint32_t c = 0; c < pending.size(); ++c) {
    Pending& p = pending[c];
    PoolClass& pc = cls(c);
    if (p.allocs) pc.allocs.fetch_add(p.allocs, std::memory_order_relaxed);
    if (p.frees) pc.frees.fetch_add(p.frees, std::memory_order_relaxed);
    if (p.failures) pc.failures.fetch_add(p.failures, std::memory_order_relaxed);
    if (p.cached) pc.cached.fetch_add(p.cached, std::memory_order_relaxed);
    p = Pending{};
  }
}

PoolStats BufferPool::stats() const {
  State& s = *s_;
  PoolStats out;
  out.name = name_;
  out.pool_id = s.header->pool_id;
  out.capacity_bytes = s.header->capacity_bytes;
  out.claimed_bytes = s.used_bytes();
  out.pressure = pressure();
  std::uint64_t requested = 0, owned_bytes = 0;
  for (std::uint32_t c = 0; c < s.header->class_count; ++c) {
    PoolClass& pc = s.classes[c];
    ClassStats cs;
    cs.buffer_size = pc.buffer_size;
    cs.capacity = pc.count;
    cs.reserve = pc.reserve;
    cs.peak = pc.peak.load(std::memory_order_relaxed);
    cs.allocs = pc.allocs.load(std::memory_order_relaxed);
    cs.frees = pc.frees.load(std::memory_order_relaxed);
    cs.failures = pc.failures.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < pc.count; ++i) {
      PoolDescriptor* d = s.desc(c, i);
      if (owner_of(d->state.load(std::memory_order_relaxed)) == 0) continue;
      ++cs.in_use;
      std::uint32_t meta = d->meta.load(std::memory_order_relaxed);
      if (meta & kCachedBit) {
        ++cs.cached;
      } else {
        requested += meta;
        owned_bytes += pc.stride;
      }
    }
    out.classes.push_back(cs);
  }
  if (s.region) {  // the large region, as one more "class" of min-blocks
    const PoolRegion& r = s.region.shared();
    ClassStats cs;
    cs.buffer_size = r.min_block;
    cs.capacity = r.blocks;
    cs.in_use = r.used_blocks.load(std::memory_order_relaxed);
    cs.peak = r.peak_blocks.load(std::memory_order_relaxed);
    cs.allocs = r.allocs.load(std::memory_order_relaxed);
    cs.frees = r.frees.load(std::memory_order_relaxed);
    cs.failures = r.failures.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < r.blocks; ++i) {
      PoolDescriptor* d = s.region.desc(i);
      if (owner_of(d->state.load(std::memory_order_relaxed)) == 0) continue;
      requested += d->meta.load(std::memory_order_relaxed) & ~kCachedBit;
      owned_bytes += std::uint64_t{d->run} * r.min_block;
    }
    out.classes.push_back(cs);
  }
  out.fragmentation = owned_bytes ? 1.0 - static_cast<double>(requested) / static_cast<double>(owned_bytes) : 0.0;
  s.clients.describe(out.clients);
  return out;
}

// ---- pressure --------------------------------------------------------------------------------

PressureLevel BufferPool::State::level() const noexcept {
  const PoolHeader* h = header;
  double cap = static_cast<double>(h->budget_bytes ? h->budget_bytes : h->capacity_bytes);
  double used = static_cast<double>(used_bytes());
  double u = cap > 0 ? used / cap : 0;
  PressureLevel l = PressureLevel::none;
  for (int i = 0; i < 4; ++i)
    if (u >= kPressureThresholds[i]) l = static_cast<PressureLevel>(i + 1);
  return l;
}

PressureLevel BufferPool::pressure() const noexcept { return s_->level(); }

void BufferPool::State::update_pressure() noexcept {
  const PressureLevel now = level();
  if (now == seen) return;
  PressureLevel before = seen;
  seen = now;
  header->pressure.store(static_cast<std::uint32_t>(now), std::memory_order_relaxed);
  for (auto& [prio, fn] : handlers) {
    try {
      fn(now, before);
    } catch (const std::exception& e) {
      log::error("pool '{}': pressure handler (priority {}) threw: {}", name, prio, e.what());
    } catch (...) {
      log::error("pool '{}': pressure handler (priority {}) threw", name, prio);
    }
  }
}

void BufferPool::on_pressure(int priority, PressureHandler handler) {
  if (!handler) throw Error(ErrorCode::invalid_argument, "pool '" + name_ + "': on_pressure needs a handler");
  auto& hs = s_->handlers;
  hs.emplace_back(priority, std::move(handler));
  std::stable_sort(hs.begin(), hs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (hs.size() == 1) s_->seen = pressure();
}

}  // namespace ipc
