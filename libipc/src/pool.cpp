#include "ipc/pool.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <new>

#include <sys/stat.h>

#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"
#include "log.hpp"
#include "ipc/mutex.hpp"

namespace ipc {
namespace {

constexpr std::uint64_t kPoolMagic = 0x314c4f4f50435049ull;  // "IPCPOOL1"
constexpr std::uint32_t kPoolLayoutVersion = 1;
constexpr std::size_t kLine = 64;
constexpr std::uint32_t kCachedBit = 0x80000000u;
constexpr std::uint32_t kPublishEvery = 64;

std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }
std::uint32_t owner_of(std::uint64_t state) { return static_cast<std::uint32_t>(state >> 32); }
std::uint32_t gen_of(std::uint64_t state) { return static_cast<std::uint32_t>(state); }
std::uint64_t make_state(std::uint32_t owner, std::uint32_t gen) { return std::uint64_t{owner} << 32 | gen; }

}  // namespace

// ---- shared layout ------------------------------------------------------------

struct PoolHeader {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t pool_id;
  std::uint32_t class_count;
  std::uint32_t buffers_per_class;
  std::uint32_t cache_per_class;
  std::uint32_t policy;
  std::uint64_t wait_timeout_ns;
  std::uint64_t budget_bytes;
  std::uint64_t client_budget_bytes;
  std::uint64_t capacity_bytes;
  std::uint64_t total_bytes;
  std::uint64_t class_offset;
  std::uint64_t client_offset;
  std::uint32_t max_extensions;
  std::uint32_t extension_index;  // 0 in the base pool; i in extension i
  std::uint64_t region_offset;    // 0: no large region
  std::uint64_t shrink_delay_ns;
  alignas(kLine) std::atomic<std::uint64_t> claimed_bytes;  // base pool: bytes admitted in all parts
  std::atomic<std::uint32_t> pressure;
  alignas(kLine) std::atomic<std::uint32_t> alloc_waiters;  // allocators about to sleep on `freed`
  alignas(kLine) Event freed;
  // Growth (base pool only; see pool.hpp "Growth").
  Mutex ext_lock;
  struct Extension {
    // epoch << 32 | state, read and changed as one word: a reader never pairs
    // one incarnation's state with another's mapping. The epoch grows with
    // every creation of the entry.
    std::atomic<std::uint64_t> word;
    std::uint32_t creator;
    std::uint32_t pad;
    std::atomic<std::uint64_t> generation;  // of the extension segment (set before the word goes active)
    std::atomic<std::uint64_t> empty_since_ns;
  } ext[BufferPool::kMaxExtensions + 1];  // entry 0 unused
};
enum : std::uint32_t { kExtNone = 0, kExtCreating = 1, kExtActive = 2, kExtRetiring = 3 };
inline std::uint32_t word_state(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
inline std::uint32_t word_epoch(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
inline std::uint64_t ext_word(std::uint32_t epoch, std::uint32_t state) { return std::uint64_t{epoch} << 32 | state; }

struct PoolClass {
  std::uint64_t buffer_size;
  std::uint64_t stride;
  std::uint32_t count;
  std::uint32_t reserve;
  std::uint64_t desc_offset;
  std::uint64_t bitmap_offset;
  std::uint64_t data_offset;
  alignas(kLine) std::atomic<std::uint32_t> claimed;  // admissions (A1); == owned descriptors at rest
  std::atomic<std::uint32_t> peak;
  alignas(kLine) std::atomic<std::uint64_t> allocs;
  std::atomic<std::uint64_t> frees;
  std::atomic<std::uint64_t> failures;
  std::atomic<std::int64_t> cached;
};

struct alignas(kLine) PoolClient {
  std::atomic<std::uint32_t> pid;  // 0 = free
  std::uint32_t pad;
  std::atomic<std::uint64_t> token;
  std::atomic<std::uint64_t> bytes;                           // admitted bytes
  std::atomic<std::uint32_t> admitted[BufferPool::kMaxClasses];  // A1 admissions per class, not yet freed
  // The counter operation this process is in the middle of (plain stores to
  // its own slot; read by reclaim() only after the process died):
  // kind (none / admit / free), counter steps done, class, buffer index, and
  // for a free the descriptor word (owner | generation) it started from.
  std::atomic<std::uint32_t> op_kind;
  std::atomic<std::uint32_t> op_class;
  std::atomic<std::uint32_t> op_index;
  std::atomic<std::uint64_t> op_state;
};
// kOpFree: dropping a reference of descriptor (op_class, op_index) whose
// word was op_state; the buffer is not freed yet.
enum : std::uint32_t { kOpNone = 0, kOpFree = 1 };
// Client slot pid word: pid, or pid | kRegistering while that process fills
// the slot, or pid | kReclaiming while a reclaimer empties a dead pid's slot.
// The pid stays visible, so a slot whose registrant or reclaimer was killed
// is recognised (pid dead) and finished by the next pass. pids are < 2^22.
constexpr std::uint32_t kRegistering = 0x80000000u;
constexpr std::uint32_t kReclaiming = 0x40000000u;
constexpr std::uint32_t kClientPidMask = 0x3fffffffu;
static_assert(sizeof(PoolClient) == 192);

struct PoolDescriptor {
  std::atomic<std::uint64_t> state;  // owner pid << 32 | generation; owner 0 = free
  std::atomic<std::uint32_t> holders[BufferPool::kMaxHolders];
  std::atomic<std::uint32_t> meta;  // kCachedBit | requested bytes (31 bits)
  std::uint32_t run;                // large region: blocks in the run this head starts
  // generation << 32 | mask; mask bit k set: holders[k] is a counted
  // reference of incarnation `generation`. The last reference is the one
  // whose CAS takes the mask to 0 — one atomic decision, so two holders
  // releasing at once can never both (or neither) free the buffer. The
  // generation makes a retain on a stale handle fail instead of counting a
  // reference on the next incarnation. Slots: reserved (CAS 0 → id) before
  // their bit is set; on release marked `id | kDropping` (CAS) before the bit
  // is cleared, and CASed to 0 after — so neither a transfer nor a late
  // clear can touch a slot that a later owner has rewritten.
  std::atomic<std::uint64_t> refword;
};

struct PoolRegion {
  std::uint32_t strategy;  // LargeStrategy
  std::uint32_t blocks;
  std::uint64_t min_block;
  std::uint64_t desc_offset, used_offset, data_offset;
  Mutex lock;
  std::atomic<std::uint32_t> used_blocks;  // derived from the heads, under lock
  std::atomic<std::uint32_t> peak_blocks;
  std::atomic<std::uint64_t> allocs, frees, failures;
};
static_assert(sizeof(PoolDescriptor) == 64, "one descriptor per cache line");

// ---- the handle's state ----------------------------------------------------------

struct BufferPool::State {
  Segment* segment = nullptr;
  State* root = this;               // the base pool's state (budgets, waiters, extension table)
  std::uint16_t ext_index = 0;      // which part of the pool this is
  std::uint32_t ext_epoch = 0;      // an extension part: the incarnation of its table entry
  struct Ext {
    Segment segment;
    std::unique_ptr<State> part;
    std::uint32_t epoch = 0;
  };
  std::vector<std::unique_ptr<Ext>> exts;  // base only: index i = extension i (0 unused)
  PoolConfig ext_config;                   // base only: how to build an extension
  std::byte* base = nullptr;
  PoolHeader* header = nullptr;
  PoolClass* classes = nullptr;
  PoolClient* clients = nullptr;
  std::uint32_t pid = 0;
  int client = -1;
  std::vector<std::vector<std::uint32_t>> caches;
  std::vector<std::uint32_t> cursor;  // per class: where the bitmap search starts
  struct Pending {
    std::uint64_t allocs = 0, frees = 0, failures = 0;
    std::int64_t cached = 0;
  };
  std::vector<Pending> pending;
  std::uint32_t ops = 0;
  PressureLevel seen = PressureLevel::none;
  std::vector<std::pair<int, PressureHandler>> handlers;

  PoolClass& cls(std::uint32_t c) const { return classes[c]; }
  PoolRegion* region() const {
    return header->region_offset ? reinterpret_cast<PoolRegion*>(base + header->region_offset) : nullptr;
  }
  PoolDescriptor* desc(std::uint32_t c, std::uint32_t i) const {
    if (c == kRegionClass) return reinterpret_cast<PoolDescriptor*>(base + region()->desc_offset) + i;
    return reinterpret_cast<PoolDescriptor*>(base + classes[c].desc_offset) + i;
  }
  std::atomic<std::uint64_t>* bitmap(std::uint32_t c) const {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base + classes[c].bitmap_offset);
  }
  std::byte* data(std::uint32_t c, std::uint32_t i) const {
    if (c == kRegionClass) return base + region()->data_offset + std::uint64_t{i} * region()->min_block;
    return base + classes[c].data_offset + std::uint64_t{i} * classes[c].stride;
  }
  std::atomic<std::uint64_t>* used_bits() const {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base + region()->used_offset);
  }
  // Bytes in use in the whole pool: slab admissions + the region's used blocks.
  std::uint64_t used_bytes() const noexcept {
    auto b = static_cast<std::int64_t>(header->claimed_bytes.load(std::memory_order_acquire));
    if (b < 0) b = 0;  // transient drift below zero between recounts
    if (PoolRegion* r = region()) b += std::int64_t{r->used_blocks.load(std::memory_order_relaxed)} * static_cast<std::int64_t>(r->min_block);
    return static_cast<std::uint64_t>(b);
  }
  bool lock_region() noexcept;
  void rebuild_region() noexcept;
  AllocStatus region_alloc(std::size_t size, std::uint32_t* index) noexcept;
  void region_free(std::uint32_t i, std::uint32_t only_owner, std::uint32_t gen) noexcept;

  void ensure_process() noexcept;
  int find_client(std::uint32_t pid) const noexcept;
  int client_slot() noexcept;
  AllocStatus admit(std::uint32_t c, Priority priority) noexcept;
  void unadmit(std::uint32_t c, std::uint32_t owner_pid, int owner_slot) noexcept;
  void begin_free(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept;
  void end_op() noexcept;
  void finish_dead_op(PoolClient& dead) noexcept;
  // Sets this part's class `claimed` and its clients' admitted[] from the
  // descriptors; adds slab bytes per owner pid to `bytes`. Returns slab bytes.
  std::uint64_t recount_part(std::vector<std::pair<std::uint32_t, std::uint64_t>>& bytes) noexcept;
  bool claim_descriptor(std::uint32_t c, std::uint32_t* index) noexcept;
  AllocStatus claim_shared(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept;
  void free_shared(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept;
  void release_unreferenced(std::uint32_t c, std::uint32_t i, std::uint32_t gen) noexcept;
  HandleStatus drop(PoolDescriptor* d, const BufferHandle& h, std::uint32_t holder) noexcept;
  void release_own(const BufferHandle& h) noexcept;
  PoolDescriptor* check(const BufferHandle& h, HandleStatus* status) const noexcept;
  HandleStatus release(const BufferHandle& h, std::uint32_t holder) noexcept;
  void count_op(std::uint32_t c, bool alloc, bool failed) noexcept;
  void publish() noexcept;
  void check_pressure() noexcept;
  void flush() noexcept;
  std::uint32_t reclaim(std::uint32_t pid) noexcept;
  // On the base state: reclaim in every extension, then here (the base last:
  // it holds the client's byte count). On an extension: reclaim().
  std::uint32_t reclaim_everywhere(std::uint32_t pid) noexcept {
    std::uint32_t n = 0;
    if (root == this)
      for (std::uint16_t i = 1; i <= header->max_extensions; ++i)
        if (State* p = part(i)) n += p->reclaim(pid);
    return n + reclaim(pid);
  }
  // Growth (called on the base state).
  State* part(std::uint16_t index) noexcept;
  std::string ext_name(std::uint32_t i) const;
  bool grow(std::uint32_t c, Priority priority) noexcept;
  bool lock_extensions() noexcept;
  std::uint32_t shrink() noexcept;
  AllocStatus try_alloc(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept;
};

namespace {
constexpr std::uint32_t kDropping = 0x80000000u;  // holder slot: being released (pids are < 2^22)
std::uint32_t mask_of(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
std::uint64_t make_refword(std::uint32_t gen, std::uint32_t mask) { return std::uint64_t{gen} << 32 | mask; }

bool all_holders_zero(const PoolDescriptor* d) { return mask_of(d->refword.load(std::memory_order_acquire)) == 0; }

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

// Releases the counted reference in slot k held by `holder` (slot value
// holder or holder|kDropping): mark, clear the bit, free the slot. Returns
// true when it was the last reference. *dropped: a reference was released.
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

// Removes every reference `pid` holds on d; true if that left the buffer
// unreferenced. Also finishes the dead pid's half-done releases.
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

// Does `pid` own or hold the buffer whose descriptor word is `st`?
bool owned_or_held(const PoolDescriptor* d, std::uint64_t st, std::uint32_t pid) {
  if (owner_of(st) == 0) return false;
  bool held = owner_of(st) == pid;
  for (const auto& slot : d->holders) held |= slot.load(std::memory_order_relaxed) == pid;
  return held;
}
}  // namespace

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

// ---- creation ---------------------------------------------------------------------

namespace {

struct Layout {
  std::size_t class_offset, client_offset, total;
  std::size_t region_offset = 0, region_desc = 0, region_used = 0, region_data = 0, region_blocks = 0;
  std::vector<std::size_t> desc, bitmap, data, stride;
  std::uint64_t capacity = 0;
};

Layout layout_of(const PoolConfig& cfg) {
  Layout l;
  std::size_t off = align_up(sizeof(PoolHeader), kLine);
  l.class_offset = off;
  off += align_up(sizeof(PoolClass) * cfg.class_sizes.size(), kLine);
  l.client_offset = off;
  off += align_up(sizeof(PoolClient) * BufferPool::kMaxClients, kLine);
  for (std::size_t size : cfg.class_sizes) {
    std::size_t stride = align_up(size, kLine);
    l.stride.push_back(stride);
    l.desc.push_back(off);
    off += sizeof(PoolDescriptor) * cfg.buffers_per_class;
    l.bitmap.push_back(off);
    off += align_up((cfg.buffers_per_class + 63) / 64 * 8, kLine);
    l.data.push_back(off);
    off += stride * cfg.buffers_per_class;
    l.capacity += std::uint64_t{stride} * cfg.buffers_per_class;
  }
  if (cfg.large_strategy != LargeStrategy::none) {
    l.region_blocks = cfg.large_region_bytes / cfg.large_min_block;
    l.region_offset = off;
    off += align_up(sizeof(PoolRegion), kLine);
    l.region_desc = off;
    off += sizeof(PoolDescriptor) * l.region_blocks;
    l.region_used = off;
    off += align_up((l.region_blocks + 63) / 64 * 8, kLine);
    off = align_up(off, kLine);
    l.region_data = off;
    off += l.region_blocks * cfg.large_min_block;
    l.capacity += std::uint64_t{l.region_blocks} * cfg.large_min_block;
  }
  l.total = off;
  return l;
}

void validate(const PoolConfig& cfg, std::string_view name) {
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::invalid_argument, "pool '" + std::string(name) + "': " + why);
  };
  if (cfg.class_sizes.empty() && cfg.large_strategy == LargeStrategy::none)
    bad("class_sizes is empty; give at least one buffer size (or a large_strategy region)");
  if (cfg.large_strategy != LargeStrategy::none) {
    std::size_t mb = cfg.large_min_block;
    if (mb < 64 || (mb & (mb - 1)) != 0) bad("large_min_block must be a power of two >= 64");
    if (cfg.large_region_bytes < mb || cfg.large_region_bytes % mb != 0)
      bad("large_region_bytes must be a non-zero multiple of large_min_block (" + std::to_string(mb) + ")");
    if (cfg.large_region_bytes / mb > (1u << 24)) bad("the large region may hold at most 16777216 min-blocks");
    if (!cfg.class_sizes.empty() && cfg.large_region_bytes <= cfg.class_sizes.back())
      bad("large_region_bytes must exceed the largest slab class");
  }
  if (cfg.class_sizes.size() > BufferPool::kMaxClasses)
    bad("at most " + std::to_string(BufferPool::kMaxClasses) + " size classes");
  for (std::size_t i = 0; i < cfg.class_sizes.size(); ++i) {
    if (cfg.class_sizes[i] == 0) bad("class size 0 is not allowed");
    if (cfg.class_sizes[i] > (std::size_t{1} << 31) - 1) bad("class sizes must be < 2 GiB");
    if (i && cfg.class_sizes[i] <= cfg.class_sizes[i - 1]) bad("class_sizes must be strictly ascending");
  }
  if (cfg.buffers_per_class == 0 && !cfg.class_sizes.empty()) bad("buffers_per_class must be > 0");
  if (cfg.buffers_per_class > (1u << 24)) bad("buffers_per_class must be <= 16777216");
  if (!cfg.class_sizes.empty() && cfg.reserve_per_class >= cfg.buffers_per_class)
    bad("reserve_per_class (" + std::to_string(cfg.reserve_per_class) + ") must be smaller than buffers_per_class (" +
        std::to_string(cfg.buffers_per_class) + ")");
  if (cfg.cache_per_class > 1024) bad("cache_per_class must be <= 1024");
  if (cfg.policy == ExhaustionPolicy::grow && (cfg.max_extensions == 0 || cfg.max_extensions > BufferPool::kMaxExtensions))
    bad("ExhaustionPolicy::grow needs max_extensions in 1.." + std::to_string(BufferPool::kMaxExtensions));
}

}  // namespace

std::size_t BufferPool::bytes_needed(const PoolConfig& config) {
  validate(config, "?");
  return layout_of(config).total;
}

BufferPool::BufferPool(std::unique_ptr<State> s) noexcept : s_(std::move(s)) {}
BufferPool::BufferPool(BufferPool&& other) noexcept = default;
BufferPool& BufferPool::operator=(BufferPool&& other) noexcept {
  if (this != &other) {
    if (s_) s_->flush();
    s_ = std::move(other.s_);
    name_ = std::move(other.name_);
  }
  return *this;
}
BufferPool::~BufferPool() {
  if (s_) s_->flush();
}

namespace {
std::unique_ptr<BufferPool::State> attach(Segment& segment, void* data) {
  auto* h = static_cast<PoolHeader*>(data);
  auto s = std::make_unique<BufferPool::State>();
  s->segment = &segment;
  s->base = static_cast<std::byte*>(data);
  s->header = h;
  s->classes = reinterpret_cast<PoolClass*>(s->base + h->class_offset);
  s->clients = reinterpret_cast<PoolClient*>(s->base + h->client_offset);
  s->caches.resize(h->class_count);
  s->cursor.assign(h->class_count, 0);
  s->pending.resize(h->class_count);
  s->pid = detail::self_pid();
  s->ext_index = static_cast<std::uint16_t>(h->extension_index);
  // How to build an extension: the same classes, no caches, no growth of its own.
  s->ext_config.class_sizes.clear();
  for (std::uint32_t c = 0; c < h->class_count; ++c) s->ext_config.class_sizes.push_back(s->classes[c].buffer_size);
  s->ext_config.buffers_per_class = h->buffers_per_class;
  s->ext_config.reserve_per_class = h->class_count ? s->classes[0].reserve : 0;
  s->ext_config.cache_per_class = 0;
  return s;
}
}  // namespace

BufferPool BufferPool::create(Segment& segment, std::string_view name, const PoolConfig& config) {
  validate(config, name);
  if (config.policy == ExhaustionPolicy::grow && segment.name().size() + 16 > kMaxNameLength)
    throw Error(ErrorCode::invalid_argument, "pool '" + std::string(name) + "': segment name '" + segment.name() +
                                                 "' is too long to name extension segments after it (max " +
                                                 std::to_string(kMaxNameLength - 16) + " characters)");
  Layout l = layout_of(config);
  Object obj = segment.create_object(name, ObjectType::pool, l.total, [&](void* p, std::size_t) {
    auto* base = static_cast<std::byte*>(p);
    auto* h = new (p) PoolHeader{};
    h->layout_version = kPoolLayoutVersion;
    h->class_count = static_cast<std::uint32_t>(config.class_sizes.size());
    h->buffers_per_class = config.buffers_per_class;
    h->cache_per_class = config.cache_per_class;
    h->policy = static_cast<std::uint32_t>(config.policy);
    h->wait_timeout_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(config.wait_timeout).count());
    h->budget_bytes = config.budget_bytes;
    h->client_budget_bytes = config.client_budget_bytes;
    h->capacity_bytes = l.capacity;
    h->total_bytes = l.total;
    h->class_offset = l.class_offset;
    h->client_offset = l.client_offset;
    h->max_extensions = config.policy == ExhaustionPolicy::grow ? config.max_extensions : 0;
    h->shrink_delay_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(config.shrink_delay).count());
    for (std::size_t c = 0; c < config.class_sizes.size(); ++c) {
      auto* pc = new (base + l.class_offset + c * sizeof(PoolClass)) PoolClass{};
      pc->buffer_size = config.class_sizes[c];
      pc->stride = l.stride[c];
      pc->count = config.buffers_per_class;
      pc->reserve = config.reserve_per_class;
      pc->desc_offset = l.desc[c];
      pc->bitmap_offset = l.bitmap[c];
      pc->data_offset = l.data[c];
      auto* bm = reinterpret_cast<std::atomic<std::uint64_t>*>(base + l.bitmap[c]);
      for (std::uint32_t i = 0; i < config.buffers_per_class; ++i)
        bm[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_relaxed);
    }
    if (config.large_strategy != LargeStrategy::none) {
      h->region_offset = l.region_offset;
      auto* r = new (base + l.region_offset) PoolRegion{};
      r->strategy = static_cast<std::uint32_t>(config.large_strategy);
      r->blocks = static_cast<std::uint32_t>(l.region_blocks);
      r->min_block = config.large_min_block;
      r->desc_offset = l.region_desc;
      r->used_offset = l.region_used;
      r->data_offset = l.region_data;
    }
    // A random id: handles of another pool (or an earlier pool of the same
    // name) are refused as foreign. Never 0 (0 marks an empty handle).
    std::uint32_t id = 0;
    if (::getrandom(&id, sizeof id, 0) != sizeof id) id = static_cast<std::uint32_t>(detail::monotonic_ns());
    h->pool_id = id | 1u;
    // Published last: a zeroed magic means "not a pool (yet)".
    h->magic = kPoolMagic;
  });
  BufferPool pool(attach(segment, obj.data));
  pool.name_ = std::string(name);
  return pool;
}

BufferPool BufferPool::open(Segment& segment, std::string_view name) {
  Object obj = segment.open_object(name, ObjectType::pool);
  auto* h = static_cast<PoolHeader*>(obj.data);
  const std::string what = "pool '" + std::string(name) + "' in segment '" + segment.name() + "'";
  if (obj.info.size < sizeof(PoolHeader) || h->magic != kPoolMagic)
    throw Error(ErrorCode::bad_magic, what + " has no valid pool header (not initialised or corrupted)");
  if (h->layout_version != kPoolLayoutVersion)
    throw Error(ErrorCode::version_mismatch, what + " has pool layout version " + std::to_string(h->layout_version) +
                                                 ", this libipc reads " + std::to_string(kPoolLayoutVersion));
  if (h->total_bytes != obj.info.size || (h->class_count == 0 && h->region_offset == 0) ||
      h->class_count > kMaxClasses || h->region_offset >= h->total_bytes ||
      h->class_offset >= h->total_bytes || h->client_offset >= h->total_bytes)
    throw Error(ErrorCode::corrupted, what + ": header fields are inconsistent; re-create the pool");
  auto* classes = reinterpret_cast<PoolClass*>(static_cast<std::byte*>(obj.data) + h->class_offset);
  for (std::uint32_t c = 0; c < h->class_count; ++c) {
    const PoolClass& pc = classes[c];
    if (pc.data_offset + pc.stride * pc.count > h->total_bytes || pc.desc_offset >= h->total_bytes ||
        pc.bitmap_offset >= h->total_bytes)
      throw Error(ErrorCode::corrupted, what + ": size class " + std::to_string(c) + " lies outside the pool object");
  }
  if (h->region_offset) {
    auto* r = reinterpret_cast<PoolRegion*>(static_cast<std::byte*>(obj.data) + h->region_offset);
    if (r->min_block == 0 || r->data_offset + std::uint64_t{r->blocks} * r->min_block > h->total_bytes ||
        r->desc_offset + std::uint64_t{r->blocks} * sizeof(PoolDescriptor) > h->total_bytes)
      throw Error(ErrorCode::corrupted, what + ": the large region lies outside the pool object");
  }
  BufferPool pool(attach(segment, obj.data));
  pool.name_ = std::string(name);
  return pool;
}

// ---- clients ------------------------------------------------------------------------

void BufferPool::State::ensure_process() noexcept {
  std::uint32_t me = detail::self_pid();
  if (me == pid) return;
  // A fork child using its parent's handle: the cached buffers are the
  // parent's. Forget them (the parent still owns them) and start afresh.
  for (auto& c : caches) c.clear();
  pending.assign(pending.size(), Pending{});
  client = -1;
  pid = me;
}

int BufferPool::State::find_client(std::uint32_t p) const noexcept {
  for (int i = 0; i < kMaxClients; ++i)
    if (clients[i].pid.load(std::memory_order_acquire) == p) return i;
  return -1;
}

int BufferPool::State::client_slot() noexcept {
  if (client >= 0) return client;
  const std::uint64_t token = detail::self_token();
  int i = find_client(pid);
  if (i >= 0) {
    if (clients[i].token.load(std::memory_order_relaxed) == token) return client = i;
    reclaim_everywhere(pid);  // a dead predecessor with my pid: give its buffers back first
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (i = 0; i < kMaxClients; ++i) {
      std::uint32_t p = clients[i].pid.load(std::memory_order_acquire);
      if (p != 0 && pass == 1) {
        const std::uint32_t owner = p & kClientPidMask;
        // A registrant has no buffers yet and no valid token: pid alone decides.
        const std::uint64_t tok = (p & kRegistering) ? 0 : clients[i].token.load(std::memory_order_relaxed);
        if (detail::process_liveness(static_cast<pid_t>(owner), tok) == detail::Liveness::dead) {
          if (p & kRegistering)
            clients[i].pid.compare_exchange_strong(p, 0, std::memory_order_acq_rel);
          else
            reclaim_everywhere(owner);
          p = clients[i].pid.load(std::memory_order_acquire);
        }
      }
      if (p != 0) continue;
      // Reserve the slot, fill it, then publish our pid: another handle of
      // this process must never see our pid with a missing token (it would
      // take us for a dead predecessor and reclaim us).
      if (clients[i].pid.compare_exchange_strong(p, pid | kRegistering, std::memory_order_acq_rel)) {
        clients[i].token.store(token, std::memory_order_relaxed);
        clients[i].bytes.store(0, std::memory_order_relaxed);
        for (auto& a : clients[i].admitted) a.store(0, std::memory_order_relaxed);
        clients[i].op_kind.store(kOpNone, std::memory_order_relaxed);
        clients[i].pid.store(pid, std::memory_order_release);
        return client = i;
      }
    }
  }
  return -1;
}

// ---- claim and free ---------------------------------------------------------------------

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
  std::int64_t b = static_cast<std::int64_t>(root->header->claimed_bytes.fetch_add(pc.stride, std::memory_order_acq_rel) + pc.stride);
  if (PoolRegion* r = root->region()) b += std::int64_t{r->used_blocks.load(std::memory_order_relaxed)} * static_cast<std::int64_t>(r->min_block);
  const auto cb = static_cast<std::int64_t>(root->clients[root_slot].bytes.fetch_add(pc.stride, std::memory_order_relaxed) + pc.stride);
  clients[slot].admitted[c].fetch_add(1, std::memory_order_relaxed);
  const PoolHeader* rh = root->header;
  AllocStatus st = AllocStatus::ok;
  if (n > static_cast<std::int32_t>(limit))
    st = AllocStatus::exhausted;
  else if ((rh->budget_bytes && b > static_cast<std::int64_t>(rh->budget_bytes)) ||
           (rh->client_budget_bytes && cb > static_cast<std::int64_t>(rh->client_budget_bytes)))
    st = AllocStatus::over_budget;
  else if (ext_index != 0 && rh->ext[ext_index].word.load(std::memory_order_seq_cst) != ext_word(ext_epoch, kExtActive))
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
  if (owner_slot < 0) owner_slot = find_client(owner_pid);
  if (owner_slot >= 0) clients[owner_slot].admitted[c].fetch_sub(1, std::memory_order_relaxed);
  int root_slot = root == this ? owner_slot : root->find_client(owner_pid);
  if (root_slot >= 0) root->clients[root_slot].bytes.fetch_sub(pc.stride, std::memory_order_relaxed);
}

void BufferPool::State::begin_free(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept {
  if (client < 0 || owner_of(state) == pid) return;  // our own buffer: reclaim(us) covers it
  PoolClient& me = clients[client];
  me.op_class.store(c, std::memory_order_relaxed);
  me.op_index.store(i, std::memory_order_relaxed);
  me.op_state.store(state, std::memory_order_relaxed);
  me.op_kind.store(kOpFree, std::memory_order_relaxed);
}

void BufferPool::State::end_op() noexcept {
  if (client >= 0 && clients[client].op_kind.load(std::memory_order_relaxed) != kOpNone)
    clients[client].op_kind.store(kOpNone, std::memory_order_relaxed);
}

// reclaim(): a dead process that had dropped the last reference of a buffer
// but not freed it yet (kOpFree with the descriptor unchanged since) would
// leave the buffer orphaned: free it. Counters are recounted afterwards.
void BufferPool::State::finish_dead_op(PoolClient& dead) noexcept {
  if (dead.op_kind.load(std::memory_order_relaxed) != kOpFree) return;
  const std::uint32_t c = dead.op_class.load(std::memory_order_relaxed);
  const std::uint32_t i = dead.op_index.load(std::memory_order_relaxed);
  const std::uint64_t before = dead.op_state.load(std::memory_order_relaxed);
  dead.op_kind.store(kOpNone, std::memory_order_relaxed);
  const bool region_buffer = c == kRegionClass;
  if (!(region_buffer ? region() && i < region()->blocks : c < header->class_count && i < classes[c].count)) return;
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
    unadmit(c, pid, client);
    return AllocStatus::exhausted;
  }
  // SYNC POINT with shrink() S1/S2: A2 (seq_cst CAS on the descriptor), then
  // a seq_cst load of the entry word. Either shrink's descriptor scan sees
  // our claim, or we see "retiring" here and give the buffer back.
  if (ext_index != 0 &&
      root->header->ext[ext_index].word.load(std::memory_order_seq_cst) != ext_word(ext_epoch, kExtActive)) {
    PoolDescriptor* d = desc(c, *index);
    std::uint64_t st = d->state.load(std::memory_order_acquire);
    if (d->state.compare_exchange_strong(st, make_state(0, gen_of(st)), std::memory_order_seq_cst))
      bitmap(c)[*index / 64].fetch_or(std::uint64_t{1} << (*index % 64), std::memory_order_acq_rel);
    unadmit(c, pid, client);
    return AllocStatus::exhausted;
  }
  root->check_pressure();
  return AllocStatus::ok;
}

void BufferPool::State::free_shared(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept {
  PoolDescriptor* d = desc(c, i);
  begin_free(c, i, state);
  d->meta.store(0, std::memory_order_relaxed);
  if (!d->state.compare_exchange_strong(state, make_state(0, gen_of(state)), std::memory_order_acq_rel)) {  // F1
    end_op();
    return;  // somebody else freed or cached it
  }
  end_op();  // freed: no longer an orphan risk
  bitmap(c)[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_acq_rel);  // F2
  const std::uint32_t owner = owner_of(state);
  unadmit(c, owner, owner == pid ? client : -1);  // F3
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
    end_op();
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

// ---- the large region (buddy / best fit) --------------------------------------------------------

bool BufferPool::State::lock_region() noexcept {
  LockResult r = region()->lock.lock();
  if (r == LockResult::owner_died) {
    rebuild_region();
    region()->lock.mark_consistent();
    return true;
  }
  return r == LockResult::acquired;
}

// The heads are authoritative; the used bitmap and count are derived (lock held).
void BufferPool::State::rebuild_region() noexcept {
  PoolRegion* r = region();
  std::atomic<std::uint64_t>* used = used_bits();
  for (std::uint32_t w = 0; w < (r->blocks + 63) / 64; ++w) used[w].store(0, std::memory_order_relaxed);
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < r->blocks;) {
    PoolDescriptor* d = desc(kRegionClass, i);
    std::uint32_t run = d->run;
    if (owner_of(d->state.load(std::memory_order_relaxed)) == 0 || run == 0 || run > r->blocks - i) {
      ++i;
      continue;
    }
    for (std::uint32_t k = i; k < i + run; ++k) used[k / 64].fetch_or(std::uint64_t{1} << (k % 64), std::memory_order_relaxed);
    total += run;
    i += run;
  }
  r->used_blocks.store(total, std::memory_order_relaxed);
  log::warn("pool {}: a process died inside the large-region lock; rebuilt the region map ({} blocks in use)",
            header->pool_id, total);
}

namespace {
bool run_free(const std::atomic<std::uint64_t>* used, std::uint32_t start, std::uint32_t n) {
  for (std::uint32_t k = start; k < start + n; ++k)
    if (used[k / 64].load(std::memory_order_relaxed) & (std::uint64_t{1} << (k % 64))) return false;
  return true;
}
}  // namespace

AllocStatus BufferPool::State::region_alloc(std::size_t size, std::uint32_t* index) noexcept {
  PoolRegion* r = region();
  std::uint64_t n64 = (size + r->min_block - 1) / r->min_block;
  if (n64 == 0) n64 = 1;
  const bool buddy = r->strategy == static_cast<std::uint32_t>(LargeStrategy::buddy);
  if (buddy) {  // round up to a power of two
    std::uint64_t p2 = 1;
    while (p2 < n64) p2 <<= 1;
    n64 = p2;
  }
  if (n64 > r->blocks) return AllocStatus::too_large;
  const auto n = static_cast<std::uint32_t>(n64);
  int slot = client_slot();
  if (slot < 0) return AllocStatus::no_client_slot;
  if (!lock_region()) return AllocStatus::exhausted;
  struct Unlock {
    Mutex& m;
    ~Unlock() { m.unlock(); }
  } unlock{r->lock};
  const std::atomic<std::uint64_t>* used = used_bits();
  std::uint32_t found = UINT32_MAX;
  if (buddy) {
    for (std::uint32_t start = 0; start + n <= r->blocks; start += n)  // R1: aligned 2^k runs
      if (run_free(used, start, n)) {
        found = start;
        break;
      }
  } else {
    std::uint32_t best_len = UINT32_MAX;  // R1: the smallest free gap that fits
    for (std::uint32_t i = 0; i < r->blocks;) {
      if (!run_free(used, i, 1)) {
        ++i;
        continue;
      }
      std::uint32_t j = i;
      while (j < r->blocks && run_free(used, j, 1)) ++j;
      if (j - i >= n && j - i < best_len) {
        best_len = j - i;
        found = i;
      }
      i = j;
    }
  }
  if (found == UINT32_MAX) return AllocStatus::exhausted;
  const std::uint64_t bytes = std::uint64_t{n} * r->min_block;
  const PoolHeader* rh = header;
  std::uint64_t b = used_bytes() + bytes;
  std::uint64_t cb = clients[slot].bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if ((rh->budget_bytes && b > rh->budget_bytes) || (rh->client_budget_bytes && cb > rh->client_budget_bytes)) {
    clients[slot].bytes.fetch_sub(bytes, std::memory_order_relaxed);
    return AllocStatus::over_budget;
  }
  PoolDescriptor* d = desc(kRegionClass, found);
  d->run = n;  // R2
  std::uint64_t st = d->state.load(std::memory_order_relaxed);
  d->state.store(make_state(pid, gen_of(st) + 1), std::memory_order_release);
  std::atomic<std::uint64_t>* bits = used_bits();
  for (std::uint32_t k = found; k < found + n; ++k)  // R3
    bits[k / 64].fetch_or(std::uint64_t{1} << (k % 64), std::memory_order_relaxed);
  std::uint32_t u = r->used_blocks.fetch_add(n, std::memory_order_relaxed) + n;
  if (u > r->peak_blocks.load(std::memory_order_relaxed)) r->peak_blocks.store(u, std::memory_order_relaxed);
  r->allocs.fetch_add(1, std::memory_order_relaxed);
  *index = found;
  return AllocStatus::ok;
}

// Frees the run headed at i, if it is still incarnation `gen` (and, if
// only_owner != 0, owned by that pid).
void BufferPool::State::region_free(std::uint32_t i, std::uint32_t only_owner, std::uint32_t gen) noexcept {
  PoolRegion* r = region();
  if (!lock_region()) return;
  PoolDescriptor* d = desc(kRegionClass, i);
  std::uint64_t st = d->state.load(std::memory_order_acquire);
  const std::uint32_t owner = owner_of(st);
  const std::uint32_t n = d->run;
  if (owner == 0 || gen_of(st) != gen || (only_owner && owner != only_owner) || n == 0 || n > r->blocks - i) {
    r->lock.unlock();
    return;
  }
  std::atomic<std::uint64_t>* bits = used_bits();
  for (std::uint32_t k = i; k < i + n; ++k) bits[k / 64].fetch_and(~(std::uint64_t{1} << (k % 64)), std::memory_order_relaxed);
  d->meta.store(0, std::memory_order_relaxed);
  d->state.store(make_state(0, gen_of(st)), std::memory_order_release);
  r->used_blocks.fetch_sub(n, std::memory_order_relaxed);
  r->frees.fetch_add(1, std::memory_order_relaxed);
  r->lock.unlock();
  const std::uint64_t bytes = std::uint64_t{n} * r->min_block;
  int slot = owner == pid && client >= 0 ? client : find_client(owner);
  if (slot >= 0) clients[slot].bytes.fetch_sub(bytes, std::memory_order_relaxed);
  if (root->header->alloc_waiters.load(std::memory_order_seq_cst) != 0) root->header->freed.notify();
  root->check_pressure();
}

// ---- allocate -------------------------------------------------------------------------------

void BufferPool::State::count_op(std::uint32_t c, bool alloc, bool failed) noexcept {
  if (c >= pending.size()) return;  // the large region keeps its own counters
  Pending& p = pending[c];
  if (failed)
    ++p.failures;
  else if (alloc)
    ++p.allocs;
  else
    ++p.frees;
  if (++ops >= kPublishEvery) publish();
}

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
    if (!s.region()) {
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
      s.region()->failures.fetch_add(1, std::memory_order_relaxed);
      out.status = st;
      return out;
    }
    PoolDescriptor* d = s.desc(kRegionClass, head);
    d->holders[0].store(s.pid, std::memory_order_relaxed);  // A3
    d->refword.store(make_refword(gen_of(d->state.load(std::memory_order_relaxed)), 1), std::memory_order_release);
    d->meta.store(static_cast<std::uint32_t>(std::min<std::size_t>(size, 0x7fffffff)), std::memory_order_relaxed);
    BufferHandle h{s.header->pool_id, kRegionClass, 0, head, gen_of(d->state.load(std::memory_order_relaxed))};
    out.buffer = Buffer(&s, h, s.data(kRegionClass, head), std::size_t{d->run} * s.region()->min_block);
    return out;
  }
  // Parts in order: the base pool, then active extensions; grow if allowed.
  State* part = &s;
  std::uint32_t index = 0;
  auto try_all = [&]() {
    part = &s;
    AllocStatus st = s.try_alloc(c, priority, &index);
    if (st != AllocStatus::exhausted) return st;
    for (std::uint16_t i = 1; i <= s.header->max_extensions; ++i) {
      if (word_state(s.header->ext[i].word.load(std::memory_order_acquire)) != kExtActive) continue;
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
  if (st == AllocStatus::exhausted && grow && s.grow(c, priority)) st = try_all();
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

// ---- growth ---------------------------------------------------------------------------------

std::string BufferPool::State::ext_name(std::uint32_t i) const {
  char id[16];
  std::snprintf(id, sizeof id, "%08x", header->pool_id);
  return segment->name() + "-px" + id + "-" + std::to_string(i);
}

bool BufferPool::State::lock_extensions() noexcept {
  LockResult r = header->ext_lock.lock();
  if (r == LockResult::owner_died) {
    // A grower or shrinker died mid-change: finish or undo its entry.
    for (std::uint32_t i = 1; i <= header->max_extensions; ++i) {
      auto& e = header->ext[i];
      std::uint64_t w = e.word.load(std::memory_order_relaxed);
      if (word_state(w) == kExtCreating) {  // half-built: remove it
        try {
          Segment::unlink(ext_name(i), segment->domain());
        } catch (...) {
        }
        e.word.store(ext_word(word_epoch(w), kExtNone), std::memory_order_release);
      } else if (word_state(w) == kExtRetiring) {
        // The shrinker died between S1 and S3. If its segment is still there
        // (S3 not reached; maybe S2 not checked), back to active — a later
        // shrink() re-checks. If it was already unlinked, finish: none.
        bool present = false;
        try {
          present = Segment::open(ext_name(i), {.read_only = true, .domain = segment->domain()}).generation() ==
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

BufferPool::State* BufferPool::State::part(std::uint16_t i) noexcept {
  if (i == 0) return this;
  if (i > header->max_extensions) return nullptr;
  if (exts.size() <= i) exts.resize(header->max_extensions + 1u);
  auto& e = header->ext[i];
  const std::uint64_t w = e.word.load(std::memory_order_acquire);
  if (exts[i] && (exts[i]->epoch != word_epoch(w) || word_state(w) == kExtNone)) {
    // Another incarnation: the one we mapped was retired, so nobody holds a
    // buffer in it (its claimed was 0 under the Dekker check of shrink()).
    exts[i].reset();
  }
  // Retiring is only a window in shrink() (S1–S2); it reverts to active if
  // anyone holds a buffer, so handles keep resolving. Allocation needs active
  // (checked again at admission).
  if (word_state(w) != kExtActive && word_state(w) != kExtRetiring) return nullptr;
  if (exts[i]) return exts[i]->part.get();
  const std::uint64_t gen = e.generation.load(std::memory_order_acquire);  // written before `w` went active
  try {
    auto ext = std::make_unique<Ext>(Ext{Segment::open(ext_name(i), {.read_only = false, .domain = segment->domain()}),
                                         nullptr, word_epoch(w)});
    if (ext->segment.generation() != gen) return nullptr;  // replaced meanwhile
    BufferPool opened = BufferPool::open(ext->segment, "pool");
    ext->part = std::move(opened.s_);
    ext->part->segment = &ext->segment;
    ext->part->root = this;
    ext->part->ext_index = i;
    ext->part->ext_epoch = word_epoch(w);
    exts[i] = std::move(ext);
    return exts[i]->part.get();
  } catch (const std::exception& ex) {
    log::warn("pool: cannot map extension {} ({}): {}", i, ext_name(i), ex.what());
    return nullptr;
  }
}

bool BufferPool::State::grow(std::uint32_t c, Priority priority) noexcept {
  if (!lock_extensions()) return false;
  struct Unlock {
    Mutex& m;
    ~Unlock() { m.unlock(); }
  } unlock{header->ext_lock};
  // G1: another process may have grown the pool while we waited for the lock.
  for (std::uint16_t i = 1; i <= header->max_extensions; ++i) {
    if (word_state(header->ext[i].word.load(std::memory_order_acquire)) != kExtActive) continue;
    State* p = part(i);
    if (!p) continue;
    const PoolClass& pc = p->classes[c];
    const std::uint32_t limit = pc.count - (priority == Priority::normal ? pc.reserve : 0);
    if (static_cast<std::int32_t>(pc.claimed.load(std::memory_order_acquire)) < static_cast<std::int32_t>(limit))
      return true;
  }
  std::uint16_t slot = 0;
  for (std::uint16_t i = 1; i <= header->max_extensions && !slot; ++i)
    if (word_state(header->ext[i].word.load(std::memory_order_acquire)) == kExtNone) slot = i;
  if (!slot) return false;
  auto& e = header->ext[slot];
  const std::uint32_t epoch = word_epoch(e.word.load(std::memory_order_relaxed)) + 1;
  e.word.store(ext_word(epoch, kExtCreating), std::memory_order_release);  // G2
  e.creator = pid;
  try {
    struct stat st{};
    std::string base_path = segment->info().path;
    SegmentOptions o;
    o.domain = segment->domain();
    o.directory_capacity = 4;
    o.size = align_up(BufferPool::bytes_needed(ext_config) + (64u << 10), 4096);
    if (::stat(base_path.c_str(), &st) == 0) {
      o.mode = st.st_mode & 07777;
      o.group = st.st_gid;
    }
    auto ext = std::make_unique<Ext>(Ext{Segment::create(ext_name(slot), o), nullptr, 0});  // G3
    BufferPool made = BufferPool::create(ext->segment, "pool", ext_config);
    made.s_->header->pool_id = header->pool_id;  // handles name the whole pool
    made.s_->header->extension_index = slot;
    ext->epoch = epoch;
    ext->part = std::move(made.s_);
    ext->part->segment = &ext->segment;
    ext->part->root = this;
    ext->part->ext_index = slot;
    ext->part->ext_epoch = epoch;
    e.generation.store(ext->segment.generation(), std::memory_order_release);
    e.empty_since_ns.store(0, std::memory_order_relaxed);
    e.word.store(ext_word(epoch, kExtActive), std::memory_order_release);  // G4
    if (exts.size() <= slot) exts.resize(header->max_extensions + 1u);
    exts[slot] = std::move(ext);
    log::info("pool {}: grew by extension {} ({})", header->pool_id, slot, ext_name(slot));
    return true;
  } catch (const std::exception& ex) {
    log::warn("pool: cannot grow by extension {} ({}): {}", slot, ext_name(slot), ex.what());
    try {
      Segment::unlink(ext_name(slot), segment->domain());
    } catch (...) {
    }
    e.word.store(ext_word(epoch, kExtNone), std::memory_order_release);
    return false;
  }
}

std::uint32_t BufferPool::State::shrink() noexcept {
  std::uint32_t released = 0;
  const std::uint64_t now = detail::monotonic_ns();
  for (std::uint16_t i = 1; i <= header->max_extensions; ++i) {
    auto& e = header->ext[i];
    State* p = part(i);  // also drops a stale mapping
    if (!p) continue;
    const std::uint64_t active = ext_word(p->ext_epoch, kExtActive);
    // Empty = no claimed counter and no owned descriptor. The descriptors
    // decide (counters can drift, see recount()); S2 reads them seq_cst after
    // S1, the pair of the allocator's post-A2 re-check in claim_shared().
    auto empty = [&] {
      for (std::uint32_t c = 0; c < p->header->class_count; ++c) {
        if (static_cast<std::int32_t>(p->classes[c].claimed.load(std::memory_order_seq_cst)) > 0) return false;
        for (std::uint32_t i = 0; i < p->classes[c].count; ++i)
          if (owner_of(p->desc(c, i)->state.load(std::memory_order_seq_cst)) != 0) return false;
      }
      return true;
    };
    if (!empty()) {
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
    if (!lock_extensions()) continue;
    std::uint64_t expected = active;
    if (e.word.compare_exchange_strong(expected, ext_word(p->ext_epoch, kExtRetiring), std::memory_order_seq_cst)) {  // S1
      if (!empty()) {                                                                                                // S2
        e.word.store(active, std::memory_order_seq_cst);
      } else {
        exts[i].reset();
        try {
          Segment::unlink(ext_name(i), segment->domain());  // S3
        } catch (...) {
        }
        e.empty_since_ns.store(0, std::memory_order_relaxed);
        e.word.store(ext_word(word_epoch(active), kExtNone), std::memory_order_release);
        ++released;
        log::info("pool {}: released empty extension {}", header->pool_id, i);
      }
    }
    header->ext_lock.unlock();
  }
  return released;
}

std::uint32_t BufferPool::extensions() const noexcept {
  std::uint32_t n = 0;
  for (std::uint32_t i = 1; i <= s_->header->max_extensions; ++i)
    n += word_state(s_->header->ext[i].word.load(std::memory_order_relaxed)) == kExtActive;
  return n;
}

std::uint32_t BufferPool::shrink() noexcept { return s_->shrink(); }

// ---- handles ------------------------------------------------------------------------------------

PoolDescriptor* BufferPool::State::check(const BufferHandle& h, HandleStatus* status) const noexcept {
  auto fail = [&](HandleStatus st) -> PoolDescriptor* {
    if (status) *status = st;
    return nullptr;
  };
  if (h.pool_id != header->pool_id || h.extension != ext_index) return fail(HandleStatus::foreign_pool);
  if (h.size_class == kRegionClass) {
    if (!region()) return fail(HandleStatus::bad_class);
    if (h.index >= region()->blocks) return fail(HandleStatus::bad_index);
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

void BufferPool::prefetch(const BufferHandle& h) const noexcept {
  if (h.pool_id != s_->header->pool_id || h.extension != 0) return;  // base pool only: no mapping on this path
  const State& s = *s_;
  if (h.size_class == kRegionClass) {
    const PoolRegion* r = s.region();
    if (!r || h.index >= r->blocks) return;
  } else if (h.size_class >= s.header->class_count || h.index >= s.classes[h.size_class].count) {
    return;
  }
  __builtin_prefetch(s.desc(h.size_class, h.index), 1);  // adopt/release CAS it: ask for ownership
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
  for (int k = 0; k < kMaxHolders; ++k) {
    std::uint32_t zero = 0;
    auto& slot = d->holders[k];
    if (slot.load(std::memory_order_relaxed) != 0 || !slot.compare_exchange_strong(zero, holder, std::memory_order_acq_rel))
      continue;
    // Slot reserved; now count it — only while this incarnation is still
    // referenced (the generation in the word rules out the next one).
    std::uint64_t w = d->refword.load(std::memory_order_acquire);
    while (static_cast<std::uint32_t>(w >> 32) == h.generation && mask_of(w) != 0 && !(mask_of(w) & (1u << k)))
      if (d->refword.compare_exchange_weak(w, w | (std::uint64_t{1} << k), std::memory_order_acq_rel))
        return HandleStatus::ok;
    std::uint32_t mine = holder;
    slot.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);  // never clobber a newer owner's slot
    return HandleStatus::stale;  // the last reference went away meanwhile
  }
  return HandleStatus::too_many_holders;
}

BufferPool::HandleStatus BufferPool::State::drop(PoolDescriptor* d, const BufferHandle& h,
                                                 std::uint32_t holder) noexcept {
  // A death after our reference is dropped and before the buffer is freed
  // would orphan it — unless we own it (reclaim of the owner frees it):
  // record the pending free first (see finish_dead_op).
  const std::uint64_t word = d->state.load(std::memory_order_acquire);
  if (owner_of(word) != pid) {
    if (client < 0) client_slot();
    begin_free(h.size_class, h.index, word);
  }
  for (int k = 0; k < kMaxHolders; ++k) {
    if (d->holders[k].load(std::memory_order_acquire) != holder) continue;
    bool dropped = false;
    const bool last = release_slot(d, k, holder, false, &dropped);  // the one atomic decision
    if (!dropped) continue;  // not a counted reference of ours after all
    if (last) release_unreferenced(h.size_class, h.index, h.generation);
    end_op();
    count_op(h.size_class, false, false);
    return HandleStatus::ok;
  }
  end_op();
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

std::optional<Buffer> BufferPool::adopt(const BufferHandle& h, std::uint32_t from_holder, HandleStatus* status) noexcept {
  s_->ensure_process();
  State* p = s_->part(h.extension);
  if (!p) {
    if (status) *status = HandleStatus::foreign_pool;
    return std::nullopt;
  }
  State& s = *p;
  s.ensure_process();
  HandleStatus st = s.client_slot() < 0 ? HandleStatus::too_many_holders : transfer(h, from_holder, s.pid);
  if (status) *status = st;
  if (st != HandleStatus::ok) return std::nullopt;
  std::size_t capacity = h.size_class == kRegionClass ? std::size_t{s.desc(kRegionClass, h.index)->run} * s.region()->min_block
                                                      : s.classes[h.size_class].buffer_size;
  return Buffer(&s, h, s.data(h.size_class, h.index), capacity);
}

std::uint32_t BufferPool::holders(const BufferHandle& h) const noexcept {
  State* p = s_->part(h.extension);
  if (!p) return 0;
  PoolDescriptor* d = p->check(h, nullptr);
  if (!d) return 0;
  return static_cast<std::uint32_t>(__builtin_popcount(mask_of(d->refword.load(std::memory_order_acquire))));
}

// ---- reclaim ----------------------------------------------------------------------------------------

std::uint32_t BufferPool::State::reclaim(std::uint32_t dead) noexcept {
  dead &= kClientPidMask;
  if (dead == 0) return 0;
  // Mark the dead client's slot as being reclaimed (the pid stays visible),
  // so that a new process cannot register into it meanwhile; a reclaimer
  // killed here leaves a slot the next reclaim(dead) finishes. Everything
  // below is idempotent (CASes from observed values), so two reclaimers of
  // one pid are safe.
  int dead_slot = -1;
  for (int k = 0; k < kMaxClients && dead_slot < 0; ++k) {
    std::uint32_t p = clients[k].pid.load(std::memory_order_acquire);
    if (p == dead && clients[k].pid.compare_exchange_strong(p, dead | kReclaiming, std::memory_order_acq_rel)) p = dead | kReclaiming;
    if (p == (dead | kReclaiming)) dead_slot = k;
  }
  if (dead_slot >= 0) finish_dead_op(clients[dead_slot]);  // first: it may free an orphaned buffer
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
  if (PoolRegion* r = region()) {
    for (std::uint32_t i = 0; i < r->blocks; ++i) {
      PoolDescriptor* d = desc(kRegionClass, i);
      const bool was_last = drop_all_references(d, dead);
      const std::uint64_t st = d->state.load(std::memory_order_acquire);
      const std::uint32_t owner = owner_of(st);
      if (owner != 0 && ((owner == dead && all_holders_zero(d)) || was_last)) {
        region_free(i, owner, gen_of(st));
        ++freed;
      }
    }
  }
  // Admissions the dead client made that own no buffer any more: those that
  // died between A1 and A2. Subtract them, class by class, then free its slot.
  // (Buffers it owns that others still hold stay counted until released.)
  if (dead_slot >= 0) {
    PoolClient& cl = clients[dead_slot];
    for (std::uint32_t c = 0; c < header->class_count; ++c) {
      std::uint32_t admitted = cl.admitted[c].load(std::memory_order_relaxed);
      if (admitted <= still_held[c]) continue;
      std::uint32_t leaked = admitted - still_held[c];
      classes[c].claimed.fetch_sub(leaked, std::memory_order_acq_rel);
      root->header->claimed_bytes.fetch_sub(std::uint64_t{leaked} * classes[c].stride, std::memory_order_acq_rel);
    }
    for (auto& a : cl.admitted) a.store(0, std::memory_order_relaxed);
    cl.bytes.store(0, std::memory_order_relaxed);
    cl.token.store(0, std::memory_order_relaxed);
    std::uint32_t marked = dead | kReclaiming;
    cl.pid.compare_exchange_strong(marked, 0, std::memory_order_acq_rel);
  }
  if (freed) root->header->freed.notify();
  return freed;
}

namespace {
void add_bytes(std::vector<std::pair<std::uint32_t, std::uint64_t>>& bytes, std::uint32_t pid, std::uint64_t n) {
  for (auto& [p, b] : bytes)
    if (p == pid) {
      b += n;
      return;
    }
  bytes.emplace_back(pid, n);
}
}  // namespace

std::uint64_t BufferPool::State::recount_part(std::vector<std::pair<std::uint32_t, std::uint64_t>>& bytes) noexcept {
  std::uint64_t total = 0;
  for (std::uint32_t c = 0; c < header->class_count; ++c) {
    PoolClass& pc = classes[c];
    std::uint32_t owned = 0;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> per_pid;
    for (std::uint32_t i = 0; i < pc.count; ++i) {
      std::uint32_t owner = owner_of(desc(c, i)->state.load(std::memory_order_acquire));
      if (owner == 0) continue;
      ++owned;
      add_bytes(per_pid, owner, 1);
      add_bytes(bytes, owner, pc.stride);
    }
    pc.claimed.store(owned, std::memory_order_release);
    total += std::uint64_t{owned} * pc.stride;
    for (int k = 0; k < kMaxClients; ++k) {
      std::uint32_t p = clients[k].pid.load(std::memory_order_acquire);
      std::uint64_t n = 0;
      for (auto& [q, cnt] : per_pid)
        if (q == p) n = cnt;
      clients[k].admitted[c].store(p ? static_cast<std::uint32_t>(n) : 0, std::memory_order_relaxed);
    }
  }
  return total;
}

// Counters from the descriptors, which are authoritative. Exact when no
// allocation or free runs meanwhile; otherwise off by at most the operations
// in flight, which later frees/reclaims absorb (counters are read as signed).
void BufferPool::recount() noexcept {
  State& s = *s_;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> bytes;
  std::uint64_t total = 0;
  for (std::uint16_t i = 0; i <= s.header->max_extensions; ++i)
    if (State* p = s.part(i)) total += p->recount_part(bytes);
  s.header->claimed_bytes.store(total, std::memory_order_release);
  if (PoolRegion* r = s.region())
    for (std::uint32_t i = 0; i < r->blocks; ++i) {
      PoolDescriptor* d = s.desc(kRegionClass, i);
      std::uint32_t owner = owner_of(d->state.load(std::memory_order_acquire));
      if (owner) add_bytes(bytes, owner, std::uint64_t{d->run} * r->min_block);
    }
  for (int k = 0; k < kMaxClients; ++k) {
    std::uint32_t p = s.clients[k].pid.load(std::memory_order_acquire);
    std::uint64_t n = 0;
    for (auto& [q, b] : bytes)
      if (q == p) n = b;
    s.clients[k].bytes.store(p ? n : 0, std::memory_order_relaxed);
  }
}

std::uint32_t BufferPool::reclaim(std::uint32_t pid) noexcept {
  std::uint32_t n = s_->reclaim_everywhere(pid);
  recount();
  return n;
}

std::uint32_t BufferPool::reclaim_dead() noexcept {
  State& s = *s_;
  std::uint32_t total = 0;
  for (int i = 0; i < kMaxClients; ++i) {
    std::uint32_t p = s.clients[i].pid.load(std::memory_order_acquire);
    if (p == 0) continue;
    const std::uint32_t owner = p & kClientPidMask;
    const std::uint64_t tok = (p & kRegistering) ? 0 : s.clients[i].token.load(std::memory_order_relaxed);
    if (detail::process_liveness(static_cast<pid_t>(owner), tok) != detail::Liveness::dead) continue;
    if (p & kRegistering)
      s.clients[i].pid.compare_exchange_strong(p, 0, std::memory_order_acq_rel);
    else
      total += s.reclaim_everywhere(owner);
  }
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
  if (PoolRegion* r = s_->region())
    for (std::uint32_t i = 0; i < r->blocks; ++i) {
      PoolDescriptor* d = s_->desc(kRegionClass, i);
      std::uint64_t st = d->state.load(std::memory_order_acquire);
      if (owned_or_held(d, st, pid)) out.push_back(BufferHandle{s_->header->pool_id, kRegionClass, 0, i, gen_of(st)});
    }
  return out;
}

// ---- pressure, stats ---------------------------------------------------------------------------------

PressureLevel BufferPool::pressure() const noexcept {
  const PoolHeader* h = s_->header;
  double cap = static_cast<double>(h->budget_bytes ? h->budget_bytes : h->capacity_bytes);
  double used = static_cast<double>(s_->used_bytes());
  double u = cap > 0 ? used / cap : 0;
  PressureLevel l = PressureLevel::none;
  for (int i = 0; i < 4; ++i)
    if (u >= kPressureThresholds[i]) l = static_cast<PressureLevel>(i + 1);
  return l;
}

void BufferPool::State::check_pressure() noexcept {
  if (handlers.empty()) return;
  const PoolHeader* h = header;
  double cap = static_cast<double>(h->budget_bytes ? h->budget_bytes : h->capacity_bytes);
  double u = cap > 0 ? static_cast<double>(used_bytes()) / cap : 0;
  PressureLevel now = PressureLevel::none;
  for (int i = 0; i < 4; ++i)
    if (u >= kPressureThresholds[i]) now = static_cast<PressureLevel>(i + 1);
  if (now == seen) return;
  PressureLevel before = seen;
  seen = now;
  header->pressure.store(static_cast<std::uint32_t>(now), std::memory_order_relaxed);
  for (auto& [prio, fn] : handlers) {
    try {
      fn(now, before);
    } catch (const std::exception& e) {
      log::error("pool pressure handler (priority {}) threw: {}", prio, e.what());
    } catch (...) {
      log::error("pool pressure handler (priority {}) threw", prio);
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
  if (PoolRegion* r = s.region()) {  // the large region, as one more "class" of min-blocks
    ClassStats cs;
    cs.buffer_size = r->min_block;
    cs.capacity = r->blocks;
    cs.in_use = r->used_blocks.load(std::memory_order_relaxed);
    cs.peak = r->peak_blocks.load(std::memory_order_relaxed);
    cs.allocs = r->allocs.load(std::memory_order_relaxed);
    cs.frees = r->frees.load(std::memory_order_relaxed);
    cs.failures = r->failures.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < r->blocks; ++i) {
      PoolDescriptor* d = s.desc(kRegionClass, i);
      if (owner_of(d->state.load(std::memory_order_relaxed)) == 0) continue;
      requested += d->meta.load(std::memory_order_relaxed) & ~kCachedBit;
      owned_bytes += std::uint64_t{d->run} * r->min_block;
    }
    out.classes.push_back(cs);
  }
  out.fragmentation = owned_bytes ? 1.0 - static_cast<double>(requested) / static_cast<double>(owned_bytes) : 0.0;
  for (int i = 0; i < kMaxClients; ++i) {
    std::uint32_t p = s.clients[i].pid.load(std::memory_order_acquire);
    if (p == 0) continue;
    ClientStats cl;
    cl.pid = p & kClientPidMask;
    for (const auto& a : s.clients[i].admitted) cl.buffers += a.load(std::memory_order_relaxed);
    cl.bytes = s.clients[i].bytes.load(std::memory_order_relaxed);
    cl.alive = detail::process_liveness(static_cast<pid_t>(cl.pid), s.clients[i].token.load(std::memory_order_relaxed)) !=
               detail::Liveness::dead;
    out.clients.push_back(cl);
  }
  return out;
}

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
  for (auto& e : exts)
    if (e) e->part->publish();
}

void BufferPool::flush() noexcept {
  s_->flush();
  if (s_->header->max_extensions) s_->shrink();
}

std::uint32_t BufferPool::pool_id() const noexcept { return s_->header->pool_id; }
std::size_t BufferPool::class_count() const noexcept { return s_->header->class_count; }
std::size_t BufferPool::class_size(std::size_t c) const noexcept {
  return c < s_->header->class_count ? s_->classes[c].buffer_size : 0;
}

}  // namespace ipc
