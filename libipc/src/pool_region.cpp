// LargeRegion: the large-buffer region of a pool (buddy / best fit). The
// protocol (R1–R7) is in pool_state.hpp above the class.
#include "ipc/pool.hpp"
#include "log.hpp"
#include "pool_state.hpp"

namespace ipc::pool_detail {

bool LargeRegion::lock() noexcept {
  LockResult r = r_->lock.lock();
  if (r == LockResult::owner_died) {  // R7
    rebuild();
    r_->lock.mark_consistent();
    return true;
  }
  return r == LockResult::acquired;
}

// R7: the heads are authoritative; the used bitmap and count are derived (lock held).
void LargeRegion::rebuild() noexcept {
  std::atomic<std::uint64_t>* used = used_bits();
  for (std::uint32_t w = 0; w < (r_->blocks + 63) / 64; ++w) used[w].store(0, std::memory_order_relaxed);
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < r_->blocks;) {
    PoolDescriptor* d = desc(i);
    std::uint32_t run = d->run;
    if (owner_of(d->state.load(std::memory_order_relaxed)) == 0 || run == 0 || run > r_->blocks - i) {
      ++i;
      continue;
    }
    for (std::uint32_t k = i; k < i + run; ++k)
      used[k / 64].fetch_or(std::uint64_t{1} << (k % 64), std::memory_order_relaxed);
    total += run;
    i += run;
  }
  r_->used_blocks.store(total, std::memory_order_relaxed);
  log::warn("pool '{}': a process died inside the large-region lock; rebuilt the region map ({} blocks in use)",
            name_ ? *name_ : std::string(), total);
}

namespace {
bool run_free(const std::atomic<std::uint64_t>* used, std::uint32_t start, std::uint32_t n) {
  for (std::uint32_t k = start; k < start + n; ++k)
    if (used[k / 64].load(std::memory_order_relaxed) & (std::uint64_t{1} << (k % 64))) return false;
  return true;
}
}  // namespace

std::uint32_t LargeRegion::run_for(std::size_t size) const noexcept {
  std::uint64_t n64 = (size + r_->min_block - 1) / r_->min_block;
  if (n64 == 0) n64 = 1;
  if (r_->strategy == static_cast<std::uint32_t>(LargeStrategy::buddy)) {  // round up to a power of two
    std::uint64_t p2 = 1;
    while (p2 < n64) p2 <<= 1;
    n64 = p2;
  }
  if (n64 > r_->blocks) return 0;
  return static_cast<std::uint32_t>(n64);
}

AllocStatus LargeRegion::alloc(std::uint32_t n, std::uint32_t owner, Admit admit, std::uint32_t* head) noexcept {
  const bool buddy = r_->strategy == static_cast<std::uint32_t>(LargeStrategy::buddy);
  if (!lock()) return AllocStatus::exhausted;
  UnlockOnExit unlock{r_->lock};
  const std::atomic<std::uint64_t>* used = used_bits();
  std::uint32_t found = UINT32_MAX;
  if (buddy) {
    for (std::uint32_t start = 0; start + n <= r_->blocks; start += n)  // R1: aligned 2^k runs
      if (run_free(used, start, n)) {
        found = start;
        break;
      }
  } else {
    std::uint32_t best_len = UINT32_MAX;  // R1: the smallest free gap that fits
    for (std::uint32_t i = 0; i < r_->blocks;) {
      if (!run_free(used, i, 1)) {
        ++i;
        continue;
      }
      std::uint32_t j = i;
      while (j < r_->blocks && run_free(used, j, 1)) ++j;
      if (j - i >= n && j - i < best_len) {
        best_len = j - i;
        found = i;
      }
      i = j;
    }
  }
  if (found == UINT32_MAX) return AllocStatus::exhausted;
  if (!admit(std::uint64_t{n} * r_->min_block)) return AllocStatus::over_budget;
  PoolDescriptor* d = desc(found);
  d->run = n;  // R2
  std::uint64_t st = d->state.load(std::memory_order_relaxed);
  d->state.store(make_state(owner, gen_of(st) + 1), std::memory_order_release);
  std::atomic<std::uint64_t>* bits = used_bits();
  for (std::uint32_t k = found; k < found + n; ++k)  // R3
    bits[k / 64].fetch_or(std::uint64_t{1} << (k % 64), std::memory_order_relaxed);
  std::uint32_t u = r_->used_blocks.fetch_add(n, std::memory_order_relaxed) + n;
  if (u > r_->peak_blocks.load(std::memory_order_relaxed)) r_->peak_blocks.store(u, std::memory_order_relaxed);
  r_->allocs.fetch_add(1, std::memory_order_relaxed);
  *head = found;
  return AllocStatus::ok;
}

bool LargeRegion::free(std::uint32_t i, std::uint32_t only_owner, std::uint32_t gen, std::uint32_t* owner_out,
                       std::uint64_t* bytes) noexcept {
  if (!lock()) return false;
  PoolDescriptor* d = desc(i);  // R4
  std::uint64_t st = d->state.load(std::memory_order_acquire);
  const std::uint32_t owner = owner_of(st);
  const std::uint32_t n = d->run;
  if (owner == 0 || gen_of(st) != gen || (only_owner && owner != only_owner) || n == 0 || n > r_->blocks - i) {
    r_->lock.unlock();
    return false;
  }
  std::atomic<std::uint64_t>* bits = used_bits();  // R5
  for (std::uint32_t k = i; k < i + n; ++k)
    bits[k / 64].fetch_and(~(std::uint64_t{1} << (k % 64)), std::memory_order_relaxed);
  d->meta.store(0, std::memory_order_relaxed);
  d->state.store(make_state(0, gen_of(st)), std::memory_order_release);
  r_->used_blocks.fetch_sub(n, std::memory_order_relaxed);
  r_->frees.fetch_add(1, std::memory_order_relaxed);
  r_->lock.unlock();
  *owner_out = owner;
  *bytes = std::uint64_t{n} * r_->min_block;
  return true;
}

}  // namespace ipc::pool_detail
