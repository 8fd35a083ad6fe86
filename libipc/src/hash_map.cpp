#include "ipc/hash_map.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <new>
#include <thread>

#include "ipc/detail/process.hpp"
#include "log.hpp"

namespace ipc {
namespace {

constexpr std::uint64_t kMapMagic = 0x3150414d48435049ull;    // "IPCHMAP1" little-endian
constexpr std::uint64_t kTableMagic = 0x3142415448435049ull;  // "IPCHTAB1"
constexpr std::uint8_t kEmpty = 0, kFull = 1, kTombstone = 2;
constexpr std::uint32_t kJournalIdle = 0, kJournalArmed = 0x4c4e524a;  // "JRNL"
constexpr std::uint64_t kMaxCapacity = 1ull << 30;

std::size_t align64(std::size_t v) { return (v + 63) / 64 * 64; }

struct alignas(64) MapHeader {
  std::uint64_t magic;  // written last by the creator's init (zeroed memory: bad magic)
  std::uint32_t layout_version;
  std::uint32_t shard_count;
  std::uint32_t max_key_bytes;
  std::uint32_t max_value_bytes;
  std::uint32_t entry_size;
  std::uint32_t initial_capacity;
  std::uint32_t load_permille;
  std::uint32_t allow_growth;
  std::uint64_t shards_offset;       // from the header start
  std::uint64_t journal_offset;      // from the header start
  std::atomic<std::uint32_t> ready;  // 1 once every shard has a table (release)
};
// The segment format, pinned: a change here is a layout version bump.
static_assert(sizeof(MapHeader) == 64 && alignof(MapHeader) == 64);
static_assert(offsetof(MapHeader, magic) == 0 && offsetof(MapHeader, layout_version) == 8 &&
              offsetof(MapHeader, shard_count) == 12 && offsetof(MapHeader, max_key_bytes) == 16);
static_assert(offsetof(MapHeader, max_value_bytes) == 20 && offsetof(MapHeader, entry_size) == 24 &&
              offsetof(MapHeader, initial_capacity) == 28 && offsetof(MapHeader, load_permille) == 32);
static_assert(offsetof(MapHeader, allow_growth) == 36 && offsetof(MapHeader, shards_offset) == 40 &&
              offsetof(MapHeader, journal_offset) == 48 && offsetof(MapHeader, ready) == 56);

// The first 8 bytes of every slot; key bytes follow, then value bytes.
struct EntryHeader {
  std::atomic<std::uint8_t> state;  // kEmpty / kFull / kTombstone
  std::uint8_t pad;
  std::uint16_t key_len;
  std::uint32_t value_len;
};
static_assert(sizeof(EntryHeader) == 8);

thread_local std::string t_last_error;

std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

std::uint64_t hash_bytes(std::string_view k) noexcept {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ (k.size() * 0xc2b2ae3d27d4eb4full);
  const char* p = k.data();
  std::size_t n = k.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = std::rotl((h ^ mix(w)) * 0x9e3779b97f4a7c15ull, 29);
  }
  if (n) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ mix(w ^ n)) * 0x9e3779b97f4a7c15ull;
  }
  return mix(h);
}

std::uint32_t shard_for(std::uint64_t hash, std::uint32_t shards) noexcept {
  return static_cast<std::uint32_t>(((hash >> 32) * shards) >> 32);
}

void note_max(std::atomic<std::uint64_t>& m, std::uint64_t v) noexcept {
  std::uint64_t cur = m.load(std::memory_order_relaxed);
  while (v > cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

struct alignas(64) BytesMap::Shard {
  SharedMutex lock;
  // Written under the exclusive lock; table_offset is the growth switch (G4).
  alignas(64) std::atomic<std::uint64_t> table_offset{0};
  std::atomic<std::uint64_t> size{0};
  std::atomic<std::uint64_t> tombstones{0};
  std::atomic<std::uint64_t> growing_to{0};  // growth record (G1/G6)
  std::atomic<std::uint32_t> journal_state{kJournalIdle};
  std::uint32_t journal_pad = 0;
  std::uint64_t journal_slot = 0;
  std::uint64_t journal_table = 0;
  std::atomic<std::uint64_t> capacity{0};    // statistics copy of the table's
  std::atomic<std::uint64_t> generation{0};  // statistics copy of the table's
  // Statistics: written by lockers of any kind, read by anyone.
  alignas(64) std::atomic<std::uint64_t> lock_waits{0};
  std::atomic<std::uint64_t> lock_wait_ns{0};
  std::atomic<std::uint64_t> probe_total{0};
  std::atomic<std::uint64_t> probe_count{0};
  std::atomic<std::uint64_t> probe_max{0};
  std::atomic<std::uint64_t> rehashes{0};
  std::atomic<std::uint64_t> repairs{0};
};
// The segment format, pinned: a change here is a layout version bump.
static_assert(sizeof(BytesMap::Shard) == 2432 && alignof(BytesMap::Shard) == 64);
static_assert(offsetof(BytesMap::Shard, lock) == 0 && offsetof(BytesMap::Shard, table_offset) == 2240 &&
              offsetof(BytesMap::Shard, size) == 2248 && offsetof(BytesMap::Shard, tombstones) == 2256);
static_assert(offsetof(BytesMap::Shard, growing_to) == 2264 && offsetof(BytesMap::Shard, journal_state) == 2272 &&
              offsetof(BytesMap::Shard, capacity) == 2296 && offsetof(BytesMap::Shard, generation) == 2304);
static_assert(offsetof(BytesMap::Shard, lock_waits) == 2368 && offsetof(BytesMap::Shard, probe_total) == 2384 &&
              offsetof(BytesMap::Shard, repairs) == 2416);

struct BytesMap::Table {
  std::uint64_t magic;
  std::uint64_t capacity;  // power of two
  std::uint64_t generation;
  std::uint32_t shard;
  std::uint32_t entry_size;
  std::uint64_t reserved[4];
};
static_assert(sizeof(BytesMap::Table) == 64);

namespace {

struct Layout {
  std::uint32_t entry_size;
  std::uint32_t key_stride;
  EntryHeader* entry(BytesMap::Table* t, std::uint64_t i) const noexcept {
    return reinterpret_cast<EntryHeader*>(reinterpret_cast<std::byte*>(t) + sizeof(BytesMap::Table) + i * entry_size);
  }
  static std::byte* key(EntryHeader* e) noexcept { return reinterpret_cast<std::byte*>(e) + sizeof(EntryHeader); }
  std::byte* value(EntryHeader* e) const noexcept { return key(e) + key_stride; }
  // Bytes of an entry that hold data (header, key area, used value bytes).
  std::size_t used(const EntryHeader* e) const noexcept { return sizeof(EntryHeader) + key_stride + e->value_len; }
};

struct Probe {
  bool corrupt = false;     // met a full entry with impossible lengths (never read past them)
  std::int64_t found = -1;  // slot holding the key
  std::int64_t free = -1;   // first tombstone or empty slot on the path
  bool free_is_tombstone = false;
  std::uint64_t length = 0;  // slots inspected
};

Probe probe(const Layout& l, BytesMap::Table* t, std::string_view key, std::uint64_t hash) noexcept {
  Probe p;
  const std::uint64_t mask = t->capacity - 1;
  std::uint64_t i = hash & mask;
  for (std::uint64_t n = 0; n < t->capacity; ++n, i = (i + 1) & mask) {
    EntryHeader* e = l.entry(t, i);
    // relaxed: the shard lock orders every access to the table.
    std::uint8_t st = e->state.load(std::memory_order_relaxed);
    if (st == kEmpty) {
      if (p.free < 0) p.free = static_cast<std::int64_t>(i);
      p.length = n + 1;
      return p;
    }
    if (st == kFull) {
      if (e->key_len > l.key_stride || e->value_len > l.entry_size - sizeof(EntryHeader) - l.key_stride) {
        p.corrupt = true;  // shared memory is not trusted: a bad length would read or copy out of bounds
        p.length = n + 1;
        return p;
      }
      if (e->key_len == key.size() && std::memcmp(Layout::key(e), key.data(), key.size()) == 0) {
        p.found = static_cast<std::int64_t>(i);
        p.length = n + 1;
        return p;
      }
    } else if (p.free < 0) {
      p.free = static_cast<std::int64_t>(i);
      p.free_is_tombstone = true;
    }
  }
  p.length = t->capacity;
  return p;
}

// Copies an entry's data bytes except the state byte, which the caller sets.
void copy_entry_data(const Layout& l, void* to, const void* from) noexcept {
  const auto* src = static_cast<const EntryHeader*>(from);
  std::memcpy(static_cast<std::byte*>(to) + 1, static_cast<const std::byte*>(from) + 1, l.used(src) - 1);
}

// Unlocks a shard lock on every exit path.
struct Unlock {
  Unlock(SharedMutex& mutex, bool shared_lock) noexcept : m(mutex), shared(shared_lock) {}
  Unlock(const Unlock&) = delete;
  Unlock& operator=(const Unlock&) = delete;
  SharedMutex& m;
  bool shared;
  ~Unlock() {
    if (shared)
      m.unlock_shared();
    else
      m.unlock();
  }
};

}  // namespace

const char* to_string(MapStatus s) noexcept {
  switch (s) {
    case MapStatus::ok: return "ok";
    case MapStatus::not_found: return "not_found";
    case MapStatus::already_exists: return "already_exists";
    case MapStatus::mismatch: return "mismatch";
    case MapStatus::too_large: return "too_large";
    case MapStatus::full: return "full";
    case MapStatus::no_space: return "no_space";
    case MapStatus::cancelled: return "cancelled";
    case MapStatus::lock_failed: return "lock_failed";
    case MapStatus::corrupted: return "corrupted";
  }
  return "unknown";
}

const std::string& BytesMap::last_error() noexcept { return t_last_error; }

MapStatus BytesMap::fail(MapStatus s, std::string message) const {
  t_last_error = "hash map '" + name_ + "' in segment '" + segment_->name() + "': " + message;
  return s;
}

// ---- creation and opening -------------------------------------------------------------------

namespace {

struct Sizes {
  std::uint32_t key_stride, entry_size;
  std::uint64_t capacity;
  std::size_t shards_offset, journal_offset, header_size, table_size;
};

[[noreturn]] void bad_option(std::string_view name, const std::string& why) {
  throw Error(ErrorCode::invalid_argument, "hash map '" + std::string(name) + "': " + why);
}

Sizes compute_sizes(std::string_view name, const MapOptions& o) {
  if (o.shards == 0 || o.shards > BytesMap::kMaxShards)
    bad_option(name, "shards = " + std::to_string(o.shards) + "; must be 1.." + std::to_string(BytesMap::kMaxShards));
  if (o.max_key_bytes == 0 || o.max_key_bytes > 65535)
    bad_option(name, "max_key_bytes = " + std::to_string(o.max_key_bytes) + "; must be 1..65535");
  if (o.max_value_bytes > BytesMap::kMaxValueBytes)
    bad_option(name, "max_value_bytes = " + std::to_string(o.max_value_bytes) + "; must be at most " +
                         std::to_string(BytesMap::kMaxValueBytes) + " (store larger values in a BufferPool)");
  if (!(o.max_load_factor > 0.0 && o.max_load_factor <= 0.95))
    bad_option(name, "max_load_factor = " + std::to_string(o.max_load_factor) + "; must be in (0, 0.95]");
  if (o.initial_capacity == 0 || o.initial_capacity > kMaxCapacity)
    bad_option(name, "initial_capacity = " + std::to_string(o.initial_capacity) + "; must be 1.." +
                         std::to_string(kMaxCapacity));
  Sizes s{};
  s.key_stride = (o.max_key_bytes + 7) / 8 * 8;
  s.entry_size = static_cast<std::uint32_t>(sizeof(EntryHeader) + s.key_stride + (o.max_value_bytes + 7) / 8 * 8);
  s.capacity = std::max<std::uint64_t>(8, std::bit_ceil(std::uint64_t{o.initial_capacity}));
  s.shards_offset = align64(sizeof(MapHeader));
  s.journal_offset = s.shards_offset + o.shards * sizeof(BytesMap::Shard);
  s.header_size = s.journal_offset + o.shards * align64(s.entry_size);
  s.table_size = sizeof(BytesMap::Table) + s.capacity * s.entry_size;
  return s;
}

// True for "<map>.s<digits>.g<digits>".
bool is_table_of(std::string_view object, std::string_view map) {
  if (object.size() <= map.size() + 2 || object.substr(0, map.size()) != map || object.substr(map.size(), 2) != ".s")
    return false;
  std::string_view rest = object.substr(map.size() + 2);
  std::size_t g = rest.find(".g");
  if (g == 0 || g == std::string_view::npos || g + 2 == rest.size()) return false;
  auto digits = [](std::string_view d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(rest.substr(0, g)) && digits(rest.substr(g + 2));
}

}  // namespace

std::size_t BytesMap::bytes_needed(const MapOptions& options) {
  Sizes s = compute_sizes("(bytes_needed)", options);
  return align64(s.header_size) + options.shards * align64(s.table_size);
}

std::string BytesMap::table_name(std::uint32_t shard, std::uint64_t generation) const {
  return name_ + ".s" + std::to_string(shard) + ".g" + std::to_string(generation);
}

BytesMap BytesMap::create(Segment& segment, std::string_view name, const MapOptions& options) {
  if (name.empty() || name.size() > kMaxNameLength)
    bad_option(name, "name must be 1.." + std::to_string(kMaxNameLength) +
                         " characters (room is left for the table suffix '.s<shard>.g<generation>')");
  const Sizes s = compute_sizes(name, options);
  const auto permille = static_cast<std::uint32_t>(options.max_load_factor * 1000.0 + 0.5);
  if (s.capacity * permille / 1000 < 1)
    bad_option(name, "initial_capacity × max_load_factor leaves no usable slot; raise either");
  Object obj = segment.create_object(name, ObjectType::hash_map, s.header_size, [&](void* p, std::size_t) {
    auto* h = static_cast<MapHeader*>(p);
    h->layout_version = kHashMapLayoutVersion;
    h->shard_count = options.shards;
    h->max_key_bytes = options.max_key_bytes;
    h->max_value_bytes = options.max_value_bytes;
    h->entry_size = s.entry_size;
    h->initial_capacity = static_cast<std::uint32_t>(s.capacity);
    h->load_permille = permille;
    h->allow_growth = options.allow_growth ? 1 : 0;
    h->shards_offset = s.shards_offset;
    h->journal_offset = s.journal_offset;
    h->ready.store(0, std::memory_order_relaxed);
    auto* shards = reinterpret_cast<Shard*>(static_cast<std::byte*>(p) + s.shards_offset);
    for (std::uint32_t i = 0; i < options.shards; ++i) new (&shards[i]) Shard();
    h->magic = kMapMagic;
  });
  BytesMap map;
  map.segment_ = &segment;
  map.header_ = static_cast<std::byte*>(obj.data);
  map.shards_ = reinterpret_cast<Shard*>(map.header_ + s.shards_offset);
  map.shard_count_ = options.shards;
  map.max_key_ = options.max_key_bytes;
  map.max_value_ = options.max_value_bytes;
  map.entry_size_ = s.entry_size;
  map.key_stride_ = s.key_stride;
  map.load_permille_ = permille;
  map.allow_growth_ = options.allow_growth;
  map.name_ = std::string(name);
  try {
    for (std::uint32_t i = 0; i < options.shards; ++i) {
      Object t = segment.create_object(map.table_name(i, 1), ObjectType::raw, s.table_size, [&](void* p, std::size_t) {
        auto* table = static_cast<Table*>(p);
        *table = Table{kTableMagic, s.capacity, 1, i, s.entry_size, {}};
      });
      map.shards_[i].table_offset.store(t.info.offset, std::memory_order_relaxed);
      map.shards_[i].capacity.store(s.capacity, std::memory_order_relaxed);
      map.shards_[i].generation.store(1, std::memory_order_relaxed);
    }
  } catch (const Error& e) {
    remove(segment, name);
    if (e.code() == ErrorCode::no_space)
      throw Error(ErrorCode::no_space, "hash map '" + std::string(name) + "': segment '" + segment.name() +
                                           "' has no room for the shard tables (" + e.what() +
                                           "); create the segment larger: the map needs " +
                                           std::to_string(bytes_needed(options)) +
                                           " bytes to start (BytesMap::bytes_needed), more to grow");
    throw;
  }
  // SYNC POINT: pairs with the acquire load of `ready` in attach(); the table
  // offsets are visible before the map is.
  reinterpret_cast<MapHeader*>(map.header_)->ready.store(1, std::memory_order_release);
  return map;
}

BytesMap BytesMap::attach(Segment& segment, const Object& obj, std::string_view name) {
  const std::string what = "hash map '" + std::string(name) + "' in segment '" + segment.name() + "'";
  const auto* h = static_cast<const MapHeader*>(obj.data);
  if (obj.info.size < sizeof(MapHeader) || h->magic != kMapMagic)
    throw Error(ErrorCode::bad_magic, what +
                                          " has no valid map header (not initialised or corrupted); remove it "
                                          "with BytesMap::remove and create it again");
  if (h->layout_version != kHashMapLayoutVersion)
    throw Error(ErrorCode::version_mismatch, what + " has layout version " + std::to_string(h->layout_version) +
                                                 ", this library uses " + std::to_string(kHashMapLayoutVersion) +
                                                 "; use a matching libipc or re-create the map");
  MapOptions o;
  o.shards = h->shard_count;
  o.max_key_bytes = h->max_key_bytes;
  o.max_value_bytes = h->max_value_bytes;
  o.initial_capacity = h->initial_capacity;
  o.max_load_factor = h->load_permille / 1000.0;
  Sizes s{};
  try {
    s = compute_sizes(name, o);
  } catch (const Error& e) {
    throw Error(ErrorCode::corrupted, what + ": header fields are invalid (" + e.what() + "); re-create the map");
  }
  if (s.entry_size != h->entry_size || s.shards_offset != h->shards_offset || s.journal_offset != h->journal_offset ||
      s.header_size > obj.info.size || h->load_permille == 0)
    throw Error(ErrorCode::corrupted, what + ": header fields are inconsistent; re-create the map");
  if (h->ready.load(std::memory_order_acquire) != 1)
    throw Error(ErrorCode::not_found, what +
                                          " was never finished (its creator died while creating it, or is "
                                          "still creating it); retry, or BytesMap::remove it and create again");
  BytesMap map;
  map.segment_ = &segment;
  map.header_ = static_cast<std::byte*>(obj.data);
  map.shards_ = reinterpret_cast<Shard*>(map.header_ + s.shards_offset);
  map.shard_count_ = o.shards;
  map.max_key_ = o.max_key_bytes;
  map.max_value_ = o.max_value_bytes;
  map.entry_size_ = s.entry_size;
  map.key_stride_ = s.key_stride;
  map.load_permille_ = h->load_permille;
  map.allow_growth_ = h->allow_growth != 0;
  map.name_ = std::string(name);
  for (std::uint32_t i = 0; i < o.shards; ++i)
    if (!map.table(map.shards_[i]))
      throw Error(ErrorCode::corrupted,
                  what + ": shard " + std::to_string(i) + " points to no valid table; re-create the map");
  return map;
}

BytesMap BytesMap::open(Segment& segment, std::string_view name) {
  Object obj = segment.open_object(name, ObjectType::hash_map);
  return attach(segment, obj, name);
}

BytesMap BytesMap::open_or_create(Segment& segment, std::string_view name, const MapOptions& options) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    std::optional<Object> obj = segment.find_object(name);
    if (!obj) {
      try {
        return create(segment, name, options);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::already_exists) throw;
        continue;  // lost the race: open the winner's
      }
    }
    if (obj->info.type != ObjectType::hash_map) return open(segment, name);  // throws, naming the type
    try {
      return attach(segment, *obj, name);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::not_found) throw;
      if (detail::process_liveness(static_cast<pid_t>(obj->info.creator_pid), 0) == detail::Liveness::dead ||
          std::chrono::steady_clock::now() > deadline)
        throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // its creator is still adding tables
    }
  }
}

bool BytesMap::remove(Segment& segment, std::string_view name) {
  bool any = false;
  for (const ObjectInfo& o : segment.objects())
    if (o.name == name ? o.type == ObjectType::hash_map
                       : o.type == ObjectType::raw && is_table_of(o.name, name))  // tables are raw objects
      any |= segment.remove_object(o.name);
  return any;
}

// ---- locking and repair ---------------------------------------------------------------------

BytesMap::Table* BytesMap::table(const Shard& s) const noexcept {
  // acquire: pairs with the release store of G4 (the lock orders it too).
  std::uint64_t off = s.table_offset.load(std::memory_order_acquire);
  auto* t = static_cast<Table*>(segment_->at(off, sizeof(Table)));
  if (!t || t->magic != kTableMagic || t->entry_size != entry_size_ || !std::has_single_bit(t->capacity) ||
      t->capacity > kMaxCapacity || !segment_->at(off, sizeof(Table) + t->capacity * entry_size_))
    return nullptr;
  return t;
}

std::byte* BytesMap::journal(std::uint32_t i) const noexcept {
  return header_ + reinterpret_cast<const MapHeader*>(header_)->journal_offset + i * align64(entry_size_);
}

MapStatus BytesMap::lock_exclusive(std::uint32_t i) const {
  Shard& s = shards_[i];
  LockResult r = s.lock.try_lock();
  if (r == LockResult::timed_out) {
    std::uint64_t t0 = detail::monotonic_ns();
    r = s.lock.lock();
    s.lock_waits.fetch_add(1, std::memory_order_relaxed);
    s.lock_wait_ns.fetch_add(detail::monotonic_ns() - t0, std::memory_order_relaxed);
  }
  if (r == LockResult::acquired) return MapStatus::ok;
  if (r == LockResult::owner_died) {
    repair(i);
    s.lock.mark_consistent();
    return MapStatus::ok;
  }
  return fail(MapStatus::lock_failed, "shard " + std::to_string(i) + " lock: " + to_string(r) +
                                          (r == LockResult::deadlock ? " (a callback called the map it runs in; do not)"
                                                                     : "; the map must be re-created"));
}

MapStatus BytesMap::lock_shared(std::uint32_t i) const {
  Shard& s = shards_[i];
  for (;;) {
    LockResult r = s.lock.try_lock_shared();
    if (r == LockResult::timed_out) {
      // A writer is active, or died: a sleeping reader would notice a dead
      // writer only after Mutex::kLivenessSlice, a try_lock at once (the
      // kernel already marked the lock word OWNER_DIED).
      LockResult w = s.lock.try_lock();
      if (owns(w)) {
        if (w == LockResult::owner_died) {
          repair(i);
          s.lock.mark_consistent();
        }
        s.lock.unlock();
        continue;
      }
      std::uint64_t t0 = detail::monotonic_ns();
      r = s.lock.lock_shared();
      s.lock_waits.fetch_add(1, std::memory_order_relaxed);
      s.lock_wait_ns.fetch_add(detail::monotonic_ns() - t0, std::memory_order_relaxed);
    }
    if (r == LockResult::acquired) return MapStatus::ok;
    if (r != LockResult::owner_died)
      return fail(MapStatus::lock_failed,
                  "shard " + std::to_string(i) + " lock: " + to_string(r) + "; the map must be re-created");
    // A writer died and nobody repaired yet: repair under the exclusive lock.
    s.lock.unlock_shared();
    MapStatus st = lock_exclusive(i);
    if (st != MapStatus::ok) return st;
    s.lock.unlock();
  }
}

void BytesMap::repair(std::uint32_t i) const {
  Shard& s = shards_[i];
  const Layout l{entry_size_, key_stride_};
  s.repairs.fetch_add(1, std::memory_order_relaxed);
  // 1. Growth record: finish the switch or drop the half-built table.
  if (std::uint64_t g = s.growing_to.load(std::memory_order_acquire); g != 0) {
    Table* t = table(s);
    std::string stale = table_name(i, t && t->generation == g ? g - 1 : g);
    try {
      segment_->remove_object(stale);
    } catch (const std::exception& e) {
      log::error("hash map '{}' shard {}: could not remove table '{}' during repair: {}", name_, i, stale, e.what());
    }
    s.growing_to.store(0, std::memory_order_release);
  }
  Table* t = table(s);
  if (!t) {
    log::error("hash map '{}' shard {}: no valid table after a writer died; re-create the map", name_, i);
    return;
  }
  // 2. Journal: roll back an unfinished in-place change.
  if (s.journal_state.load(std::memory_order_acquire) == kJournalArmed) {
    const auto* saved = reinterpret_cast<const EntryHeader*>(journal(i));
    if (s.journal_table == s.table_offset.load(std::memory_order_relaxed) && s.journal_slot < t->capacity &&
        saved->value_len <= max_value_) {
      EntryHeader* e = l.entry(t, s.journal_slot);
      copy_entry_data(l, e, saved);
      e->state.store(kFull, std::memory_order_release);
    }
    s.journal_state.store(kJournalIdle, std::memory_order_release);
  }
  // 3. Recount (I4/E2 may not have happened).
  std::uint64_t full = 0, tomb = 0;
  for (std::uint64_t k = 0; k < t->capacity; ++k) {
    EntryHeader* e = l.entry(t, k);
    std::uint8_t st = e->state.load(std::memory_order_relaxed);
    if (st == kFull && (e->key_len > max_key_ || e->value_len > max_value_)) st = kTombstone;  // never written so
    if (st != kEmpty && st != kFull && st != kTombstone) st = kTombstone;
    if (st != e->state.load(std::memory_order_relaxed)) e->state.store(st, std::memory_order_release);
    full += st == kFull;
    tomb += st == kTombstone;
  }
  s.size.store(full, std::memory_order_relaxed);
  s.tombstones.store(tomb, std::memory_order_relaxed);
  s.capacity.store(t->capacity, std::memory_order_relaxed);
  s.generation.store(t->generation, std::memory_order_relaxed);
  log::warn("hash map '{}' shard {}: repaired after a writer died ({} entries)", name_, i, full);
}

// ---- growth ---------------------------------------------------------------------------------

MapStatus BytesMap::rehash(std::uint32_t i, std::uint64_t new_capacity) const {
  Shard& s = shards_[i];
  const Layout l{entry_size_, key_stride_};
  Table* old = table(s);
  if (!old) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  const std::uint64_t g = old->generation + 1;
  const std::string name = table_name(i, g);
  const std::size_t bytes = sizeof(Table) + new_capacity * entry_size_;
  s.growing_to.store(g, std::memory_order_release);  // G1
  Object obj;
  for (int attempt = 0;; ++attempt) {
    try {  // G2
      obj = segment_->create_object(name, ObjectType::raw, bytes, [&](void* p, std::size_t) {
        *static_cast<Table*>(p) = Table{kTableMagic, new_capacity, g, i, entry_size_, {}};
      });
      break;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::already_exists && attempt == 0) {  // an orphan: nothing points to it
        // Only a table of ours: never remove a user's object that merely has the name.
        std::optional<Object> o = segment_->find_object(name);
        if (o && o->info.type == ObjectType::raw && o->info.size >= sizeof(Table) &&
            static_cast<const Table*>(o->data)->magic == kTableMagic) {
          segment_->remove_object(name);
          continue;
        }
      }
      s.growing_to.store(0, std::memory_order_release);
      if (e.code() == ErrorCode::no_space)
        return fail(MapStatus::no_space, "shard " + std::to_string(i) + " cannot grow to " +
                                             std::to_string(new_capacity) + " slots (" + std::to_string(bytes) +
                                             " bytes): " + e.what() + "; create the segment larger");
      return fail(MapStatus::no_space, "shard " + std::to_string(i) + " cannot create its new table: " + e.what());
    } catch (...) {  // std::bad_alloc: no growth is under way after all
      s.growing_to.store(0, std::memory_order_release);
      throw;
    }
  }
  auto* fresh = static_cast<Table*>(obj.data);
  const std::uint64_t mask = new_capacity - 1;
  std::uint64_t full = 0;
  for (std::uint64_t k = 0; k < old->capacity; ++k) {  // G3
    EntryHeader* e = l.entry(old, k);
    if (e->state.load(std::memory_order_relaxed) != kFull) continue;
    std::uint64_t j = hash_bytes({reinterpret_cast<const char*>(Layout::key(e)), e->key_len}) & mask;
    while (l.entry(fresh, j)->state.load(std::memory_order_relaxed) != kEmpty) j = (j + 1) & mask;
    EntryHeader* d = l.entry(fresh, j);
    copy_entry_data(l, d, e);
    d->state.store(kFull, std::memory_order_relaxed);  // invisible until G4
    ++full;
  }
  // SYNC POINT (crash order and readers): the new table's contents before the switch.
  s.table_offset.store(obj.info.offset, std::memory_order_release);  // G4
  s.size.store(full, std::memory_order_relaxed);
  s.tombstones.store(0, std::memory_order_relaxed);
  s.capacity.store(new_capacity, std::memory_order_relaxed);
  s.generation.store(g, std::memory_order_relaxed);
  try {
    segment_->remove_object(table_name(i, g - 1));  // G5
  } catch (const std::exception& e) {
    log::error("hash map '{}' shard {}: could not remove the old table: {}", name_, i, e.what());
  }
  s.growing_to.store(0, std::memory_order_release);  // G6
  s.rehashes.fetch_add(1, std::memory_order_relaxed);
  return MapStatus::ok;
}

// Called when an insert would take an empty slot beyond the load limit.
MapStatus BytesMap::make_room(std::uint32_t i) const {
  Shard& s = shards_[i];
  Table* t = table(s);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  const std::uint64_t cap = t->capacity;
  const std::uint64_t limit = std::max<std::uint64_t>(1, cap * load_permille_ / 1000);
  const std::uint64_t size = s.size.load(std::memory_order_relaxed);
  const std::uint64_t tomb = s.tombstones.load(std::memory_order_relaxed);
  // Dropping tombstones (a same-size rehash) makes room whenever the live
  // entries still fit: always try it before growing — and before refusing
  // with growth disabled, or erases would make a shard "full" for good.
  const bool mostly_tombstones = tomb > 0 && size + 1 <= (allow_growth_ ? limit / 2 : limit);
  if (mostly_tombstones) {
    MapStatus st = rehash(i, cap);  // same size: drop tombstones
    if (st == MapStatus::ok || allow_growth_) return st;
  }
  if (!allow_growth_)
    return fail(MapStatus::full, "shard " + std::to_string(i) + " is full (" + std::to_string(size) + " entries, " +
                                     std::to_string(cap) + " slots, max_load_factor " +
                                     std::to_string(load_permille_ / 1000.0) +
                                     ") and growth is disabled; erase entries or create the map with "
                                     "allow_growth = true or a larger initial_capacity");
  if (cap * 2 > kMaxCapacity)
    return fail(MapStatus::full, "shard " + std::to_string(i) + " reached the maximum capacity of " +
                                     std::to_string(kMaxCapacity) + " slots; create the map with more shards");
  return rehash(i, cap * 2);
}

// ---- operations -----------------------------------------------------------------------------

std::uint32_t BytesMap::shard_of(std::string_view key) const noexcept {
  return shard_for(hash_bytes(key), shard_count_);
}

MapStatus BytesMap::check_sizes(std::string_view key, std::size_t value_len) const {
  if (key.size() > max_key_ || key.empty())
    return fail(MapStatus::too_large,
                "key of " + std::to_string(key.size()) + " bytes; keys must be 1.." + std::to_string(max_key_) +
                    " bytes (max_key_bytes, fixed at creation: create the map with a larger one)");
  if (value_len > max_value_)
    return fail(MapStatus::too_large, "value of " + std::to_string(value_len) + " bytes exceeds max_value_bytes " +
                                          std::to_string(max_value_) +
                                          " (fixed at creation: create the map with a larger one, or store a "
                                          "BufferHandle to a pool buffer)");
  return MapStatus::ok;
}

MapStatus BytesMap::visit(std::string_view key, ValueFn fn) const {
  if (MapStatus st = check_sizes(key, 0); st != MapStatus::ok) return st;
  const std::uint64_t h = hash_bytes(key);
  const std::uint32_t i = shard_for(h, shard_count_);
  if (MapStatus st = lock_shared(i); st != MapStatus::ok) return st;
  Unlock unlock{shards_[i].lock, true};
  Table* t = table(shards_[i]);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  const Layout l{entry_size_, key_stride_};
  Probe p = probe(l, t, key, h);
  if (p.corrupt)
    return fail(MapStatus::corrupted,
                "shard " + std::to_string(i) + " holds an entry with impossible lengths; re-create the map");
  note_max(shards_[i].probe_max, p.length);
  if (p.found < 0) return MapStatus::not_found;
  EntryHeader* e = l.entry(t, static_cast<std::uint64_t>(p.found));
  fn(std::string_view(reinterpret_cast<const char*>(l.value(e)), e->value_len));
  return MapStatus::ok;
}

MapStatus BytesMap::get(std::string_view key, std::string& value) const {
  return visit(key, [&](std::string_view v) { value.assign(v); });
}

bool BytesMap::contains(std::string_view key) const {
  return visit(key, [](std::string_view) {}) == MapStatus::ok;
}

// Exclusive lock held. Inserts or overwrites (journaled).
MapStatus BytesMap::assign_locked(std::uint32_t i, std::string_view key, std::uint64_t hash, std::string_view value,
                                  bool must_be_new, bool* inserted) const {
  Shard& s = shards_[i];
  const Layout l{entry_size_, key_stride_};
  Table* t = table(s);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  Probe p = probe(l, t, key, hash);
  if (p.corrupt)
    return fail(MapStatus::corrupted,
                "shard " + std::to_string(i) + " holds an entry with impossible lengths; re-create the map");
  if (p.found >= 0) {
    if (must_be_new) return MapStatus::already_exists;
    EntryHeader* e = l.entry(t, static_cast<std::uint64_t>(p.found));
    std::memcpy(static_cast<void*>(journal(i)), static_cast<const void*>(e), l.used(e));  // J1
    s.journal_slot = static_cast<std::uint64_t>(p.found);
    s.journal_table = s.table_offset.load(std::memory_order_relaxed);
    s.journal_state.store(kJournalArmed, std::memory_order_release);  // J2
    // SYNC POINT (crash order): J2 reaches memory before any store of J3.
    std::atomic_thread_fence(std::memory_order_release);
    e->value_len = static_cast<std::uint32_t>(value.size());  // J3
    std::memcpy(l.value(e), value.data(), value.size());
    s.journal_state.store(kJournalIdle, std::memory_order_release);  // J4
    if (inserted) *inserted = false;
    return MapStatus::ok;
  }
  const std::uint64_t limit = std::max<std::uint64_t>(1, t->capacity * load_permille_ / 1000);
  const std::uint64_t occupied = s.size.load(std::memory_order_relaxed) + s.tombstones.load(std::memory_order_relaxed);
  if (p.free < 0 || (!p.free_is_tombstone && occupied + 1 > limit)) {
    if (MapStatus st = make_room(i); st != MapStatus::ok) return st;
    t = table(s);
    p = probe(l, t, key, hash);
    if (p.corrupt)
      return fail(MapStatus::corrupted,
                  "shard " + std::to_string(i) + " holds an entry with impossible lengths; re-create the map");
    if (p.free < 0) return fail(MapStatus::full, "shard " + std::to_string(i) + " has no free slot");
  }
  EntryHeader* e = l.entry(t, static_cast<std::uint64_t>(p.free));
  e->key_len = static_cast<std::uint16_t>(key.size());  // I2
  e->value_len = static_cast<std::uint32_t>(value.size());
  std::memcpy(Layout::key(e), key.data(), key.size());
  std::memcpy(l.value(e), value.data(), value.size());
  e->state.store(kFull, std::memory_order_release);  // I3: the insert commits here
  if (p.free_is_tombstone)
    s.tombstones.store(s.tombstones.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  s.size.store(s.size.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // I4
  s.probe_total.fetch_add(p.length, std::memory_order_relaxed);
  s.probe_count.fetch_add(1, std::memory_order_relaxed);
  note_max(s.probe_max, p.length);
  if (inserted) *inserted = true;
  return MapStatus::ok;
}

MapStatus BytesMap::insert(std::string_view key, std::string_view value) {
  if (MapStatus st = check_sizes(key, value.size()); st != MapStatus::ok) return st;
  const std::uint64_t h = hash_bytes(key);
  const std::uint32_t i = shard_for(h, shard_count_);
  if (MapStatus st = lock_exclusive(i); st != MapStatus::ok) return st;
  Unlock unlock{shards_[i].lock, false};
  return assign_locked(i, key, h, value, true, nullptr);
}

MapStatus BytesMap::insert_or_assign(std::string_view key, std::string_view value, bool* inserted) {
  if (MapStatus st = check_sizes(key, value.size()); st != MapStatus::ok) return st;
  const std::uint64_t h = hash_bytes(key);
  const std::uint32_t i = shard_for(h, shard_count_);
  if (MapStatus st = lock_exclusive(i); st != MapStatus::ok) return st;
  Unlock unlock{shards_[i].lock, false};
  return assign_locked(i, key, h, value, false, inserted);
}

MapStatus BytesMap::erase(std::string_view key) {
  if (MapStatus st = check_sizes(key, 0); st != MapStatus::ok) return st;
  const std::uint64_t h = hash_bytes(key);
  const std::uint32_t i = shard_for(h, shard_count_);
  if (MapStatus st = lock_exclusive(i); st != MapStatus::ok) return st;
  Unlock unlock{shards_[i].lock, false};
  Shard& s = shards_[i];
  const Layout l{entry_size_, key_stride_};
  Table* t = table(s);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  Probe p = probe(l, t, key, h);
  if (p.corrupt)
    return fail(MapStatus::corrupted,
                "shard " + std::to_string(i) + " holds an entry with impossible lengths; re-create the map");
  if (p.found < 0) return MapStatus::not_found;
  const auto slot = static_cast<std::uint64_t>(p.found);
  // A slot followed by an empty one ends every probe chain through it, so it
  // may become empty instead of a tombstone. Either way one byte store (E1).
  const bool next_empty = l.entry(t, (slot + 1) & (t->capacity - 1))->state.load(std::memory_order_relaxed) == kEmpty;
  l.entry(t, slot)->state.store(next_empty ? kEmpty : kTombstone, std::memory_order_release);  // E1
  s.size.store(s.size.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);         // E2
  if (!next_empty) s.tombstones.store(s.tombstones.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return MapStatus::ok;
}

MapStatus BytesMap::update(std::string_view key, UpdateFn fn) {
  if (MapStatus st = check_sizes(key, 0); st != MapStatus::ok) return st;
  const std::uint64_t h = hash_bytes(key);
  const std::uint32_t i = shard_for(h, shard_count_);
  if (MapStatus st = lock_exclusive(i); st != MapStatus::ok) return st;
  Unlock unlock{shards_[i].lock, false};
  Shard& s = shards_[i];
  const Layout l{entry_size_, key_stride_};
  Table* t = table(s);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table; re-create the map");
  Probe p = probe(l, t, key, h);
  if (p.corrupt)
    return fail(MapStatus::corrupted,
                "shard " + std::to_string(i) + " holds an entry with impossible lengths; re-create the map");
  if (p.found < 0) return MapStatus::not_found;
  EntryHeader* e = l.entry(t, static_cast<std::uint64_t>(p.found));
  std::memcpy(static_cast<void*>(journal(i)), static_cast<const void*>(e), l.used(e));  // J1
  s.journal_slot = static_cast<std::uint64_t>(p.found);
  s.journal_table = s.table_offset.load(std::memory_order_relaxed);
  s.journal_state.store(kJournalArmed, std::memory_order_release);  // J2
  // SYNC POINT (crash order): J2 reaches memory before the callback's stores.
  std::atomic_thread_fence(std::memory_order_release);
  auto roll_back = [&] {
    copy_entry_data(l, e, journal(i));
    s.journal_state.store(kJournalIdle, std::memory_order_release);
  };
  std::uint32_t length = e->value_len;
  bool commit = false;
  try {
    commit = fn(std::span<std::byte>(l.value(e), max_value_), length);  // J3
  } catch (...) {
    roll_back();
    throw;
  }
  if (!commit || length > max_value_) {
    roll_back();
    if (!commit) return MapStatus::cancelled;
    return fail(MapStatus::too_large, "update callback set a length of " + std::to_string(length) +
                                          " bytes, above max_value_bytes " + std::to_string(max_value_) +
                                          "; the change was rolled back");
  }
  e->value_len = length;
  s.journal_state.store(kJournalIdle, std::memory_order_release);  // J4
  return MapStatus::ok;
}

MapStatus BytesMap::compare_exchange(std::string_view key, std::string_view expected, std::string_view desired) {
  if (MapStatus st = check_sizes(key, desired.size()); st != MapStatus::ok) return st;
  bool matched = false;
  MapStatus st = update(key, [&](std::span<std::byte> value, std::uint32_t& length) {
    matched = length == expected.size() && std::memcmp(value.data(), expected.data(), expected.size()) == 0;
    if (!matched) return false;
    std::memcpy(value.data(), desired.data(), desired.size());
    length = static_cast<std::uint32_t>(desired.size());
    return true;
  });
  return st == MapStatus::cancelled ? MapStatus::mismatch : st;
}

// ---- batches --------------------------------------------------------------------------------

namespace {
// Indices of `n` items sorted by shard, with each item's hash.
struct Grouped {
  std::vector<std::uint32_t> order;
  std::vector<std::uint64_t> hash;
  std::vector<std::uint32_t> shard;
};
template <typename KeyAt>
Grouped group_by_shard(std::size_t n, std::uint32_t shards, KeyAt key_at) {
  Grouped g;
  g.order.resize(n);
  g.hash.resize(n);
  g.shard.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    g.order[k] = static_cast<std::uint32_t>(k);
    g.hash[k] = hash_bytes(key_at(k));
    g.shard[k] = shard_for(g.hash[k], shards);
  }
  std::stable_sort(g.order.begin(), g.order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return g.shard[a] < g.shard[b]; });
  return g;
}
}  // namespace

void BytesMap::get_many(std::span<const std::string_view> keys, std::span<MapStatus> statuses,
                        detail::FunctionRef<void(std::size_t, std::string_view)> fn) const {
  const std::size_t n = std::min(keys.size(), statuses.size());
  Grouped g = group_by_shard(n, shard_count_, [&](std::size_t k) { return keys[k]; });
  const Layout l{entry_size_, key_stride_};
  for (std::size_t a = 0; a < n;) {
    const std::uint32_t i = g.shard[g.order[a]];
    std::size_t b = a;
    while (b < n && g.shard[g.order[b]] == i) ++b;
    MapStatus locked = lock_shared(i);
    Table* t = locked == MapStatus::ok ? table(shards_[i]) : nullptr;
    if (locked == MapStatus::ok && !t)
      locked = fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table");
    std::optional<Unlock> unlock;
    if (locked == MapStatus::ok) unlock.emplace(shards_[i].lock, true);
    for (std::size_t k = a; k < b; ++k) {
      const std::uint32_t idx = g.order[k];
      if (locked != MapStatus::ok) {
        statuses[idx] = locked;
        continue;
      }
      if ((statuses[idx] = check_sizes(keys[idx], 0)) != MapStatus::ok) continue;
      Probe p = probe(l, t, keys[idx], g.hash[idx]);
      if (p.found < 0) {
        statuses[idx] = MapStatus::not_found;
        continue;
      }
      EntryHeader* e = l.entry(t, static_cast<std::uint64_t>(p.found));
      fn(idx, std::string_view(reinterpret_cast<const char*>(l.value(e)), e->value_len));
    }
    a = b;
  }
}

void BytesMap::put_many(std::span<const std::pair<std::string_view, std::string_view>> entries,
                        std::span<MapStatus> statuses) {
  const std::size_t n = std::min(entries.size(), statuses.size());
  Grouped g = group_by_shard(n, shard_count_, [&](std::size_t k) { return entries[k].first; });
  for (std::size_t a = 0; a < n;) {
    const std::uint32_t i = g.shard[g.order[a]];
    std::size_t b = a;
    while (b < n && g.shard[g.order[b]] == i) ++b;
    MapStatus locked = lock_exclusive(i);
    std::optional<Unlock> unlock;
    if (locked == MapStatus::ok) unlock.emplace(shards_[i].lock, false);
    for (std::size_t k = a; k < b; ++k) {
      const std::uint32_t idx = g.order[k];
      const auto& [key, value] = entries[idx];
      if (locked != MapStatus::ok)
        statuses[idx] = locked;
      else if ((statuses[idx] = check_sizes(key, value.size())) == MapStatus::ok)
        statuses[idx] = assign_locked(i, key, g.hash[idx], value, false, nullptr);
    }
    a = b;
  }
}

// ---- iteration, size, clear, stats ----------------------------------------------------------

MapStatus BytesMap::for_each_in_shard(std::uint32_t shard, EntryFn fn) const {
  if (shard >= shard_count_)
    return fail(MapStatus::not_found,
                "no shard " + std::to_string(shard) + " (the map has " + std::to_string(shard_count_) + ")");
  if (MapStatus st = lock_shared(shard); st != MapStatus::ok) return st;
  Unlock unlock{shards_[shard].lock, true};
  Table* t = table(shards_[shard]);
  if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(shard) + " has no valid table");
  const Layout l{entry_size_, key_stride_};
  for (std::uint64_t k = 0; k < t->capacity; ++k) {
    EntryHeader* e = l.entry(t, k);
    if (e->state.load(std::memory_order_relaxed) != kFull) continue;
    fn(std::string_view(reinterpret_cast<const char*>(Layout::key(e)), e->key_len),
       std::string_view(reinterpret_cast<const char*>(l.value(e)), e->value_len));
  }
  return MapStatus::ok;
}

MapStatus BytesMap::for_each(EntryFn fn) const {
  for (std::uint32_t i = 0; i < shard_count_; ++i)
    if (MapStatus st = for_each_in_shard(i, fn); st != MapStatus::ok) return st;
  return MapStatus::ok;
}

std::size_t BytesMap::size() const noexcept {
  std::size_t n = 0;
  for (std::uint32_t i = 0; i < shard_count_; ++i) n += shards_[i].size.load(std::memory_order_relaxed);
  return n;
}

MapStatus BytesMap::clear() {
  const Layout l{entry_size_, key_stride_};
  for (std::uint32_t i = 0; i < shard_count_; ++i) {
    if (MapStatus st = lock_exclusive(i); st != MapStatus::ok) return st;
    Unlock unlock{shards_[i].lock, false};
    Shard& s = shards_[i];
    Table* t = table(s);
    if (!t) return fail(MapStatus::corrupted, "shard " + std::to_string(i) + " has no valid table");
    // Pass 1: erase each entry (chains stay intact); pass 2: tombstones → empty.
    for (std::uint64_t k = 0; k < t->capacity; ++k)
      if (l.entry(t, k)->state.load(std::memory_order_relaxed) == kFull)
        l.entry(t, k)->state.store(kTombstone, std::memory_order_release);
    s.tombstones.store(s.tombstones.load(std::memory_order_relaxed) + s.size.load(std::memory_order_relaxed),
                       std::memory_order_relaxed);
    s.size.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // crash order: pass 1 before pass 2
    for (std::uint64_t k = 0; k < t->capacity; ++k) l.entry(t, k)->state.store(kEmpty, std::memory_order_relaxed);
    s.tombstones.store(0, std::memory_order_relaxed);
  }
  return MapStatus::ok;
}

MapStats BytesMap::stats() const {
  MapStats out;
  out.shards.resize(shard_count_);
  for (std::uint32_t i = 0; i < shard_count_; ++i) {
    const Shard& s = shards_[i];
    ShardStats& o = out.shards[i];
    o.size = s.size.load(std::memory_order_relaxed);
    o.tombstones = s.tombstones.load(std::memory_order_relaxed);
    o.capacity = s.capacity.load(std::memory_order_relaxed);
    o.load_factor = o.capacity ? static_cast<double>(o.size) / static_cast<double>(o.capacity) : 0.0;
    o.generation = s.generation.load(std::memory_order_relaxed);
    o.lock_waits = s.lock_waits.load(std::memory_order_relaxed);
    o.lock_wait_ns = s.lock_wait_ns.load(std::memory_order_relaxed);
    o.probe_max = s.probe_max.load(std::memory_order_relaxed);
    const std::uint64_t pc = s.probe_count.load(std::memory_order_relaxed);
    o.probe_avg =
        pc ? static_cast<double>(s.probe_total.load(std::memory_order_relaxed)) / static_cast<double>(pc) : 0.0;
    o.rehashes = s.rehashes.load(std::memory_order_relaxed);
    o.repairs = s.repairs.load(std::memory_order_relaxed);
    out.size += o.size;
  }
  return out;
}

}  // namespace ipc
