// ipc/broadcast.hpp — one-to-many channels: any number of publishers, up to
// `max_subscribers` subscribers (default 256, at most 4096), each with its
// own cursor; subscribe and unsubscribe at run time; late joiners; a slow
// subscriber is either overrun and told how many it missed (lossy) or holds
// publishers back (blocking, with a timeout).
//
// Types: `BroadcastPolicy`, `StartAt`, `BroadcastConfig`, `BroadcastStats`,
// `SubscriptionStats`, `Broadcast` (a process's handle on the object: publish,
// subscribe, reclaim), `Subscription` (one subscriber's cursor; the name
// leaves `Subscriber<Schema>` to the typed endpoint in ipc/endpoint.hpp),
// `SubscriptionPoller`.
//
// Why a subscriber limit at all, and why 256: each subscriber owns one
// 64-byte cursor line, which a blocking publisher scans to find the slowest
// reader (and which reclaim scans for dead subscribers). 256 lines = 16 KiB
// is scanned in about a microsecond; the limit is a creation parameter up to
// 4096. The slot ring itself has no per-subscriber state, so fan-out cost
// does not grow with the limit, only with the subscribers actually reading.
//
// Layout (ObjectType::broadcast; slot format in ipc/detail/ring.hpp):
//   line 0   immutable: magic, version, capacity, slot_bytes, policy, pool id,
//            ring tag, max_subscribers, offsets
//   line 1   publishers: tail (next position to claim), publishes, recovered,
//            blocked time
//   line 2   subscriber-claim generation counter
//   line 3   data_waiters (subscribers asleep or polling)
//   line 4   space_waiters (blocking publishers asleep)
//   Event data, Event space
//   SubscriberSlot[max_subscribers] (64 B each): owner (pid << 32 |
//            generation << 1 | active), token (identity, detail/process.hpp), cursor (next
//            position to read), received, missed
//   slots    capacity × slot_bytes; a committed message at position p is
//            (p, full) in slot p mod capacity until position p + capacity
//            overwrites it. Initially slot i is (i, empty).
//
// Publish (publisher P at pos = tail; the slot holds (pos - capacity, full)
// or, in the first lap, (pos, empty)):
//   B0 blocking policy only: wait until every active cursor > pos - capacity
//   B1 claim: CAS word → (pos, writing, P)
//   B2 tail pos → pos+1 (CAS; failure = helped)
//   B3 release the old message's references (slot holder id), handles = 0
//   B4 write bytes and handles, handles = n, transfer each buffer P → slot
//   B5 commit: word → (pos, full)   seq_cst
//   B6 if data_waiters: notify data
// Read (subscriber S at cursor c):
//   S1 w = word (acquire); must be (c, full)
//   S2 copy the inline bytes and handles out
//   S3 pool.share() each handle: a reference of S's own (a pool holder
//      slot; the buffer's generation guarantees the reference is on the
//      message's own incarnation)
//   S4 re-read the word: still w → the copy is the message; else it was
//      overwritten meanwhile → release what S3 took, count an overrun
//   S5 cursor = c + 1 (blocking policy: seq_cst, then notify space if a
//      publisher sleeps)
// A word with seq > c at S1 means position c was overwritten: lossy
// subscribers jump to the oldest retained position and report the gap in
// Message::missed(); blocking subscribers can only see this at join.
//
// Crash behaviour.
//   Publisher dies in B1–B5: the slot stays (pos, writing, P). Whoever finds
//   it in the way (a subscriber waiting at pos, a publisher one lap later;
//   after ring::kStuckCheck without progress, if P is dead) or reclaim(P):
//   R1 CAS (pos, writing, P) → (pos, writing, me); R2 release the handles the
//   slot lists (old or new: the slot's holder id makes that exact); R3 flags
//   = skip, commit (pos, full). Subscribers skip it silently: it was never
//   published.
//   Subscriber dies: its retained references belong to its pid (pool.reclaim
//   returns them); its cursor slot is freed by reclaim(pid), reclaim_dead(),
//   or by a blocking publisher that finds it slowest, stuck and dead.
//   Lossy publishers never look at subscribers at all.
// Zero-copy fan-out bound: a subscriber holding a message holds a pool
// reference (S3), and a pool buffer has BufferPool::kMaxHolders (10) holder
// slots, one of them the ring's. So at most 9 subscribers can *hold the same
// buffer at once*; a 10th retries for up to kHolderWait and then receives
// the message with Message::lost_buffers() set (counted in its stats).
// Inline payloads have no such bound.
//
// Concurrency: any number of publishers (threads/processes); a Subscription
// object belongs to one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "ipc/channel.hpp"
#include "ipc/channel_message.hpp"
#include "ipc/detail/ring.hpp"
#include "ipc/event.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace ipc {

enum class BroadcastPolicy : std::uint8_t {
  lossy,     // publishers never wait; a slow subscriber is overrun and told how many it missed
  blocking,  // publishers wait (up to their timeout) until the slowest subscriber has read the slot
};

// Where a new subscriber starts.
enum class StartAt : std::uint8_t {
  next,    // the first message published after subscribe()
  newest,  // the most recent message already published (if any), then on
  oldest,  // the oldest message still in the ring, then on
};

struct BroadcastConfig {
  std::uint32_t capacity = 256;    // slots: a power of two, 2 … 65536
  std::uint32_t slot_bytes = 128;  // per slot incl. the 16-byte header: a multiple of 64, ≤ 65536
  BroadcastPolicy policy = BroadcastPolicy::lossy;
  std::uint32_t max_subscribers = 256;  // 1 … 4096
};

struct SubscriptionStats {
  std::uint32_t pid = 0;
  std::uint64_t cursor = 0;
  std::uint64_t lag = 0;  // tail - cursor
  std::uint64_t received = 0;
  std::uint64_t missed = 0;
  bool alive = true;
};

struct BroadcastStats {
  std::string name;
  BroadcastPolicy policy = BroadcastPolicy::lossy;
  std::uint32_t capacity = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t max_subscribers = 0;
  std::uint64_t tail = 0;  // messages published so far (positions claimed)
  std::uint64_t publishes = 0;
  std::uint64_t recovered = 0;
  std::uint64_t publish_blocked_ns = 0;
  std::vector<SubscriptionStats> subscribers;
};

class Subscription;

class Broadcast {
 public:
  static constexpr std::uint32_t kMaxSubscribersLimit = 4096;

  // Throws invalid_argument (bad capacity / slot_bytes / max_subscribers),
  // already_exists, no_space. `pool`: needed to publish or receive buffers.
  static Broadcast create(Segment& segment, std::string_view name, const BroadcastConfig& config = {},
                          BufferPool* pool = nullptr);
  // Throws not_found, type_mismatch (the name is an object of another type),
  // invalid_argument (another pool, or none although it carries buffers),
  // bad_magic / version_mismatch / corrupted.
  static Broadcast open(Segment& segment, std::string_view name, BufferPool* pool = nullptr);
  static std::size_t bytes_needed(const BroadcastConfig& config);

  Broadcast(Broadcast&&) noexcept;
  Broadcast& operator=(Broadcast&&) noexcept;
  ~Broadcast();

  // On ok the buffers' references moved into the ring. Lossy: never waits.
  // Blocking: waits up to `timeout` for the slowest subscriber (timed_out).
  [[nodiscard]] SendStatus publish(std::span<const std::byte> bytes, std::span<Buffer> buffers = {},
                                   std::chrono::nanoseconds timeout = kForever) noexcept;
  // Blocking policy: returns full instead of waiting. Lossy: as publish.
  [[nodiscard]] SendStatus try_publish(std::span<const std::byte> bytes, std::span<Buffer> buffers = {}) noexcept;

  // Joins as a new subscriber. Throws no_space (all max_subscribers cursor
  // slots belong to live processes: say which limit and how to raise it).
  Subscription subscribe(StartAt start = StartAt::next);

  // Frees the cursor slots of `pid` (dead) and recovers ring slots it left
  // `writing`. Its retained buffers return with pool.reclaim(pid). Refused
  // (0, logged) unless `pid` is provably dead.
  std::uint32_t reclaim(std::uint32_t pid) noexcept;
  std::uint32_t reclaim_dead() noexcept;

  BroadcastStats stats() const;
  std::uint32_t capacity() const noexcept;
  std::size_t max_payload() const noexcept;
  const std::string& name() const noexcept;

  struct State;

 private:
  friend class Subscription;
  explicit Broadcast(std::shared_ptr<State> s) noexcept;
  std::shared_ptr<State> s_;
};

class Subscription {
 public:
  static constexpr std::chrono::milliseconds kHolderWait{10};

  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();  // unsubscribes

  // `out` is cleared; on ok it holds the next message (out.missed() > 0 if
  // the lossy policy overran this subscriber just before it).
  [[nodiscard]] ReceiveStatus try_receive(Message& out) noexcept;
  [[nodiscard]] ReceiveStatus receive(Message& out, std::chrono::nanoseconds timeout = kForever) noexcept;
  void unsubscribe() noexcept;
  bool subscribed() const noexcept { return slot_ >= 0; }

  std::uint64_t cursor() const noexcept;
  std::uint64_t lag() const noexcept;     // messages published but not yet read by this subscriber
  std::uint64_t missed() const noexcept;  // total overrun messages
  std::uint64_t received() const noexcept;

 private:
  friend class Broadcast;
  friend class SubscriptionPoller;
  Subscription(std::shared_ptr<Broadcast::State> s, int slot, std::uint64_t owner) noexcept;
  ReceiveStatus take(Message& out) noexcept;
  std::shared_ptr<Broadcast::State> s_;
  int slot_ = -1;
  std::uint64_t owner_ = 0;
  std::uint64_t cursor_ = 0;          // local copy (the slot's cursor is the published one)
  ring::StuckTimer stuck_;            // a dead publisher's slot at our cursor
  std::uint64_t pending_missed_ = 0;  // overrun positions not yet reported with a message
  std::uint32_t empty_polls_ = 0;
};

// Pollable fd for a subscriber; same loop as ChannelPoller (arm, try_receive
// until empty, epoll_wait, drain).
class SubscriptionPoller : public ring::WaitingListener {
 public:
  explicit SubscriptionPoller(Subscription& subscription);
};

}  // namespace ipc
