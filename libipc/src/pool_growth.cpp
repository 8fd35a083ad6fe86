// ExtensionTable: growth by extension segments, retire/shrink, the table
// lock's repair and part lookup. The protocol (G1–G4, S1–S3, L1–L3, M1–M3)
// is in pool_state.hpp above the class.
#include <sys/stat.h>

#include <cstdio>

#include "ipc/detail/process.hpp"
#include "ipc/pool.hpp"
#include "log.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

// ---- what the table asks of a part ----------------------------------------------------------

// G1: class c of this part can admit one more buffer of this priority.
bool BufferPool::State::has_room(std::uint32_t c, Priority priority) const noexcept {
  const PoolClass& pc = classes[c];
  const std::uint32_t limit = pc.count - (priority == Priority::normal ? pc.reserve : 0);
  return static_cast<std::int32_t>(pc.claimed.load(std::memory_order_acquire)) < static_cast<std::int32_t>(limit);
}

// S2: empty = no claimed counter and no owned descriptor. The descriptors
// decide (counters can drift, see recount()); read seq_cst after S1, the
// pair of the allocator's post-A2 re-check in claim_shared().
bool BufferPool::State::unused() const noexcept {
  for (std::uint32_t c = 0; c < header->class_count; ++c) {
    if (static_cast<std::int32_t>(classes[c].claimed.load(std::memory_order_seq_cst)) > 0) return false;
    for (std::uint32_t i = 0; i < classes[c].count; ++i)
      if (owner_of(desc(c, i)->state.load(std::memory_order_seq_cst)) != 0) return false;
  }
  return true;
}

namespace pool_detail {

ExtensionTable::~ExtensionTable() = default;

void ExtensionTable::attach(BufferPool::State* owner) {
  owner_ = owner;
  // How to build an extension: the same classes, no caches, no growth of its own.
  const PoolHeader* h = owner->header;
  config_.class_sizes.clear();
  for (std::uint32_t c = 0; c < h->class_count; ++c) config_.class_sizes.push_back(owner->classes[c].buffer_size);
  config_.buffers_per_class = h->buffers_per_class;
  config_.reserve_per_class = h->class_count ? owner->classes[0].reserve : 0;
  config_.cache_per_class = 0;
}

PoolHeader::Extension& ExtensionTable::entry(std::uint32_t i) const noexcept { return owner_->header->ext[i]; }

std::uint32_t ExtensionTable::capacity() const noexcept { return owner_->header->max_extensions; }

bool ExtensionTable::active(std::uint16_t i) const noexcept {
  return word_state(entry(i).word.load(std::memory_order_acquire)) == kExtActive;
}

bool ExtensionTable::admits(std::uint16_t i, std::uint32_t epoch) const noexcept {
  return entry(i).word.load(std::memory_order_seq_cst) == ext_word(epoch, kExtActive);
}

std::uint32_t ExtensionTable::active_count() const noexcept {
  std::uint32_t n = 0;
  for (std::uint32_t i = 1; i <= capacity(); ++i)
    n += word_state(entry(i).word.load(std::memory_order_relaxed)) == kExtActive;
  return n;
}

std::string ExtensionTable::segment_name(std::uint32_t i) const {
  char id[16];
  std::snprintf(id, sizeof id, "%08x", owner_->header->pool_id);
  return owner_->segment->name() + "-px" + id + "-" + std::to_string(i);
}

bool ExtensionTable::lock() noexcept {
  PoolHeader* header = owner_->header;
  LockResult r = header->ext_lock.lock();
  if (r == LockResult::owner_died) {  // L1
    // A grower or shrinker died mid-change: finish or undo its entry.
    for (std::uint32_t i = 1; i <= header->max_extensions; ++i) {
      auto& e = header->ext[i];
      std::uint64_t w = e.word.load(std::memory_order_relaxed);
      if (word_state(w) == kExtCreating) {  // L2: half-built: remove it
        try {
          Segment::unlink(segment_name(i), owner_->segment->domain());
        } catch (...) {
        }
        e.word.store(ext_word(word_epoch(w), kExtNone), std::memory_order_release);
      } else if (word_state(w) == kExtRetiring) {
        // L3: the shrinker died between S1 and S3. If its segment is still
        // there (S3 not reached; maybe S2 not checked), back to active — a
        // later shrink() re-checks. If it was already unlinked, finish: none.
        bool present = false;
        try {
          present =
              Segment::open(segment_name(i), {.read_only = true, .domain = owner_->segment->domain()}).generation() ==
              e.generation.load(std::memory_order_acquire);
        } catch (...) {
        }
        e.word.store(ext_word(word_epoch(w), present ? kExtActive : kExtNone), std::memory_order_release);
      }
    }
    header->ext_lock.mark_consistent();
    return true;
  }
  return r == LockResult::acquired;
}

BufferPool::State* ExtensionTable::install(std::unique_ptr<Mapped> m, std::uint16_t i, std::uint32_t epoch) {
  m->epoch = epoch;
  BufferPool::State& p = *m->part;
  p.segment = &m->segment;
  p.root = owner_;
  p.ext_index = i;
  p.ext_epoch = epoch;
  p.name = owner_->name;
  if (mapped_.size() <= i) mapped_.resize(capacity() + 1u);
  mapped_[i] = std::move(m);
  return &p;
}

BufferPool::State* ExtensionTable::part(std::uint16_t i) noexcept {
  if (i == 0) return owner_;
  if (i > capacity()) return nullptr;
  if (mapped_.size() <= i) mapped_.resize(capacity() + 1u);
  auto& e = entry(i);
  const std::uint64_t w = e.word.load(std::memory_order_acquire);  // M1
  if (mapped_[i] && (mapped_[i]->epoch != word_epoch(w) || word_state(w) == kExtNone)) {
    // M2: another incarnation: the one we mapped was retired, so nobody
    // holds a buffer in it (its claimed was 0 under the Dekker check of shrink()).
    mapped_[i].reset();
  }
  // M3: retiring is only a window in shrink() (S1–S2); it reverts to active
  // if anyone holds a buffer, so handles keep resolving. Allocation needs
  // active (checked again at admission).
  if (word_state(w) != kExtActive && word_state(w) != kExtRetiring) return nullptr;
  if (mapped_[i]) return mapped_[i]->part.get();
  const std::uint64_t gen = e.generation.load(std::memory_order_acquire);  // written before `w` went active
  try {
    auto m = std::make_unique<Mapped>(
        Mapped{Segment::open(segment_name(i), {.read_only = false, .domain = owner_->segment->domain()}), nullptr, 0});
    if (m->segment.generation() != gen) return nullptr;  // replaced meanwhile
    m->part = BufferPool::State::open(m->segment, "pool");
    return install(std::move(m), i, word_epoch(w));
  } catch (const std::exception& ex) {
    log::warn("pool '{}': cannot map extension {} ({}): {}", owner_->name, i, segment_name(i), ex.what());
    return nullptr;
  }
}

bool ExtensionTable::grow(std::uint32_t c, Priority priority) noexcept {
  PoolHeader* header = owner_->header;
  if (!lock()) return false;
  UnlockOnExit unlock{header->ext_lock};
  // G1: another process may have grown the pool while we waited for the lock.
  for (std::uint16_t i = 1; i <= header->max_extensions; ++i) {
    if (!active(i)) continue;
    BufferPool::State* p = part(i);
    if (p && p->has_room(c, priority)) return true;
  }
  std::uint16_t slot = 0;
  for (std::uint16_t i = 1; i <= header->max_extensions && !slot; ++i)
    if (word_state(header->ext[i].word.load(std::memory_order_acquire)) == kExtNone) slot = i;
  if (!slot) return false;
  auto& e = header->ext[slot];
  const std::uint32_t epoch = word_epoch(e.word.load(std::memory_order_relaxed)) + 1;
  e.word.store(ext_word(epoch, kExtCreating), std::memory_order_release);  // G2
  e.creator = owner_->pid;
  try {
    struct stat st {};
    std::string base_path = owner_->segment->info().path;
    SegmentOptions o;
    o.domain = owner_->segment->domain();
    o.directory_capacity = 4;
    o.size = align_up(BufferPool::bytes_needed(config_) + (64u << 10), 4096);
    if (::stat(base_path.c_str(), &st) == 0) {
      o.mode = st.st_mode & 07777;
      o.group = st.st_gid;
    }
    auto m = std::make_unique<Mapped>(Mapped{Segment::create(segment_name(slot), o), nullptr, 0});  // G3
    m->part = BufferPool::State::create(m->segment, "pool", config_);
    m->part->header->pool_id = header->pool_id;  // handles name the whole pool
    m->part->header->extension_index = slot;
    const std::uint64_t generation = m->segment.generation();
    install(std::move(m), slot, epoch);
    e.generation.store(generation, std::memory_order_release);
    e.empty_since_ns.store(0, std::memory_order_relaxed);
    e.word.store(ext_word(epoch, kExtActive), std::memory_order_release);  // G4
    log::info("pool '{}': grew by extension {} ({})", owner_->name, slot, segment_name(slot));
    return true;
  } catch (const std::exception& ex) {
    log::warn("pool '{}': cannot grow by extension {} ({}): {}", owner_->name, slot, segment_name(slot), ex.what());
    try {
      Segment::unlink(segment_name(slot), owner_->segment->domain());
    } catch (...) {
    }
    e.word.store(ext_word(epoch, kExtNone), std::memory_order_release);
    return false;
  }
}

std::uint32_t ExtensionTable::shrink() noexcept {
  PoolHeader* header = owner_->header;
  std::uint32_t released = 0;
  const std::uint64_t now = detail::monotonic_ns();
  for (std::uint16_t i = 1; i <= header->max_extensions; ++i) {
    auto& e = header->ext[i];
    BufferPool::State* p = part(i);  // also drops a stale mapping (M2)
    if (!p) continue;
    const std::uint64_t active_word = ext_word(p->ext_epoch, kExtActive);
    if (!p->unused()) {
      e.empty_since_ns.store(0, std::memory_order_relaxed);
      continue;
    }
    std::uint64_t since = e.empty_since_ns.load(std::memory_order_relaxed);
    if (since == 0) {
      e.empty_since_ns.compare_exchange_strong(since, now, std::memory_order_relaxed);
      if (header->shrink_delay_ns != 0) continue;
      since = now;
    }
    if (now - since < header->shrink_delay_ns) continue;
    if (!lock()) continue;
    std::uint64_t expected = active_word;
    if (e.word.compare_exchange_strong(expected, ext_word(p->ext_epoch, kExtRetiring),
                                       std::memory_order_seq_cst)) {  // S1
      if (!p->unused()) {                                             // S2
        e.word.store(active_word, std::memory_order_seq_cst);
      } else {
        mapped_[i].reset();
        try {
          Segment::unlink(segment_name(i), owner_->segment->domain());  // S3
        } catch (...) {
        }
        e.empty_since_ns.store(0, std::memory_order_relaxed);
        e.word.store(ext_word(word_epoch(active_word), kExtNone), std::memory_order_release);
        ++released;
        log::info("pool '{}': released empty extension {}", owner_->name, i);
      }
    }
    header->ext_lock.unlock();
  }
  return released;
}

void ExtensionTable::publish() noexcept {
  for (auto& m : mapped_)
    if (m) m->part->publish();
}

}  // namespace pool_detail

std::uint32_t BufferPool::extensions() const noexcept { return s_->extensions.active_count(); }

std::uint32_t BufferPool::shrink() noexcept { return s_->extensions.shrink(); }

}  // namespace ipc
