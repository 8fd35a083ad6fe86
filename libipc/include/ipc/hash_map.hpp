// ipc/hash_map.hpp — a segmented (sharded) concurrent hash map in shared memory.
//
// Types: `MapOptions` (creation parameters), `MapStatus` (what a hot-path call
// did), `ShardStats`/`MapStats` (live statistics any process can read),
// `BytesMap` (the core: keys and values are byte strings of bounded size) and
// `HashMap<K, V>` (typed front end for trivially copyable K and V).
//
// Vocabulary: the map is split into N *shards* (the issue calls them "map
// segments"; "shard" avoids confusion with shared-memory segments). A key's
// shard is chosen by its hash; each shard has its own robust ipc::SharedMutex,
// so readers of a shard run in parallel and writers of different shards never
// meet.
//
// Memory layout. Everything lives in one ipc::Segment as named objects:
//
//   "<map>"               ObjectType::hash_map: the map header
//     MapHeader           magic "IPCHMAP1", layout version, shard count,
//                         max key/value bytes, entry size, growth options,
//                         `ready` (written last by the creator)
//     Shard[shards]       one per shard, 64-byte aligned:
//                           lock          SharedMutex
//                           table_offset  segment offset of the shard's
//                                         current table object (one word: the
//                                         growth switch point)
//                           size, tombstones   (written under the lock)
//                           growing_to    0, or the generation of a table
//                                         being built (growth record)
//                           journal       {state, slot, table offset}
//                           statistics    on their own cache line
//     journal entries     shards × entry_size bytes: the undo copy of one entry
//   "<map>.s<i>.g<g>"     ObjectType::raw: shard i's table, generation g
//     TableHeader         magic "IPCHTAB1", capacity (power of two), generation
//     Entry[capacity]     {state:u8, pad, key_len:u16, value_len:u32}, then
//                         max_key_bytes (8-aligned), then max_value_bytes
//   Entry state: 0 empty, 1 full, 2 tombstone. Zeroed memory is an empty table.
//   Open addressing with linear probing and tombstones.
//
// Concurrency: any thread of any process may call any method of the shared
// map. Lookups take the shard's shared lock, modifications its exclusive lock;
// so nothing is read while it is being written, and the protocol below is
// only about crashes. A BytesMap/HashMap handle is a few pointers into the
// mapping and may be used by several threads; the Segment it was opened from
// must outlive it. Callbacks run under the shard's lock: they must not call
// the same map — re-entering a shard this thread already holds waits for
// itself forever (it is not detected).
//
// Crash protocol (a writer SIGKILLed at any instant; the kernel releases the
// shard's lock and the next locker gets owner_died, repairs, then calls
// mark_consistent; readers that see owner_died take the exclusive lock to
// repair first, and a reader that finds the lock busy try_locks it once, so
// a dead writer is repaired at once instead of after a liveness slice):
//
//   Insert of a new key:
//     I1 probe to the first tombstone/empty slot on the key's path
//     I2 write key_len, value_len, key and value bytes into that slot
//     I3 state = full (release)               <- the insert happens here
//     I4 size += 1 (and tombstones -= 1 if the slot was a tombstone)
//     Death before I3: the slot is still empty/tombstone, its bytes are
//     garbage nobody reads. Death between I3 and I4: counters are off; repair
//     recounts them from the table.
//   Erase:
//     E1 state = tombstone (release)          <- one byte store, atomic
//     E2 size -= 1, tombstones += 1           (repair recounts)
//   Overwrite in place (insert_or_assign on an existing key, update callback,
//   compare_exchange):
//     J1 copy the slot's header, key and value into the shard's journal entry;
//        journal.slot = index, journal.table = current table offset
//     J2 journal.state = armed (release), then a release fence so that J2
//        reaches memory before the first store of J3
//     J3 write value_len and value bytes in place (or run the callback on them)
//     J4 journal.state = idle (release)       <- the overwrite happens here
//     Death before J2: the slot is untouched. Death in J2..J4: repair copies
//     the journal entry back (the op had not returned, so rolling it back
//     loses nothing acknowledged), then sets journal.state = idle. Copying
//     the same bytes twice is harmless, so a repairer that dies is repaired
//     by the next locker.
//   Growth (or a same-size rehash that drops tombstones), exclusive lock held:
//     G1 growing_to = g+1 (release): "building <map>.s<i>.g<g+1>"
//     G2 create that object (capacity 2×, or same capacity to drop tombstones)
//     G3 rehash every full entry of the old table into it (old one untouched)
//     G4 table_offset = the new object (release)   <- the switch
//     G5 remove the old object "<map>.s<i>.g<g>"
//     G6 growing_to = 0 (release)
//     Repair with growing_to = x ≠ 0: if the current table's generation is x
//     the switch happened: remove "...g<x-1>" if still there (G5). Otherwise
//     remove the half-built "...g<x>" if it exists. Then growing_to = 0. Both
//     branches are idempotent. Readers of *other* shards never wait for this.
//   Clear: every full entry becomes a tombstone (a sequence of atomic erases,
//   probe chains intact), then every tombstone becomes empty (no full entry
//   is left to be cut off); a death leaves a subset erased.
//   Repair, in order: growth record, journal, recount size and tombstones.
//
// Guarantee: after repair every key whose insert/assign/update had returned
// ok is present with that value (or a later one), erased keys whose erase
// returned are absent, and no half-written key or value is ever visible.
// Not guaranteed: an operation that had *not* returned may or may not have
// happened (an insert I3 is its commit point; an overwrite is rolled back).
//
// Errors: create/open throw ipc::Error naming the map and what to do. Every
// hot path returns a MapStatus and never throws (unless a user callback
// throws: then a journaled change is rolled back, the lock released and the
// exception propagates). For too_large, full, no_space, lock_failed and
// corrupted, BytesMap::last_error() holds the calling thread's message.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ipc/detail/function_ref.hpp"
#include "ipc/error.hpp"
#include "ipc/segment.hpp"
#include "ipc/shared_mutex.hpp"

namespace ipc {

inline constexpr std::uint32_t kHashMapLayoutVersion = 1;

enum class MapStatus : std::uint8_t {
  ok,
  not_found,       // no such key
  already_exists,  // insert(): the key is present (nothing changed)
  mismatch,        // compare_exchange(): the current value differs from `expected`
  too_large,       // key or value longer than the map's max_key_bytes / max_value_bytes
  full,            // the shard reached max_load_factor and growth is disabled
  no_space,        // growth needs a new table and the segment has no room for it
  cancelled,       // update(): the callback returned false; nothing changed
  lock_failed,     // the shard lock is not recoverable
  corrupted,       // a table offset or table header is invalid; recreate the map
};
const char* to_string(MapStatus s) noexcept;

struct MapOptions {
  std::uint32_t shards = 16;            // 1..kMaxShards
  std::uint32_t initial_capacity = 64;  // slots per shard; rounded up to a power of two, >= 8
  std::uint32_t max_key_bytes = 64;     // 1..65535
  std::uint32_t max_value_bytes = 256;  // 0..kMaxValueBytes
  double max_load_factor = 0.75;        // (0, 0.95]: (full + tombstones) / capacity before a rehash
  bool allow_growth = true;             // false: a shard at its load limit returns `full`
};

struct ShardStats {
  std::uint64_t size = 0;
  std::uint64_t tombstones = 0;
  std::uint64_t capacity = 0;
  double load_factor = 0;          // size / capacity
  std::uint64_t generation = 0;    // of the current table: 1 + number of rehashes
  std::uint64_t lock_waits = 0;    // lock calls that found the lock busy
  std::uint64_t lock_wait_ns = 0;  // total time those calls waited
  std::uint64_t probe_max = 0;     // longest probe sequence seen (slots)
  double probe_avg = 0;            // mean probe length of inserts
  std::uint64_t rehashes = 0;
  std::uint64_t repairs = 0;  // owner_died repairs of this shard
};
struct MapStats {
  std::vector<ShardStats> shards;
  std::uint64_t size = 0;
};

class BytesMap {
 public:
  static constexpr std::uint32_t kMaxShards = 4096;
  static constexpr std::uint32_t kMaxValueBytes = 1u << 20;
  // Map names leave room for the table suffix ".s<shard>.g<generation>".
  static constexpr std::size_t kMaxNameLength = kMaxObjectNameLength - 28;

  // Value visitor: the stored bytes, valid only during the call.
  using ValueFn = detail::FunctionRef<void(std::string_view value)>;
  // Update callback: `value` spans max_value_bytes, its first `length` bytes
  // are the current value; change bytes and `length` in place. Return true
  // to commit, false to roll back (status cancelled).
  using UpdateFn = detail::FunctionRef<bool(std::span<std::byte> value, std::uint32_t& length)>;
  using EntryFn = detail::FunctionRef<void(std::string_view key, std::string_view value)>;

  // Creates the map and every shard's first table. Throws invalid_argument
  // (bad name or options, message says which), already_exists, no_space
  // (the segment cannot hold the tables: create the segment larger).
  static BytesMap create(Segment& segment, std::string_view name, const MapOptions& options = {});
  // Opens an existing map after validating its header. Throws not_found,
  // type_mismatch (object of another type), bad_magic, version_mismatch,
  // corrupted, or not_found if its creator died before finishing it.
  static BytesMap open(Segment& segment, std::string_view name);
  // Opens the map, or creates it if absent (concurrent callers: one creates).
  static BytesMap open_or_create(Segment& segment, std::string_view name, const MapOptions& options = {});
  // Removes the map header and all its tables (also of a half-created map).
  // Nobody may use the map meanwhile. Returns false if nothing was there.
  static bool remove(Segment& segment, std::string_view name);
  // Segment bytes needed by a freshly created map (header + first tables),
  // directory slots not included. Growth needs more: up to 3× per shard
  // transiently while a table doubles.
  static std::size_t bytes_needed(const MapOptions& options);

  // ---- lookups (shared lock) ----
  MapStatus get(std::string_view key, std::string& value) const;
  // Calls fn(value) under the shard's shared lock; not_found if absent.
  MapStatus visit(std::string_view key, ValueFn fn) const;
  bool contains(std::string_view key) const;

  // ---- modifications (exclusive lock) ----
  MapStatus insert(std::string_view key, std::string_view value);  // already_exists if present
  // ok either way; *inserted (if given) tells which happened.
  MapStatus insert_or_assign(std::string_view key, std::string_view value, bool* inserted = nullptr);
  MapStatus erase(std::string_view key);
  MapStatus update(std::string_view key, UpdateFn fn);
  // Replaces the value by `desired` only if it equals `expected` (bytewise).
  MapStatus compare_exchange(std::string_view key, std::string_view expected, std::string_view desired);

  // ---- batches: keys grouped by shard, each shard locked once ----
  // statuses[i] is the result for keys[i]; fn(i, value) runs for each found key.
  void get_many(std::span<const std::string_view> keys, std::span<MapStatus> statuses,
                detail::FunctionRef<void(std::size_t index, std::string_view value)> fn) const;
  // insert_or_assign of every pair; statuses[i] for entries[i].
  void put_many(std::span<const std::pair<std::string_view, std::string_view>> entries, std::span<MapStatus> statuses);

  // ---- iteration: one shard at a time, consistent within it (shared lock) ----
  MapStatus for_each_in_shard(std::uint32_t shard, EntryFn fn) const;
  MapStatus for_each(EntryFn fn) const;

  std::size_t size() const noexcept;  // sum of shard sizes (racy across shards)
  MapStatus clear();                  // shard by shard
  MapStats stats() const;             // lock-free snapshot, any process

  std::uint32_t shard_count() const noexcept { return shard_count_; }
  std::uint32_t shard_of(std::string_view key) const noexcept;
  std::uint32_t max_key_bytes() const noexcept { return max_key_; }
  std::uint32_t max_value_bytes() const noexcept { return max_value_; }
  const std::string& name() const noexcept { return name_; }

  // The calling thread's message for its last too_large / full / no_space /
  // lock_failed / corrupted status (names the map and shard, says what to do).
  static const std::string& last_error() noexcept;

  struct Shard;
  struct Table;

 private:
  BytesMap() = default;
  static BytesMap attach(Segment& segment, const Object& obj, std::string_view name);

  Table* table(const Shard& s) const noexcept;
  MapStatus lock_exclusive(std::uint32_t i) const;
  MapStatus lock_shared(std::uint32_t i) const;
  void repair(std::uint32_t i) const;
  MapStatus rehash(std::uint32_t i, std::uint64_t new_capacity) const;
  MapStatus make_room(std::uint32_t i) const;
  MapStatus check_sizes(std::string_view key, std::size_t value_len) const;
  MapStatus assign_locked(std::uint32_t i, std::string_view key, std::uint64_t hash, std::string_view value,
                          bool must_be_new, bool* inserted) const;
  std::byte* journal(std::uint32_t i) const noexcept;
  std::string table_name(std::uint32_t shard, std::uint64_t generation) const;
  MapStatus fail(MapStatus s, std::string message) const;

  Segment* segment_ = nullptr;
  std::byte* header_ = nullptr;
  Shard* shards_ = nullptr;
  std::uint32_t shard_count_ = 0;
  std::uint32_t max_key_ = 0;
  std::uint32_t max_value_ = 0;
  std::uint32_t entry_size_ = 0;
  std::uint32_t key_stride_ = 0;  // max_key_ rounded up to 8
  std::uint32_t load_permille_ = 0;
  bool allow_growth_ = true;
  std::string name_;
};

// Typed front end: keys and values are copied into shared memory as bytes.
// K and V must be trivially copyable: a byte copy must be a valid object in
// another process (no pointers, no owning members such as std::string — use
// BytesMap for variable-size data). K must have unique object representations
// because keys are hashed and compared as bytes (padding or floating point
// would make equal keys unequal).
template <typename K, typename V>
class HashMap {
  static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>,
                "HashMap<K, V> copies K and V as bytes into shared memory: both must be trivially copyable "
                "(for variable-size data use BytesMap)");
  static_assert(std::has_unique_object_representations_v<K>,
                "HashMap keys are hashed and compared bytewise: K must have no padding and no floating point");
  static_assert(sizeof(K) <= 65535 && sizeof(V) <= BytesMap::kMaxValueBytes, "K or V is too large for a map entry");

 public:
  static HashMap create(Segment& segment, std::string_view name, MapOptions options = {}) {
    options.max_key_bytes = sizeof(K);
    options.max_value_bytes = sizeof(V);
    return HashMap(BytesMap::create(segment, name, options));
  }
  // Throws invalid_argument if the map's key/value sizes are not sizeof(K)/sizeof(V).
  static HashMap open(Segment& segment, std::string_view name) {
    return HashMap(checked(BytesMap::open(segment, name)));
  }
  static HashMap open_or_create(Segment& segment, std::string_view name, MapOptions options = {}) {
    options.max_key_bytes = sizeof(K);
    options.max_value_bytes = sizeof(V);
    return HashMap(checked(BytesMap::open_or_create(segment, name, options)));
  }

  std::optional<V> get(const K& key) const {
    std::optional<V> out;
    map_.visit(bytes(key), [&](std::string_view v) { out.emplace(load<V>(v.data())); });
    return out;
  }
  bool contains(const K& key) const { return map_.contains(bytes(key)); }
  MapStatus insert(const K& key, const V& value) { return map_.insert(bytes(key), bytes(value)); }
  MapStatus insert_or_assign(const K& key, const V& value, bool* inserted = nullptr) {
    return map_.insert_or_assign(bytes(key), bytes(value), inserted);
  }
  MapStatus erase(const K& key) { return map_.erase(bytes(key)); }
  // fn(V&) runs under the shard's exclusive lock; its change is journaled.
  template <typename F>
  MapStatus update(const K& key, F&& fn) {
    return map_.update(bytes(key), [&](std::span<std::byte> value, std::uint32_t&) {
      V v = load<V>(value.data());
      fn(v);
      std::memcpy(value.data(), &v, sizeof(V));
      return true;
    });
  }
  MapStatus compare_exchange(const K& key, const V& expected, const V& desired) {
    static_assert(std::has_unique_object_representations_v<V>,
                  "compare_exchange compares values bytewise: V must have no padding and no floating point");
    return map_.compare_exchange(bytes(key), bytes(expected), bytes(desired));
  }

  // out[i] = value of keys[i], or nullopt.
  void get_many(std::span<const K> keys, std::span<std::optional<V>> out) const {
    std::vector<std::string_view> k(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) k[i] = bytes(keys[i]);
    std::vector<MapStatus> st(keys.size());
    for (auto& o : out) o.reset();
    map_.get_many(k, st, [&](std::size_t i, std::string_view v) { out[i].emplace(load<V>(v.data())); });
  }
  void put_many(std::span<const std::pair<K, V>> entries, std::span<MapStatus> statuses) {
    std::vector<std::pair<std::string_view, std::string_view>> e(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) e[i] = {bytes(entries[i].first), bytes(entries[i].second)};
    map_.put_many(e, statuses);
  }
  template <typename F>  // fn(const K&, const V&)
  MapStatus for_each_in_shard(std::uint32_t shard, F&& fn) const {
    return map_.for_each_in_shard(
        shard, [&](std::string_view k, std::string_view v) { fn(load<K>(k.data()), load<V>(v.data())); });
  }
  template <typename F>
  MapStatus for_each(F&& fn) const {
    return map_.for_each([&](std::string_view k, std::string_view v) { fn(load<K>(k.data()), load<V>(v.data())); });
  }

  std::size_t size() const noexcept { return map_.size(); }
  MapStatus clear() { return map_.clear(); }
  MapStats stats() const { return map_.stats(); }
  std::uint32_t shard_count() const noexcept { return map_.shard_count(); }
  std::uint32_t shard_of(const K& key) const noexcept { return map_.shard_of(bytes(key)); }
  BytesMap& bytes_map() noexcept { return map_; }
  const BytesMap& bytes_map() const noexcept { return map_; }

 private:
  explicit HashMap(BytesMap m) : map_(std::move(m)) {}
  template <typename T>
  static std::string_view bytes(const T& t) noexcept {
    return std::string_view(reinterpret_cast<const char*>(&t), sizeof(T));
  }
  template <typename T>
  static T load(const void* p) noexcept {
    T t;
    std::memcpy(&t, p, sizeof(T));
    return t;
  }
  static BytesMap checked(BytesMap m) {
    if (m.max_key_bytes() != sizeof(K) || m.max_value_bytes() != sizeof(V))
      throw Error(ErrorCode::invalid_argument,
                  "hash map '" + m.name() + "' holds " + std::to_string(m.max_key_bytes()) + "-byte keys and " +
                      std::to_string(m.max_value_bytes()) +
                      "-byte values, but HashMap<K, V> has sizeof(K) = " + std::to_string(sizeof(K)) +
                      ", sizeof(V) = " + std::to_string(sizeof(V)) + "; open it with matching types or as a BytesMap");
    return m;
  }

  BytesMap map_;
};

}  // namespace ipc
