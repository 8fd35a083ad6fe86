// ipc/channel.hpp — point-to-point ring channels between processes: SPSC and
// MPMC, carrying small payloads inline and large ones as pool buffer handles
// (zero copy), with blocking, timed, non-blocking, batched and pollable
// receive, a backpressure policy, and recovery of slots a dead process held.
//
// Types: `ChannelKind`, `Backpressure`, `ChannelConfig`, `SendStatus`,
// `ReceiveStatus`, `ChannelStats`, `Channel` (this process's handle on a
// channel object), `ChannelPoller` (a pollable fd for a receiver).
//
// Layout (one object, ObjectType::channel; slot format in ipc/detail/ring.hpp):
//   line 0   immutable after create: magic, version, kind, policy, capacity,
//            slot_bytes, pool id, ring tag, default spin
//   line 1   producer side: tail (next position to claim), sends, drops,
//            recovered claims, blocked time — written by producers only
//   line 2   consumer side: head (next position to read), receives, blocked
//   line 3   data_waiters (consumers asleep or polling): read by every send
//   line 4   space_waiters (producers asleep): read by every receive
//   Event data, Event space  (ipc/event.hpp: futex + pollable listeners)
//   slots    capacity × slot_bytes
// Producers touch only tail and slots, consumers only head and slots (plus
// one read of the other side's waiter line), so in steady state a message
// costs the slot's cache lines and nothing else (Vyukov's bounded queue,
// with the per-slot sequence extended by state and owner).
//
// The slot word is the truth; head and tail are hints that anyone may
// advance past a slot that is already claimed ("helping"), so a claimer
// killed before advancing them stalls nobody.
//
// Send (producer P, position pos = tail):
//   P1 claim: word (pos, empty) → (pos, writing, P)   CAS (SPSC: store)
//   P2 tail pos → pos+1 (CAS; failure = someone helped)
//   P3 write handles, bytes, counts into the slot
//   P4 move each buffer's reference to the slot: pool.transfer(P → slot holder)
//   P5 commit: word → (pos, full)                       seq_cst
//   P6 if data_waiters: notify data
// Receive (consumer C, position pos = head):
//   C1 claim: word (pos, full) → (pos, reading, C)     CAS (SPSC: store)
//   C2 head pos → pos+1
//   C3 copy the inline bytes; pool.take(slot holder → C) each handle
//   C4 handles = 0; word → (pos + capacity, empty)     seq_cst
//   C5 if space_waiters: notify space
// Full: the slot at tail still serves pos - capacity. Empty: the slot at head
// is (pos, empty) or (pos, writing).
//
// Crash behaviour. A slot left in `writing` or `reading` by a dead process
// is recovered by whoever next finds it in the way (a consumer waiting at a
// writing slot, a producer that finds the ring "full" because of a reading
// slot; checked after kStuckCheck of no progress), or by reclaim(pid):
//   R1 CAS the observed word → (pos, reading, me)  (one recoverer wins; a
//      recoverer killed here leaves a reading slot that is recovered again)
//   R2 release every handle in the slot under the slot holder id (a handle
//      the dead process had not yet transferred, or had already adopted, is
//      not held by the slot: release is a no-op; the dead process's own
//      references go back with pool.reclaim(pid))
//   R3 handles = 0; word → (pos + capacity, empty); recovered += 1
// So a producer killed in P1–P5 loses only its uncommitted message; a
// consumer killed in C1–C4 loses only the message it had taken. Committed
// messages are never lost or duplicated. Liveness uses the pid (the slot
// word has no room for a start time): a recycled pid delays recovery until
// that process exits or reclaim(pid) is called; it never causes a wrong one
// (in a domain spanning PID namespaces, detail/process.hpp says how a bare
// pid is judged).
// A death in a sleep leaves a waiter count one high: a spare notify per
// message, nothing worse. Counters (sends, …) are statistics only.
//
// Concurrency: MPMC — any number of producer and consumer threads/processes.
// SPSC — one producer and one consumer at a time (a successor may take over
// after the previous one died or detached); it saves the claim CASes.
// A Channel handle may be used by several threads of one process for MPMC.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "ipc/channel_message.hpp"
#include "ipc/detail/ring.hpp"
#include "ipc/event.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace ipc {

enum class ChannelKind : std::uint8_t { spsc, mpmc };
// What send() does when the ring is full.
enum class Backpressure : std::uint8_t {
  block,        // wait for space (up to the timeout)
  drop_oldest,  // discard the oldest unread message (counted in drops)
  fail,         // return SendStatus::full at once
};

struct ChannelConfig {
  ChannelKind kind = ChannelKind::mpmc;
  std::uint32_t capacity = 256;    // slots; a power of two, 2 … 65536
  std::uint32_t slot_bytes = 128;  // per slot, header (16 B) included; a multiple of 64, ≤ 64 KiB
  Backpressure backpressure = Backpressure::block;
  std::uint32_t spin = 0;  // default polls of the ring before a blocking call sleeps (0: sleep at once)
};

// SendStatus, ReceiveStatus and Message: ipc/channel_message.hpp (shared with broadcast).

struct ChannelStats {
  std::string name;
  ChannelKind kind = ChannelKind::mpmc;
  Backpressure backpressure = Backpressure::block;
  std::uint32_t capacity = 0;
  std::uint32_t slot_bytes = 0;
  std::uint64_t depth = 0;  // messages sent and not yet received (approximate under traffic)
  std::uint64_t sends = 0;
  std::uint64_t receives = 0;
  std::uint64_t drops = 0;      // Backpressure::drop_oldest discards
  std::uint64_t recovered = 0;  // slots recovered from dead processes
  std::uint64_t send_blocked_ns = 0;
  std::uint64_t receive_blocked_ns = 0;
  std::uint32_t data_waiters = 0;
  std::uint32_t space_waiters = 0;
};

class Channel {
 public:
  // A dead claimer is looked for once a slot shows no progress for this long.
  static constexpr std::chrono::milliseconds kStuckCheck = ring::kStuckCheck;

  // Creates the channel object `name` in `segment`. `pool` is needed to send
  // or receive buffers (its id is recorded: every user must open that pool).
  // Throws invalid_argument (capacity not a power of two in 2…65536,
  // slot_bytes not a multiple of 64 in 64…65536), already_exists, no_space.
  static Channel create(Segment& segment, std::string_view name, const ChannelConfig& config = {},
                        BufferPool* pool = nullptr);
  // Opens an existing channel. Throws not_found, type_mismatch (the name is
  // an object of another type, as Segment::open_object says), bad_magic /
  // version_mismatch / corrupted, or
  // invalid_argument when `pool` is not the pool the channel was created
  // with — or is missing although it was created with one (a process that
  // cannot release slot references must not touch slots that hold them).
  static Channel open(Segment& segment, std::string_view name, BufferPool* pool = nullptr);
  static std::size_t bytes_needed(const ChannelConfig& config);

  Channel(Channel&&) noexcept;
  Channel& operator=(Channel&&) noexcept;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  // ---- send. On ok the buffers' references moved into the channel (the
  // Buffer objects are emptied); on any other status nothing changed.
  [[nodiscard]] SendStatus try_send(std::span<const std::byte> bytes, std::span<Buffer> buffers = {}) noexcept;
  // As try_send, then per the backpressure policy: block waits up to
  // `timeout`, drop_oldest discards the oldest message, fail returns full.
  [[nodiscard]] SendStatus send(std::span<const std::byte> bytes, std::span<Buffer> buffers = {},
                                std::chrono::nanoseconds timeout = kForever) noexcept;
  // One buffer as the payload, with optional inline bytes (e.g. its length).
  [[nodiscard]] SendStatus send(Buffer&& buffer, std::span<const std::byte> bytes = {},
                                std::chrono::nanoseconds timeout = kForever) noexcept;
  // Sends messages in order under the policy; wakes receivers once. Returns
  // how many were sent (stops at the first that is not ok; *status says why).
  std::size_t send_batch(std::span<const std::span<const std::byte>> messages,
                         std::chrono::nanoseconds timeout = kForever, SendStatus* status = nullptr) noexcept;

  // ---- receive. `out` is cleared first; on ok it holds the message.
  [[nodiscard]] ReceiveStatus try_receive(Message& out) noexcept;
  // Polls `spin` times (default: the channel's), then sleeps until a message
  // arrives or `timeout` passes. A zero timeout is try_receive.
  [[nodiscard]] ReceiveStatus receive(Message& out, std::chrono::nanoseconds timeout = kForever) noexcept;
  [[nodiscard]] ReceiveStatus receive_spin(Message& out, std::uint32_t spin, std::chrono::nanoseconds timeout) noexcept;
  // Fills up to out.size() messages; waits (up to timeout) only for the
  // first. Returns how many were received.
  std::size_t receive_batch(std::span<Message> out, std::chrono::nanoseconds timeout = kForever) noexcept;

  // ---- crash recovery, maintenance
  // Recovers every slot `pid` (dead) left writing or reading. Returns how
  // many. Refused (0, logged) unless `pid` is provably dead.
  std::uint32_t reclaim(std::uint32_t pid) noexcept;
  // reclaim() for every slot whose claimer is provably dead.
  std::uint32_t reclaim_dead() noexcept;
  // Discards every unread message (releasing its buffers). Returns how many.
  // It is a receive: on an SPSC channel only the consumer may call it.
  std::uint32_t discard_all() noexcept;

  ChannelStats stats() const;
  std::uint32_t capacity() const noexcept;
  std::size_t max_payload() const noexcept;  // slot_bytes - 16
  ChannelKind kind() const noexcept;
  const std::string& name() const noexcept;

  struct State;  // implementation detail

 private:
  friend class ChannelPoller;
  explicit Channel(std::unique_ptr<State> s) noexcept;
  std::unique_ptr<State> s_;
};

// A pollable receive side: fd() becomes readable when a message may have
// arrived. While a poller exists, senders notify (one extra atomic per send).
//   ChannelPoller poller(channel);   // add poller.fd() to epoll (EPOLLIN)
//   for (;;) {
//     poller.arm();
//     while (channel.try_receive(msg) == ReceiveStatus::ok) handle(msg);
//     epoll_wait(...);
//     poller.drain();
//   }
// The receive after arm() is what makes it race-free: a message committed
// before arm() is found by it, one after makes the fd readable.
// Give epoll_wait a timeout (e.g. 50 ms) and call try_receive after it: a
// slot left `writing` by a killed producer is only recovered by a receive
// that finds it stuck for Channel::kStuckCheck, and no notification comes
// for it.
class ChannelPoller : public ring::WaitingListener {
 public:
  explicit ChannelPoller(Channel& channel);  // throws no_space (listener slots), see EventListener
};

}  // namespace ipc
