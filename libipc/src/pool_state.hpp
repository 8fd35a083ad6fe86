// pool_state.hpp (private to libipc/src) — the process-local structure of a
// BufferPool handle, shared by pool.cpp and pool_*.cpp.
//
// The shared layout (PoolHeader, PoolClass, PoolClient, PoolDescriptor,
// PoolRegion) is a segment format: pool.hpp describes it, and it must stay
// byte-for-byte as it is (kPoolLayoutVersion 1). Only the C++ structure of
// this process's view of it is defined here:
//
//   BufferPool::State   one pool part (the base pool, or one extension): the
//                       size classes — descriptors, hint bitmaps, the
//                       per-handle caches, admission (A1–A3), free (F1–F4),
//                       the reference word — composing:
//   LargeRegion         the large-buffer region (base pool only): buddy /
//                       best-fit runs, their free, the lock repair
//   ExtensionTable      the extension segments (base pool only): grow,
//                       retire/shrink, lock repair, part lookup
//   ClientTable         the per-process client slots of one part: register,
//                       per-client budgets, the pending-free record, reclaim
//                       bookkeeping
//
// Files: pool.cpp (create/open/validation), pool_alloc.cpp (size-class
// allocate/free, caches), pool_refs.cpp (retain/release/transfer/adopt/take/
// share, the reference word), pool_region.cpp (LargeRegion), pool_growth.cpp
// (ExtensionTable), pool_reclaim.cpp (ClientTable, reclaim, recount),
// pool_stats.cpp (statistics, pressure levels, handlers).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipc/detail/function_ref.hpp"
#include "ipc/event.hpp"
#include "ipc/mutex.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace ipc {
namespace pool_detail {

inline constexpr std::uint64_t kPoolMagic = 0x314c4f4f50435049ull;  // "IPCPOOL1"
inline constexpr std::uint32_t kPoolLayoutVersion = 1;
inline constexpr std::size_t kLine = 64;
inline constexpr std::uint32_t kCachedBit = 0x80000000u;
inline constexpr std::uint32_t kPublishEvery = 64;

inline std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }
inline std::uint32_t owner_of(std::uint64_t state) { return static_cast<std::uint32_t>(state >> 32); }
inline std::uint32_t gen_of(std::uint64_t state) { return static_cast<std::uint32_t>(state); }
inline std::uint64_t make_state(std::uint32_t owner, std::uint32_t gen) { return std::uint64_t{owner} << 32 | gen; }

}  // namespace pool_detail

// ---- shared layout (a segment format: do not change) ---------------------------

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
  alignas(pool_detail::kLine) std::atomic<std::uint64_t> claimed_bytes;  // base pool: bytes admitted in all parts
  std::atomic<std::uint32_t> pressure;
  // Holder tags handed to rings (BufferPool::next_holder_tag). Was padding:
  // a pool made before it starts at 0, which is as good as any start.
  std::atomic<std::uint32_t> next_holder_tag;
  alignas(pool_detail::kLine) std::atomic<std::uint32_t> alloc_waiters;  // allocators about to sleep on `freed`
  alignas(pool_detail::kLine) Event freed;
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

struct PoolClass {
  std::uint64_t buffer_size;
  std::uint64_t stride;
  std::uint32_t count;
  std::uint32_t reserve;
  std::uint64_t desc_offset;
  std::uint64_t bitmap_offset;
  std::uint64_t data_offset;
  alignas(pool_detail::kLine) std::atomic<std::uint32_t> claimed;  // admissions (A1); == owned descriptors at rest
  std::atomic<std::uint32_t> peak;
  alignas(pool_detail::kLine) std::atomic<std::uint64_t> allocs;
  std::atomic<std::uint64_t> frees;
  std::atomic<std::uint64_t> failures;
  std::atomic<std::int64_t> cached;
};

struct alignas(pool_detail::kLine) PoolClient {
  std::atomic<std::uint32_t> pid;  // 0 = free
  std::uint32_t pad;
  std::atomic<std::uint64_t> token;
  std::atomic<std::uint64_t> bytes;                              // admitted bytes
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
// The segment format, pinned (layout version 1): sizes of every shared struct.
static_assert(sizeof(PoolHeader) == 3008 && alignof(PoolHeader) == 64);
static_assert(sizeof(PoolHeader::Extension) == 32);
static_assert(sizeof(PoolClass) == 192 && alignof(PoolClass) == 64);
static_assert(sizeof(PoolRegion) == 256 && alignof(PoolRegion) == 64);
// Every field offset, pinned as well (the layout lines above name them).
static_assert(offsetof(PoolHeader, magic) == 0 && offsetof(PoolHeader, layout_version) == 8 &&
              offsetof(PoolHeader, pool_id) == 12);
static_assert(offsetof(PoolHeader, class_count) == 16 && offsetof(PoolHeader, buffers_per_class) == 20 &&
              offsetof(PoolHeader, cache_per_class) == 24);
static_assert(offsetof(PoolHeader, policy) == 28 && offsetof(PoolHeader, wait_timeout_ns) == 32 &&
              offsetof(PoolHeader, budget_bytes) == 40);
static_assert(offsetof(PoolHeader, client_budget_bytes) == 48 && offsetof(PoolHeader, capacity_bytes) == 56 &&
              offsetof(PoolHeader, total_bytes) == 64);
static_assert(offsetof(PoolHeader, class_offset) == 72 && offsetof(PoolHeader, client_offset) == 80 &&
              offsetof(PoolHeader, max_extensions) == 88);
static_assert(offsetof(PoolHeader, extension_index) == 92 && offsetof(PoolHeader, region_offset) == 96 &&
              offsetof(PoolHeader, shrink_delay_ns) == 104);
static_assert(offsetof(PoolHeader, claimed_bytes) == 128 && offsetof(PoolHeader, pressure) == 136 &&
              offsetof(PoolHeader, next_holder_tag) == 140 && offsetof(PoolHeader, alloc_waiters) == 192);
static_assert(offsetof(PoolHeader, freed) == 256 && offsetof(PoolHeader, ext_lock) == 2368 &&
              offsetof(PoolHeader, ext) == 2496);
static_assert(offsetof(PoolClass, buffer_size) == 0 && offsetof(PoolClass, stride) == 8 &&
              offsetof(PoolClass, count) == 16);
static_assert(offsetof(PoolClass, reserve) == 20 && offsetof(PoolClass, desc_offset) == 24 &&
              offsetof(PoolClass, bitmap_offset) == 32);
static_assert(offsetof(PoolClass, data_offset) == 40 && offsetof(PoolClass, claimed) == 64 &&
              offsetof(PoolClass, peak) == 68);
static_assert(offsetof(PoolClass, allocs) == 128 && offsetof(PoolClass, frees) == 136 &&
              offsetof(PoolClass, failures) == 144);
static_assert(offsetof(PoolClass, cached) == 152);
static_assert(offsetof(PoolRegion, strategy) == 0 && offsetof(PoolRegion, blocks) == 4 &&
              offsetof(PoolRegion, min_block) == 8);
static_assert(offsetof(PoolRegion, desc_offset) == 16 && offsetof(PoolRegion, used_offset) == 24 &&
              offsetof(PoolRegion, data_offset) == 32);
static_assert(offsetof(PoolRegion, lock) == 64 && offsetof(PoolRegion, used_blocks) == 192 &&
              offsetof(PoolRegion, peak_blocks) == 196);
static_assert(offsetof(PoolRegion, allocs) == 200 && offsetof(PoolRegion, frees) == 208 &&
              offsetof(PoolRegion, failures) == 216);
static_assert(offsetof(PoolClient, pid) == 0 && offsetof(PoolClient, token) == 8 && offsetof(PoolClient, bytes) == 16);
static_assert(offsetof(PoolClient, admitted) == 24 && offsetof(PoolClient, op_kind) == 152 &&
              offsetof(PoolClient, op_class) == 156);
static_assert(offsetof(PoolClient, op_index) == 160 && offsetof(PoolClient, op_state) == 168);
static_assert(offsetof(PoolDescriptor, state) == 0 && offsetof(PoolDescriptor, holders) == 8 &&
              offsetof(PoolDescriptor, meta) == 48);
static_assert(offsetof(PoolDescriptor, run) == 52 && offsetof(PoolDescriptor, refword) == 56);

namespace pool_detail {

// Extension table entry word (PoolHeader::Extension::word).
enum : std::uint32_t { kExtNone = 0, kExtCreating = 1, kExtActive = 2, kExtRetiring = 3 };
inline std::uint32_t word_state(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
inline std::uint32_t word_epoch(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
inline std::uint64_t ext_word(std::uint32_t epoch, std::uint32_t state) { return std::uint64_t{epoch} << 32 | state; }

// kOpFree: dropping a reference of descriptor (op_class, op_index) whose
// word was op_state; the buffer is not freed yet.
enum : std::uint32_t { kOpNone = 0, kOpFree = 1 };
// Client slot pid word: pid, or pid | kRegistering while that process fills
// the slot, or pid | kReclaiming while a reclaimer empties a dead pid's slot.
// The pid stays visible, so a slot whose registrant or reclaimer was killed
// is recognised (pid dead) and finished by the next pass. pids are < 2^22.
inline constexpr std::uint32_t kRegistering = 0x80000000u;
inline constexpr std::uint32_t kReclaiming = 0x40000000u;
inline constexpr std::uint32_t kClientPidMask = 0x3fffffffu;

// ---- the reference word (pool_refs.cpp) ---------------------------------------------
inline constexpr std::uint32_t kDropping = 0x80000000u;  // holder slot: being released (pids are < 2^22)
inline std::uint32_t mask_of(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
inline std::uint64_t make_refword(std::uint32_t gen, std::uint32_t mask) { return std::uint64_t{gen} << 32 | mask; }
inline bool all_holders_zero(const PoolDescriptor* d) {
  return mask_of(d->refword.load(std::memory_order_acquire)) == 0;
}
// Releases the counted reference in slot k held by `holder` (slot value
// holder or holder|kDropping): mark, clear the bit, free the slot. Returns
// true when it was the last reference. *dropped: a reference was released.
bool release_slot(PoolDescriptor* d, int k, std::uint32_t holder, bool holder_dead, bool* dropped);
// Removes every reference `pid` holds on d; true if that left the buffer
// unreferenced. Also finishes the dead pid's half-done releases.
bool drop_all_references(PoolDescriptor* d, std::uint32_t pid);
// Does `pid` own or hold the buffer whose descriptor word is `st`?
bool owned_or_held(const PoolDescriptor* d, std::uint64_t st, std::uint32_t pid);

// Per-pid tallies (recount, stats).
using PidCounts = std::vector<std::pair<std::uint32_t, std::uint64_t>>;
void add_count(PidCounts& counts, std::uint32_t pid, std::uint64_t n);

struct UnlockOnExit {
  Mutex& m;
  ~UnlockOnExit() { m.unlock(); }
};

// ---- LargeRegion (pool_region.cpp) ---------------------------------------------------
//
// The large-buffer region of the base pool (LargeStrategy buddy / best_fit):
// `blocks` min-blocks, one descriptor per block. The descriptor of a run's
// first block (its head: owner, generation, run length) is the only
// authoritative record; the used-block bitmap and used_blocks are derived
// from the heads and change only under the region's robust mutex.
//   Allocate (alloc(); the caller has sized the run and registered its
//   client slot):
//     R1 lock; find a run (buddy: aligned 2^k; best fit: the smallest gap
//        that fits); none → exhausted. The caller's `admit` charges the
//        budgets for the run, still under the lock (over_budget: nothing
//        is charged, nothing changes).
//     R2 head.run = n, head.state = (me, g+1);
//     R3 set the run's bits, used_blocks += n; unlock.
//     (The caller then does A3: holders[0] = me, refword = (g+1, 1).)
//   Free (free(); only the incarnation `gen`, optionally only its owner's):
//     R4 lock; the head must still be (owner ≠ 0, gen) with a sane run,
//        else unlock and do nothing (freed or reused meanwhile);
//     R5 clear the run's bits; meta = 0; head.state = (0, g);
//        used_blocks -= n; unlock;
//     R6 the caller refunds the owner's client bytes and wakes waiters.
//   Lock repair:
//     R7 a death anywhere inside the lock (R1–R3, R4–R5) leaves the mutex
//        owner-died: the next locker rebuilds the bitmap and used_blocks from
//        the heads (a head written at R2 counts as allocated, one reset at
//        R5 as free — the bitmap is never trusted), then marks it consistent.
//   A death between R3 and A3 leaves a head owned by the dead pid with no
//   holders: reclaim(pid) frees it. Budgets charged at R1 are recounted from
//   the heads by reclaim / recount.
class LargeRegion {
 public:
  using Admit = detail::FunctionRef<bool(std::uint64_t bytes)>;

  void attach(std::byte* pool_base, PoolRegion* shared, const std::string* pool_name) noexcept {
    base_ = pool_base;
    r_ = shared;
    name_ = pool_name;
  }
  explicit operator bool() const noexcept { return r_ != nullptr; }
  PoolRegion& shared() const noexcept { return *r_; }
  std::uint32_t blocks() const noexcept { return r_->blocks; }
  std::uint64_t min_block() const noexcept { return r_->min_block; }
  PoolDescriptor* desc(std::uint32_t i) const noexcept {
    return reinterpret_cast<PoolDescriptor*>(base_ + r_->desc_offset) + i;
  }
  std::byte* data(std::uint32_t i) const noexcept { return base_ + r_->data_offset + std::uint64_t{i} * r_->min_block; }
  // Bytes of the run headed at `head`.
  std::size_t capacity(std::uint32_t head) const noexcept { return std::size_t{desc(head)->run} * r_->min_block; }
  std::uint64_t used_bytes() const noexcept {
    return std::uint64_t{r_->used_blocks.load(std::memory_order_relaxed)} * r_->min_block;
  }

  // Blocks a buffer of `size` bytes takes (buddy: rounded up to 2^k); 0 if
  // that is more than the region has (too_large).
  std::uint32_t run_for(std::size_t size) const noexcept;
  // R1–R3 for a run of n blocks, owned by `owner`. *head = its first block.
  AllocStatus alloc(std::uint32_t n, std::uint32_t owner, Admit admit, std::uint32_t* head) noexcept;
  // R4–R5: frees the run headed at `head` if it is still incarnation `gen`
  // (and owned by only_owner, if that is non-zero). True if it freed it;
  // *owner and *bytes say whose it was and how big (for R6).
  bool free(std::uint32_t head, std::uint32_t only_owner, std::uint32_t gen, std::uint32_t* owner,
            std::uint64_t* bytes) noexcept;

 private:
  bool lock() noexcept;     // R7 on owner_died
  void rebuild() noexcept;  // R7 (lock held)
  std::atomic<std::uint64_t>* used_bits() const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + r_->used_offset);
  }

  std::byte* base_ = nullptr;
  PoolRegion* r_ = nullptr;
  const std::string* name_ = nullptr;  // the pool's name, for messages
};

// ---- ExtensionTable (pool_growth.cpp) ------------------------------------------------
//
// The base pool's extension segments: kMaxExtensions entries in PoolHeader
// {word = epoch << 32 | state, creator, segment generation, empty-since},
// changed under the header's robust ext_lock, and this process's mappings of
// them. An extension is a segment "<segment>-px<pool id>-<i>" holding a pool
// object "pool" with the base's classes (no caches, no growth, no region).
//   Grow (grow(), when a class is exhausted in every part):
//     G1 lock; an active extension whose class has room may have appeared
//        meanwhile → use it (no new segment);
//     G2 a free entry: word = (epoch+1, creating), creator = me;
//     G3 create the segment and its pool (atomic: Segment::create publishes
//        with linkat), stamped with the base's pool id and the index;
//     G4 generation = the segment's; empty_since = 0; word = (epoch,
//        active); unlock. A failure in G3 unlinks the name and sets none.
//   Shrink (shrink(), also tried on flush): for an extension empty for
//   shrink_delay (no class counter and no owned descriptor):
//     S1 lock; word (epoch, active) → (epoch, retiring) by seq_cst CAS;
//     S2 re-check emptiness (counters and every descriptor, seq_cst) — not
//        empty → back to active;
//     S3 drop our mapping, unlink the segment, word = (epoch, none); unlock.
//     An allocator's A2 (seq_cst descriptor CAS) followed by its seq_cst
//     re-read of the word (admits()) is the other half of a Dekker pair with
//     S1/S2: no buffer is handed out of a retired extension.
//   Lock repair:
//     L1 a grower or shrinker that died holding the lock leaves it
//        owner-died; the next locker repairs every entry:
//     L2 creating (died in G2–G4) → unlink the name if it exists, none;
//     L3 retiring (died in S1–S3) → active if the segment with the entry's
//        generation still exists (S3 not reached; the next shrink()
//        re-checks), else none (S3 had unlinked it); then mark consistent.
//   Part lookup (part(i), lock-free; any process, e.g. to resolve a handle
//   whose `extension` is i):
//     M1 read the entry word (acquire);
//     M2 a mapping of another epoch, or of a none entry, is dropped: that
//        incarnation was retired, so nobody holds a buffer in it;
//     M3 only active or retiring entries resolve (retiring is S1–S2, which
//        reverts to active while anyone holds a buffer); unmapped → open the
//        segment, refuse it unless its generation is the entry's (read after
//        M1: written before the word went active), open its pool, tag the
//        part with index and epoch.
class ExtensionTable {
 public:
  ExtensionTable() = default;
  ExtensionTable(const ExtensionTable&) = delete;
  ExtensionTable& operator=(const ExtensionTable&) = delete;
  ~ExtensionTable();

  // `owner` is the part this table belongs to (only the base pool's table
  // has entries: an extension's header has max_extensions 0).
  void attach(BufferPool::State* owner);
  std::uint32_t capacity() const noexcept;  // max_extensions
  // The entry word says active (acquire): worth trying to allocate from.
  bool active(std::uint16_t i) const noexcept;
  // SYNC POINT (seq_cst) for A1 and the post-A2 re-check: part (i, epoch)
  // may still hand out buffers — the other half of S1/S2.
  bool admits(std::uint16_t i, std::uint32_t epoch) const noexcept;
  std::uint32_t active_count() const noexcept;
  // M1–M3; part(0) is the owner itself; nullptr if not (or not yet) mappable.
  BufferPool::State* part(std::uint16_t i) noexcept;
  // G1–G4: true if some extension (new or found in G1) has room in class c.
  bool grow(std::uint32_t c, Priority priority) noexcept;
  // S1–S3 for every extension empty long enough; returns how many were released.
  std::uint32_t shrink() noexcept;
  // Publishes the statistics of every mapped part.
  void publish() noexcept;
  std::string segment_name(std::uint32_t i) const;

 private:
  struct Mapped {
    Segment segment;
    std::unique_ptr<BufferPool::State> part;
    std::uint32_t epoch = 0;
  };
  bool lock() noexcept;  // L1–L3 on owner_died
  BufferPool::State* install(std::unique_ptr<Mapped> m, std::uint16_t i, std::uint32_t epoch);
  PoolHeader::Extension& entry(std::uint32_t i) const noexcept;

  BufferPool::State* owner_ = nullptr;
  PoolConfig config_;                            // how to build an extension
  std::vector<std::unique_ptr<Mapped>> mapped_;  // index i = extension i (0 unused)
};

// ---- ClientTable (pool_reclaim.cpp) ------------------------------------------------
//
// The per-process client slots of one part (PoolClient[kMaxClients]):
// {pid word, start-time token, admitted bytes (base part), admissions per
// class, the pending-free record}. The base part's `bytes` carry the
// per-client budget; each part's `admitted` its own classes.
//   Register (join(); once per handle and process):
//     J1 our pid already has a slot: with our token → it is ours; another
//        token → a dead predecessor with our pid: reclaim it first;
//     J2 (second pass) a slot whose pid is dead: a registrant
//        (pid | registering) → CAS to 0; a registered client → reclaim it
//        (which frees the slot);
//     J3 reserve a free slot: CAS 0 → pid | registering;
//     J4 token, bytes, admitted[], op_kind = none;
//     J5 publish: pid (release). Another handle of this process never sees
//        our pid without our token (it would take us for a dead predecessor).
//     A registrant killed in J3–J5 leaves pid | registering with a dead pid:
//     J2 (or reap_dead()) frees it.
//   Pending free (the one record that matters for correctness): a holder
//   that drops the last reference and dies before freeing would orphan the
//   buffer if its owner is someone else. So:
//     D1 before dropping a reference of a buffer we do not own:
//        op_class, op_index, op_state (the descriptor word), op_kind = free;
//     D2 after the free (or once the buffer is ours or cached): op_kind = none.
//   Reclaim of a dead pid (State::reclaim() drives it, per part):
//     K1 mark its slot pid | reclaiming (CAS; the pid stays visible, so no
//        new process registers into it; a reclaimer killed later leaves a
//        slot that the next reclaim(pid) finishes);
//     K2 take its pending-free record (State frees the buffer if the
//        descriptor still has that word, no holders and is not cached);
//     K3 (State) drop its references, free what it owned or held last;
//     K4 admissions it made that own no buffer any more (died between A1 and
//        A2) are subtracted from the class counters; its counters and token
//        are zeroed;
//     K5 CAS pid | reclaiming → 0.
//     Every step is idempotent (CASes from observed values): two reclaimers
//     of one pid are safe.
// The counters here are estimates (see pool.hpp "Accounting"); recount()
// rewrites them from the descriptors.
class ClientTable {
 public:
  using Reclaim = detail::FunctionRef<std::uint32_t(std::uint32_t pid)>;
  struct PendingFree {
    std::uint32_t c = 0, index = 0;
    std::uint64_t state = 0;
  };

  void attach(PoolClient* slots) noexcept { slots_ = slots; }
  PoolClient& operator[](int k) const noexcept { return slots_[k]; }
  // This handle's slot in this part (-1: not registered yet).
  int mine() const noexcept { return mine_; }
  // A fork child: the slot is the parent's.
  void forget() noexcept { mine_ = -1; }
  int find(std::uint32_t pid) const noexcept;
  // J1–J5 for `pid` (this process); `reclaim` reclaims a dead pid in this
  // part (and, on the base, everywhere). Returns the slot or -1 (full).
  int join(std::uint32_t pid, Reclaim reclaim) noexcept;
  // J2 for every slot: frees dead registrants' slots and reclaims dead
  // clients. Returns the buffers `reclaim` freed.
  std::uint32_t reap_dead(Reclaim reclaim) noexcept;

  // Accounting (A1 / F3).
  void count_admission(int k, std::uint32_t c) noexcept {
    slots_[k].admitted[c].fetch_add(1, std::memory_order_relaxed);
  }
  void uncount_admission(int k, std::uint32_t c) noexcept {
    slots_[k].admitted[c].fetch_sub(1, std::memory_order_relaxed);
  }
  // Adds `bytes` to slot k's admitted bytes; returns the new total.
  std::uint64_t charge(int k, std::uint64_t bytes) noexcept {
    return slots_[k].bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  }
  void refund(int k, std::uint64_t bytes) noexcept { slots_[k].bytes.fetch_sub(bytes, std::memory_order_relaxed); }

  // D1 (skipped if unregistered or the buffer is `me`'s: reclaim(me) frees it) and D2.
  void begin_free(std::uint32_t c, std::uint32_t i, std::uint64_t state, std::uint32_t me) noexcept {
    if (mine_ < 0 || owner_of(state) == me) return;
    PoolClient& cl = slots_[mine_];
    cl.op_class.store(c, std::memory_order_relaxed);
    cl.op_index.store(i, std::memory_order_relaxed);
    cl.op_state.store(state, std::memory_order_relaxed);
    cl.op_kind.store(kOpFree, std::memory_order_relaxed);
  }
  void end_op() noexcept {
    if (mine_ >= 0 && slots_[mine_].op_kind.load(std::memory_order_relaxed) != kOpNone)
      slots_[mine_].op_kind.store(kOpNone, std::memory_order_relaxed);
  }

  // K1: the dead pid's slot, marked reclaiming (-1: it has none here).
  int begin_reclaim(std::uint32_t dead) noexcept;
  // K2: reads and clears slot k's pending-free record; false if none.
  bool take_pending_free(int k, PendingFree* out) noexcept;
  // K4–K5. still_held[c]: buffers of class c the dead pid still owns (held
  // by others); `forget(c, n)` subtracts n leaked admissions of class c from
  // the part's counters.
  void end_reclaim(int k, std::uint32_t dead, const std::uint32_t* still_held, std::uint32_t classes,
                   detail::FunctionRef<void(std::uint32_t c, std::uint32_t leaked)> forget) noexcept;

  // recount(): admitted[c] / bytes of every slot from per-pid tallies.
  void set_admitted(std::uint32_t c, const PidCounts& per_pid) noexcept;
  void set_bytes(const PidCounts& per_pid) noexcept;
  void describe(std::vector<ClientStats>& out) const;

 private:
  // J2 for slot k holding pid word p: true if its process is dead (then
  // handled; the buffers freed are added to *freed).
  bool reap(int k, std::uint32_t p, Reclaim reclaim, std::uint32_t* freed) noexcept;

  PoolClient* slots_ = nullptr;
  int mine_ = -1;
};

}  // namespace pool_detail

// ---- one part of the pool, as this handle sees it ------------------------------------
//
// The size classes of one part (see pool.hpp for A1–A3, F1–F4, the hint
// bitmap and the per-handle cache), composing the part's ClientTable and —
// in the base part — the LargeRegion and the ExtensionTable. Extension
// parts are owned by the base's ExtensionTable; `root` is the base part
// (budgets, waiters, the extension table, the region).
struct BufferPool::State {
  // create/open: validated, attached. The base pool's handle, or (through
  // ExtensionTable) an extension part before it is tagged.
  static std::unique_ptr<State> create(Segment& segment, std::string_view name, const PoolConfig& config);
  static std::unique_ptr<State> open(Segment& segment, std::string_view name);

  Segment* segment = nullptr;
  State* root = this;           // the base pool's state (budgets, waiters, extension table)
  std::uint16_t ext_index = 0;  // which part of the pool this is
  std::uint32_t ext_epoch = 0;  // an extension part: the incarnation of its table entry
  std::string name;             // the pool's name (an extension part: the base's), for messages
  std::byte* base = nullptr;
  PoolHeader* header = nullptr;
  PoolClass* classes = nullptr;
  std::uint32_t pid = 0;
  pool_detail::ClientTable clients;
  pool_detail::LargeRegion region;         // base only (extensions have none)
  pool_detail::ExtensionTable extensions;  // base only (an extension's is empty)
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
  PoolDescriptor* desc(std::uint32_t c, std::uint32_t i) const {
    if (c == kRegionClass) return region.desc(i);
    return reinterpret_cast<PoolDescriptor*>(base + classes[c].desc_offset) + i;
  }
  std::atomic<std::uint64_t>* bitmap(std::uint32_t c) const {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base + classes[c].bitmap_offset);
  }
  std::byte* data(std::uint32_t c, std::uint32_t i) const {
    if (c == kRegionClass) return region.data(i);
    return base + classes[c].data_offset + std::uint64_t{i} * classes[c].stride;
  }
  // Bytes in use in the whole pool: slab admissions + the region's used blocks.
  std::uint64_t used_bytes() const noexcept {
    auto b = static_cast<std::int64_t>(header->claimed_bytes.load(std::memory_order_acquire));
    if (b < 0) b = 0;  // transient drift below zero between recounts
    if (region) b += static_cast<std::int64_t>(region.used_bytes());
    return static_cast<std::uint64_t>(b);
  }
  State* part(std::uint16_t index) noexcept { return extensions.part(index); }

  // pool.cpp
  void ensure_process() noexcept;
  // pool_reclaim.cpp: this handle's client slot in this part (J1–J5 once).
  int client_slot() noexcept;

  // pool_alloc.cpp: size classes, caches, admission and free
  AllocStatus admit(std::uint32_t c, Priority priority) noexcept;
  void unadmit(std::uint32_t c, std::uint32_t owner_pid, int owner_slot) noexcept;
  bool claim_descriptor(std::uint32_t c, std::uint32_t* index) noexcept;
  AllocStatus claim_shared(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept;
  AllocStatus try_alloc(std::uint32_t c, Priority priority, std::uint32_t* index) noexcept;
  void free_shared(std::uint32_t c, std::uint32_t i, std::uint64_t state) noexcept;
  void release_unreferenced(std::uint32_t c, std::uint32_t i, std::uint32_t gen) noexcept;
  // The large region with this part's budgets and waiters (R1–R3 / R4–R6).
  AllocStatus region_alloc(std::size_t size, std::uint32_t* index) noexcept;
  void region_free(std::uint32_t i, std::uint32_t only_owner, std::uint32_t gen) noexcept;
  void flush() noexcept;

  // pool_refs.cpp: handles and the reference word
  PoolDescriptor* check(const BufferHandle& h, HandleStatus* status) const noexcept;
  HandleStatus add_reference(PoolDescriptor* d, const BufferHandle& h, std::uint32_t holder) noexcept;
  HandleStatus move_reference(PoolDescriptor* d, std::uint32_t from, std::uint32_t to) noexcept;
  HandleStatus drop(PoolDescriptor* d, const BufferHandle& h, std::uint32_t holder) noexcept;
  HandleStatus release(const BufferHandle& h, std::uint32_t holder) noexcept;
  void release_own(const BufferHandle& h) noexcept;
  Buffer make_buffer(const BufferHandle& h) noexcept;

  // pool_growth.cpp: questions ExtensionTable asks a part
  bool has_room(std::uint32_t c, Priority priority) const noexcept;  // G1
  bool unused() const noexcept;                                      // S2 (seq_cst)

  // pool_reclaim.cpp
  std::uint32_t reclaim(std::uint32_t pid) noexcept;
  // On the base state: reclaim in every extension, then here (the base last:
  // it holds the client's byte count). On an extension: reclaim().
  std::uint32_t reclaim_everywhere(std::uint32_t pid) noexcept;
  void finish_dead_op(int dead_slot) noexcept;
  // Sets this part's class `claimed` and its clients' admitted[] from the
  // descriptors; adds slab bytes per owner pid to `bytes`. Returns slab bytes.
  std::uint64_t recount_part(pool_detail::PidCounts& bytes) noexcept;

  // pool_stats.cpp
  void count_op(std::uint32_t c, bool alloc, bool failed) noexcept {
    if (c >= pending.size()) return;  // the large region keeps its own counters
    Pending& p = pending[c];
    if (failed)
      ++p.failures;
    else if (alloc)
      ++p.allocs;
    else
      ++p.frees;
    if (++ops >= pool_detail::kPublishEvery) publish();
  }
  void publish() noexcept;
  PressureLevel level() const noexcept;  // from used_bytes() and the budget / capacity
  void check_pressure() noexcept {
    if (!handlers.empty()) update_pressure();
  }
  void update_pressure() noexcept;
};

}  // namespace ipc
