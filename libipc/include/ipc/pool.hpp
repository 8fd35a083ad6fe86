// ipc/pool.hpp — pre-allocated buffer pools in shared memory, with exact
// per-process ownership so that a killed process leaks nothing.
//
// Types: `PoolConfig`, `BufferHandle` (16 bytes, what travels between
// processes), `Buffer` (RAII view in this process), `AllocStatus`,
// `Priority`, `PressureLevel`, `PoolStats`/`ClassStats`/`ClientStats`, and
// `BufferPool` (this process's handle on a pool object in a segment).
//
// A pool is one named object (ObjectType::pool) in a segment. Its size classes
// (e.g. 64 B … 64 KiB) each hold `buffers_per_class` buffers, all allocated at
// creation (slab strategy). Layout, all offsets relative to the pool object:
//
//   PoolHeader      magic, layout version, pool id, class count, config,
//                   pool-wide counters (bytes claimed, pressure level), the
//                   `freed` Event that waiting allocators sleep on
//   ClassHeader[c]  per class: buffer size, count, reserve, offsets of its
//                   descriptors / hint bitmap / data; `claimed` counter on
//                   its own line; statistics on another line
//   ClientSlot[64]  per process: {pid, token, buffers, bytes} for budgets and
//                   "who holds what"
//   per class:      Descriptor[count] (64 B each), hint bitmap, data (64-B
//                   aligned buffers)
//
// Descriptor (one cache line):
//   state    64-bit: owner pid << 32 | generation. Owner 0 = free. THE
//            authoritative ownership word: a buffer is claimed by one CAS
//            (0, g) → (me, g+1), so the owner is recorded in the same atomic
//            step that takes the buffer — there is no window in which a
//            buffer is taken but unattributed (a Treiber free list has one:
//            popped, owner not yet written). The generation makes every claim
//            distinct: a handle carries it, and a stale handle (freed,
//            reclaimed, re-allocated) is detected.
//   token    owner's identity token (detail/process.hpp: liveness, immune to pid reuse)
//   holders  kMaxHolders 32-bit holder ids (pids), for attribution;
//   refmask  bit k set = holders[k] is a counted reference. The allocator is
//            holder 0 (refmask 1). retain(): reserve a slot (CAS 0 → id), then
//            set its bit by CAS — only while refmask != 0, else the buffer is
//            already going away (stale). release(): clear the bit by CAS, then
//            the slot; the caller whose CAS takes refmask to 0 frees the
//            buffer — one atomic decision, so concurrent releases can never
//            both (or neither) free it. A slot without its bit is a retain or
//            release that did not finish, never a reference; reclaim(pid)
//            clears the dead pid's bits and slots.
//   cached   1 while the buffer sits in its owner's per-handle cache.
//
// Hint bitmap: bit i set = "descriptor i is probably free". It only speeds
// up the search; the descriptor's state decides. A claimer clears the bit
// after its CAS; a freer sets it after its CAS; a stale bit costs one failed
// CAS, a missing bit is found by the slow path (a full descriptor scan when
// the bitmap shows nothing). So no crash between the two steps leaks a
// buffer. This is the pool's lock-free free list: ABA-safe because claims
// are CASes on the generation-tagged descriptor word, not on a list head.
// (Boost.Lockfree's freelist/stack is not used: it stores node pointers, is
// process-private, and a pop cannot record its owner atomically.)
//
// Freeing and caching are CASes from the exact word of the incarnation whose
// last reference was dropped ((owner, g) → (0, g), or → (me, g+1) with
// `cached` set), so a reclaimer finishing a dead holder's free and the owner
// can never both act on one buffer, nor on a newer incarnation of it.
//
// Allocation (normal path, lock-free):
//   A1 admission: claimed += 1 (fetch_add); if the class would dip into its
//      reserve (normal priority) or the pool/client budget is exceeded, undo
//      and fail. A death here leaves the counter one high: reclaim_dead()
//      and reclaim(pid) recompute every counter from the descriptors.
//   A2 claim a descriptor by CAS (see above), then clear its hint bit.
//   A3 holders[0] = me.
// Free (the last holder's release):
//   F1 state CAS (owner, g) → (0, g); F2 set the hint bit; F3 claimed -= 1;
//      F4 notify `freed` if allocators wait.
// A death between A2 and A3, or F1 and F3: the descriptor says who owns it
// (or that it is free); reclaim(pid) frees every buffer whose owner is pid,
// drops pid from every holder list, and recomputes the counters.
//
// Per-handle cache: a BufferPool handle keeps up to `cache_per_class`
// buffers per class that it claimed but does not use (cached = 1, still owned
// by this pid, so reclaim returns them if the process dies). An allocation
// from the cache touches only the buffer's own descriptor line: this is what
// is meant to make alloc+free approach malloc (a shared free list alone is
// ~12 ns vs malloc's ~6-11 ns; measured: see docs/architecture.md).
// A freed buffer is kept in the cache only while its class is less than half
// used, so idle caches cannot starve other processes. The cache is flushed
// when the handle closes.
//
// Concurrency: the shared pool takes any number of processes and threads. A
// BufferPool *handle* is not thread-safe (its cache is unsynchronised):
// give each thread its own handle (open() is cheap); they share the pool.
// Buffers refer to the handle that made them: release them before it closes.
// A handle is per process: after fork() the child opens its own.
//
// Accounting: per class `claimed` (admissions, see A1), pool `claimed_bytes`,
// and per client slot {admitted per class, bytes} are separate atomics,
// adjusted at admission and free. A process killed between two of those
// updates leaves them out of step (no per-process record can close the gap
// between an RMW and the record of it). So the counters are only a fast
// estimate: the descriptors are authoritative, and reclaim(pid) /
// reclaim_dead() / recount() recompute every counter from them — exact when
// no allocation or free runs meanwhile; allocations in flight during a
// recount leave the counters off by that many until the next recount (so a
// reserve or budget can be overshot by a few buffers, transiently). Nothing
// that decides ownership or unmapping reads the counters. They are compared
// as signed values, so a drift below zero can never make a pool look full.
// Client slots hold the pid throughout: pid | registering while a process
// fills its slot (token before pid, so another handle of the same process
// never mistakes it for a dead predecessor), pid | reclaiming while a
// reclaimer empties a dead pid's slot — a registrant or reclaimer killed
// there leaves a slot that the next pass recognises by its dead pid and
// finishes.
// One record does matter for correctness: a holder that drops the last
// reference and is killed before freeing would orphan the buffer (its
// owner, if alive, never frees it). So drop() first writes {class, index,
// descriptor word} to its client slot (kOpFree) and clears it after the
// free; reclaim() frees a buffer whose descriptor still has that word and no
// holders.
//
// Exhaustion policy per pool: fail (return exhausted at once), wait (sleep
// on the `freed` Event until a buffer is freed or the timeout passes), or
// grow: add an extension segment holding another full set of buffers.
//
// Large buffers (LargeStrategy buddy / best_fit). One region of min-blocks
// with one descriptor per block; the descriptor of a run's first block (its
// head: owner, generation, run length) is the only authoritative record. The
// used-block bitmap is derived from the heads and changed only under the
// region's robust mutex:
//   R1 lock; find a run (buddy: aligned 2^k; best fit: smallest gap);
//   R2 head.run = n, head.state = (me, g+1); R3 set the run's bits; unlock.
//   free: lock; clear the bits; head.state = (0, g); unlock.
// A death inside the lock: the next locker gets owner_died and rebuilds the
// bitmap and the used count from the heads. Handles of region buffers have
// size_class == kRegionClass and index == head block; holders, retain,
// release, transfer and reclaim work as for slab buffers. The region belongs
// to the base pool (extensions have none) and has no per-handle cache.
//
// Growth. An extension is a segment of its own, named
// "<segment>-px<pool id>-<i>", holding a pool object with the same classes
// (no per-handle caches, so an idle extension is really empty). The base
// pool's header has a table of kMaxExtensions entries {state, segment
// generation, empty-since}, changed under a robust mutex:
//   G1 lock; an extension with room may have appeared meanwhile → use it;
//   G2 entry i: state = creating; G3 create the segment and pool (atomic:
//      Segment::create publishes with linkat); G4 generation, state = active;
//      unlock. A creator dying in G2–G4 leaves "creating": the next locker
//      gets owner_died, unlinks that segment name if it exists, frees the entry.
// Other processes map an extension on first use (an allocation scanning the
// table, or a handle whose `extension` is i). Handles carry the extension
// index, so any process resolves them.
// Shrink with hysteresis: shrink() (also tried on flush) releases an
// extension that has been empty for shrink_delay:
//   S1 lock; state = retiring (seq_cst); S2 re-check that every class's
//      `claimed` is 0, else back to active; S3 unlink, state = none; unlock.
// S2 checks the class counters *and* every descriptor (seq_cst): safety does
// not rest on the counters, which can drift (see Accounting). An allocator
// that claimed a descriptor in an extension (A2, seq_cst CAS) re-reads the
// entry word (seq_cst) and gives the buffer back if it is not active: with
// S1/S2 that is a Dekker pair, so no buffer is handed out of a retired
// extension. A shrinker dying in S1–S3 leaves "retiring": the lock repair
// turns it back to active if its segment still exists (the next shrink()
// re-checks), or finishes it to none if S3 had unlinked it. Processes drop their
// mapping when the entry's epoch changes or it is none; nobody holds a buffer
// in a retired extension, so no pointer into the mapping is live.
//
// Implementation (libipc/src/pool_state.hpp): BufferPool::State (one part:
// size classes, caches, A/F steps) composes LargeRegion (R1–R7: allocate,
// free, lock repair), ExtensionTable (G1–G4, S1–S3, lock repair L1–L3, part
// lookup M1–M3) and ClientTable (register J1–J5, the pending-free record
// D1–D2, reclaim bookkeeping K1–K5); take()/share() below (T1–T5, H1–H6).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/event.hpp"
#include "ipc/segment.hpp"

namespace ipc {

// What travels between processes. Plain data: copy it into a channel slot.
struct BufferHandle {
  std::uint32_t pool_id = 0;     // which pool (checked: a foreign handle is refused)
  std::uint16_t size_class = 0;  // class index
  std::uint16_t extension = 0;   // 0: the base pool; i: extension segment i
  std::uint32_t index = 0;       // buffer within the class
  std::uint32_t generation = 0;  // claim generation (stale handles are refused)
  bool valid() const noexcept { return pool_id != 0; }
  friend bool operator==(const BufferHandle&, const BufferHandle&) = default;
};
static_assert(sizeof(BufferHandle) == 16);

enum class AllocStatus : std::uint8_t {
  ok,
  exhausted,       // no free buffer in the class (or only the reserve is left)
  too_large,       // bigger than the largest size class
  over_budget,     // the pool's or this client's byte budget would be exceeded
  timed_out,       // wait policy: no buffer was freed in time
  no_client_slot,  // more than kMaxClients processes use the pool
};
const char* to_string(AllocStatus s) noexcept;

enum class Priority : std::uint8_t { normal, high };

enum class ExhaustionPolicy : std::uint8_t { fail, wait, grow };

// How a pool serves sizes above its largest slab class (or all sizes, if it
// has no slab classes): from one region of min-blocks, under a robust mutex.
//   buddy:    runs of 2^k min-blocks aligned to 2^k (power-of-two sizes,
//             buddies coalesce implicitly: free space is derived, see below)
//   best_fit: runs of exactly ceil(size / min_block) blocks, taken from the
//             smallest free gap that fits
enum class LargeStrategy : std::uint8_t { none, buddy, best_fit };

// Utilisation thresholds (bytes claimed / capacity or budget).
enum class PressureLevel : std::uint8_t { none, low, medium, high, critical };
const char* to_string(PressureLevel l) noexcept;
inline constexpr double kPressureThresholds[] = {0.6, 0.8, 0.9, 0.95};  // low, medium, high, critical

struct PoolConfig {
  std::vector<std::size_t> class_sizes{64, 256, 1024, 4096, 16384, 65536};  // payload bytes, ascending
  std::uint32_t buffers_per_class = 20;
  std::uint32_t reserve_per_class = 0;  // buffers only Priority::high may take
  ExhaustionPolicy policy = ExhaustionPolicy::fail;
  std::chrono::milliseconds wait_timeout{1000};  // for ExhaustionPolicy::wait
  std::uint64_t budget_bytes = 0;                // pool-wide cap on bytes claimed (0 = capacity)
  std::uint64_t client_budget_bytes = 0;         // per-process cap (0 = none)
  std::uint32_t cache_per_class = 8;             // per-handle cache (0 = off)
  LargeStrategy large_strategy = LargeStrategy::none;
  std::size_t large_region_bytes = 0;            // size of the region for large buffers
  std::size_t large_min_block = 4096;            // its granularity (a power of two >= 64)
  std::uint32_t max_extensions = 0;              // ExhaustionPolicy::grow: up to this many extension segments
  std::chrono::milliseconds shrink_delay{1000};  // an extension empty this long is released by shrink()
};

struct ClassStats {
  std::size_t buffer_size = 0;
  std::uint32_t capacity = 0;
  std::uint32_t reserve = 0;
  std::uint32_t in_use = 0;  // claimed by processes (includes per-handle caches)
  std::uint32_t cached = 0;  // of those, idle in caches
  std::uint32_t peak = 0;
  std::uint64_t allocs = 0;  // published by handles every 64 operations and on close
  std::uint64_t frees = 0;
  std::uint64_t failures = 0;
};

struct ClientStats {
  std::uint32_t pid = 0;
  std::uint32_t buffers = 0;  // owned (allocated, not yet freed), cache included
  std::uint64_t bytes = 0;
  bool alive = true;
};

struct PoolStats {
  std::string name;
  std::uint32_t pool_id = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t claimed_bytes = 0;
  PressureLevel pressure = PressureLevel::none;
  double fragmentation = 0;  // 1 - requested bytes / claimed bytes (internal fragmentation)
  std::vector<ClassStats> classes;
  std::vector<ClientStats> clients;
};

class BufferPool;

// A buffer in this process: RAII over one reference. Move-only. The
// destructor releases the reference (frees the buffer if it was the last).
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }
  const BufferHandle& handle() const noexcept { return handle_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  // Gives up this object's reference without releasing it (e.g. it now
  // belongs to a channel slot). Returns the handle.
  BufferHandle detach() noexcept;
  void reset() noexcept;

 private:
  friend class BufferPool;
  Buffer(void* pool, BufferHandle h, std::byte* data, std::size_t capacity) noexcept
      : pool_(pool), handle_(h), data_(data), capacity_(capacity) {}
  void* pool_ = nullptr;  // BufferPool::State of the handle that made it
  BufferHandle handle_{};
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
};

struct Allocation {
  Buffer buffer;
  AllocStatus status = AllocStatus::ok;
  explicit operator bool() const noexcept { return status == AllocStatus::ok; }
};

class BufferPool {
 public:
  static constexpr int kMaxHolders = 10;
  static constexpr int kMaxClients = 64;
  static constexpr int kMaxClasses = 32;
  static constexpr std::uint16_t kRegionClass = 0xffff;  // BufferHandle::size_class of large-region buffers

  // Creates the pool object `name` in `segment` (throws already_exists,
  // no_space with the bytes needed, invalid_argument for a bad config).
  static BufferPool create(Segment& segment, std::string_view name, const PoolConfig& config = {});
  // Opens an existing pool. Throws not_found, bad_magic (not an initialised
  // pool), version_mismatch, or corrupted (inconsistent header fields).
  static BufferPool open(Segment& segment, std::string_view name);
  // Bytes a pool object with this config needs in its segment.
  static std::size_t bytes_needed(const PoolConfig& config);

  BufferPool(BufferPool&& other) noexcept;
  BufferPool& operator=(BufferPool&& other) noexcept;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();  // returns this handle's cached buffers to the pool

  // Hot path: never throws. The smallest class that holds `size` bytes.
  [[nodiscard]] Allocation allocate(std::size_t size, Priority priority = Priority::normal) noexcept;
  // As allocate, waiting up to `timeout` for a free buffer whatever the policy.
  [[nodiscard]] Allocation allocate_for(std::size_t size, std::chrono::nanoseconds timeout,
                                        Priority priority = Priority::normal) noexcept;

  // Handles from other processes. Errors are clear and never crash:
  // foreign pool, class/index out of range, stale generation (freed,
  // reclaimed or reused), or not held.
  enum class HandleStatus : std::uint8_t { ok, foreign_pool, bad_class, bad_index, stale, not_held, too_many_holders };
  static const char* to_string(HandleStatus s) noexcept;
  // Pointer to the buffer's bytes, after validating the handle (nullptr + status on error).
  std::byte* resolve(const BufferHandle& h, HandleStatus* status = nullptr) const noexcept;
  // A hint, nothing else: starts fetching the handle's descriptor and first
  // data line (a receiver about to take or share it; channels call it while
  // they read the slot, so the transfers overlap). Ignores invalid handles.
  void prefetch(const BufferHandle& h) const noexcept;
  // Adds a reference for `holder` (a pid; default: this process). The caller
  // must itself hold a reference (retain of a freed buffer is refused: stale).
  HandleStatus retain(const BufferHandle& h, std::uint32_t holder = 0) noexcept;
  // Drops one reference of `holder` (default: this process); frees the buffer
  // when it was the last. Freed twice → stale / not_held, nothing changes.
  HandleStatus release(const BufferHandle& h, std::uint32_t holder = 0) noexcept;
  // Moves one reference from `from` to `to` in one atomic step (zero-copy
  // hand-over through a channel: sender → receiver).
  HandleStatus transfer(const BufferHandle& h, std::uint32_t from, std::uint32_t to) noexcept;
  // Takes over a reference held by `holder` as a Buffer of this process
  // (changes the holder id to this pid). On failure the reference stays
  // with from_holder (take() drops it instead). No client slot (more than
  // kMaxClients processes) is reported as too_many_holders.
  std::optional<Buffer> adopt(const BufferHandle& h, std::uint32_t from_holder,
                              HandleStatus* status = nullptr) noexcept;

  // Receiving a handle: one call per handle. The two receivers need two
  // different things: a point-to-point receiver takes over the reference
  // its slot held (the count stays the same: take); a broadcast subscriber
  // adds a reference of its own while the slot keeps its one for the other
  // subscribers (the count grows by one: share). Both validate the handle
  // once, map an extension part once, and return the Buffer or nullopt
  // with *status; neither leaves a reference behind that nobody will drop.
  //
  // take(): the reference `from_holder` (non-zero: a channel slot's holder
  // id) holds becomes this process's, as a Buffer (Channel C3).
  //   T1 resolve the handle's part (maps an extension on first use) and
  //      register this process's client slot if it has none (ClientTable
  //      J1–J5);
  //   T2 validate: pool id, part, class, index; the descriptor word must be
  //      (owner != 0, the handle's generation) and not cached;
  //   T3 one CAS on the holder slot k whose refmask bit is set:
  //      holders[k] from_holder → this pid. The reference word (generation |
  //      refmask) is not written: the count is unchanged, only its holder;
  //   T4 the Buffer (process-local, nothing shared is written);
  //   T5 only if T2 passed but T3 could not be done — no client slot
  //      (status too_many_holders): from_holder's reference is dropped as
  //      release(h, from_holder) would (the last reference frees the buffer,
  //      F1–F4); not_held (from_holder holds no counted reference): the same
  //      drop finds nothing and changes nothing.
  // Stale (freed, reclaimed, re-allocated, cached), foreign (another pool,
  // an extension this process cannot map), bad_class and bad_index handles
  // change nothing and return nullopt with that status: the handle holds no
  // reference this call could drop.
  // A caller killed in take(): before T3 the reference is still
  // from_holder's (a channel recoverer releases it under the slot's holder
  // id, channel R2); after T3 it is the dead pid's and reclaim(pid) drops it.
  // T3 is one CAS, so exactly one of them holds it — a survivor never sees
  // it both held twice or lost. A death in T5 is a death in release(),
  // with one gap: T5 runs without a client slot, so there is no
  // pending-free record (D1); killed between clearing the last refmask bit
  // and F1, it leaves the buffer claimed by its owner until the owner is
  // reclaimed (as the release() receivers called before take() existed).
  std::optional<Buffer> take(const BufferHandle& h, std::uint32_t from_holder, HandleStatus* status = nullptr) noexcept;

  // share(): adds a counted reference of this process and returns it as a
  // Buffer (Broadcast S3); the caller does not hold one already, the slot
  // (or another holder) does.
  //   H1 as T1; no client slot → too_many_holders, nothing is written (no
  //      reference is added that could not become a Buffer);
  //   H2 as T2;
  //   H3 reserve a free holder slot: holders[k] CAS 0 → this pid;
  //   H4 set bit k of the reference word by CAS, only while the word's
  //      generation is the handle's and its mask is non-zero: if the last
  //      reference went meanwhile the handle is stale, slot k is given back
  //      (CAS pid → 0) and nothing is counted — never a reference on the
  //      buffer's next incarnation;
  //   H5 all kMaxHolders slots in use: H2–H4 again (sched_yield between
  //      tries) for up to `holder_wait` (0: once), then too_many_holders;
  //   H6 the Buffer.
  // Returns nullopt with foreign_pool, bad_class, bad_index, stale (as for
  // take: nothing changes) or too_many_holders.
  // A caller killed in share(): between H3 and H4 its slot is reserved but
  // has no bit — not a reference: releases skip it and reclaim(pid) frees
  // the slot; after H4 the reference is the dead pid's and reclaim(pid)
  // drops it (freeing the buffer if it was the last). Survivors' references
  // are never touched.
  std::optional<Buffer> share(const BufferHandle& h, std::chrono::nanoseconds holder_wait = {},
                              HandleStatus* status = nullptr) noexcept;
  std::uint32_t holders(const BufferHandle& h) const noexcept;

  // Returns every buffer `pid` owned or held (it is dead: the broker calls
  // this on client death). Returns how many buffers were freed. Recomputes
  // the counters. Refused (0, logged) unless `pid` is provably dead: taking
  // a live process's buffers would free memory it still writes.
  std::uint32_t reclaim(std::uint32_t pid) noexcept;
  // reclaim() for every owner/holder that is provably dead (identity token; detail/process.hpp).
  std::uint32_t reclaim_dead() noexcept;
  // Recomputes every counter from the descriptors (reclaim does it too).
  // Exact when nothing allocates or frees meanwhile.
  void recount() noexcept;
  // Full scan: buffers owned or held by `pid` right now.
  std::vector<BufferHandle> held_by(std::uint32_t pid) const;

  // Pressure handlers of this process, called (highest priority first) from
  // allocate/release in this handle when the pool's level changes.
  using PressureHandler = std::function<void(PressureLevel now, PressureLevel before)>;
  void on_pressure(int priority, PressureHandler handler);
  PressureLevel pressure() const noexcept;

  PoolStats stats() const;
  // Returns this handle's cached buffers to the pool; publishes its counters.
  void flush() noexcept;

  std::uint32_t pool_id() const noexcept;
  // A 14-bit tag for the holder ids of one ring (ring::slot_holder in
  // ipc/detail/ring.hpp), distinct for the next 16384 calls on this pool
  // from any process (a counter in the pool header). Channels and broadcasts
  // created with this pool take theirs here: two rings with one tag would
  // share holder ids, and recovering one ring's slot could release the
  // other ring's reference to the same buffer.
  std::uint32_t next_holder_tag() noexcept;
  // Extension segments currently active (growth).
  std::uint32_t extensions() const noexcept;
  // Releases extensions that have been empty for shrink_delay; returns how many.
  std::uint32_t shrink() noexcept;
  static constexpr std::uint32_t kMaxExtensions = 15;
  const std::string& name() const noexcept { return name_; }
  std::size_t class_count() const noexcept;
  std::size_t class_size(std::size_t c) const noexcept;

 public:
  // Implementation detail: everything of this handle, on the heap (Buffers
  // point at it). Declared in libipc/src/pool_state.hpp with the classes it
  // composes (LargeRegion, ExtensionTable, ClientTable).
  struct State;

 private:
  friend class Buffer;
  explicit BufferPool(std::unique_ptr<State> s) noexcept;
  Allocation allocate_impl(std::size_t size, Priority priority, std::uint64_t deadline_ns) noexcept;
  std::unique_ptr<State> s_;
  std::string name_;
};

}  // namespace ipc
