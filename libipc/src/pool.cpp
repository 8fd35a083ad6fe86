// BufferPool: creation, opening and validation of a pool object, and the
// handle itself. The mechanisms live in pool_alloc.cpp (size classes, caches),
// pool_refs.cpp (handles, the reference word), pool_region.cpp (LargeRegion),
// pool_growth.cpp (ExtensionTable), pool_reclaim.cpp (ClientTable, reclaim),
// pool_stats.cpp (statistics, pressure); pool_state.hpp declares them.
#include "ipc/pool.hpp"

#include <sys/random.h>

#include <new>

#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"
#include "pool_state.hpp"

namespace ipc {
using namespace pool_detail;

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
  if (cfg.policy == ExhaustionPolicy::grow &&
      (cfg.max_extensions == 0 || cfg.max_extensions > BufferPool::kMaxExtensions))
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
std::unique_ptr<BufferPool::State> attach(Segment& segment, void* data, std::string_view name) {
  auto* h = static_cast<PoolHeader*>(data);
  auto s = std::make_unique<BufferPool::State>();
  s->segment = &segment;
  s->name = std::string(name);
  s->base = static_cast<std::byte*>(data);
  s->header = h;
  s->classes = reinterpret_cast<PoolClass*>(s->base + h->class_offset);
  s->clients.attach(reinterpret_cast<PoolClient*>(s->base + h->client_offset));
  s->region.attach(s->base, h->region_offset ? reinterpret_cast<PoolRegion*>(s->base + h->region_offset) : nullptr,
                   &s->name);
  s->caches.resize(h->class_count);
  s->cursor.assign(h->class_count, 0);
  s->pending.resize(h->class_count);
  s->pid = detail::self_pid();
  s->ext_index = static_cast<std::uint16_t>(h->extension_index);
  s->extensions.attach(s.get());
  return s;
}
}  // namespace

std::unique_ptr<BufferPool::State> BufferPool::State::create(Segment& segment, std::string_view name,
                                                             const PoolConfig& config) {
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
  return attach(segment, obj.data, name);
}

std::unique_ptr<BufferPool::State> BufferPool::State::open(Segment& segment, std::string_view name) {
  Object obj = segment.open_object(name, ObjectType::pool);
  auto* h = static_cast<PoolHeader*>(obj.data);
  const std::string what = "pool '" + std::string(name) + "' in segment '" + segment.name() + "'";
  if (obj.info.size < sizeof(PoolHeader) || h->magic != kPoolMagic)
    throw Error(ErrorCode::bad_magic, what + " has no valid pool header (not initialised or corrupted)");
  if (h->layout_version != kPoolLayoutVersion)
    throw Error(ErrorCode::version_mismatch, what + " has pool layout version " + std::to_string(h->layout_version) +
                                                 ", this libipc reads " + std::to_string(kPoolLayoutVersion));
  if (h->total_bytes != obj.info.size || (h->class_count == 0 && h->region_offset == 0) ||
      h->class_count > kMaxClasses || h->region_offset >= h->total_bytes || h->class_offset >= h->total_bytes ||
      h->client_offset >= h->total_bytes)
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
  return attach(segment, obj.data, name);
}

BufferPool BufferPool::create(Segment& segment, std::string_view name, const PoolConfig& config) {
  BufferPool pool(State::create(segment, name, config));
  pool.name_ = std::string(name);
  return pool;
}

BufferPool BufferPool::open(Segment& segment, std::string_view name) {
  BufferPool pool(State::open(segment, name));
  pool.name_ = std::string(name);
  return pool;
}

void BufferPool::State::ensure_process() noexcept {
  std::uint32_t me = detail::self_pid();
  if (me == pid) return;
  // A fork child using its parent's handle: the cached buffers are the
  // parent's. Forget them (the parent still owns them) and start afresh.
  for (auto& c : caches) c.clear();
  pending.assign(pending.size(), Pending{});
  clients.forget();
  pid = me;
}

std::uint32_t BufferPool::pool_id() const noexcept { return s_->header->pool_id; }
std::uint32_t BufferPool::next_holder_tag() noexcept {
  return s_->root->header->next_holder_tag.fetch_add(1, std::memory_order_relaxed) & 0x3fff;
}
std::size_t BufferPool::class_count() const noexcept { return s_->header->class_count; }
std::size_t BufferPool::class_size(std::size_t c) const noexcept {
  return c < s_->header->class_count ? s_->classes[c].buffer_size : 0;
}

}  // namespace ipc
