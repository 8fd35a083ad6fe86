// ipc/endpoint.hpp — typed, zero-copy Cap'n Proto endpoints over ring
// channels (point-to-point, work queue) and broadcast channels (fan-out).
//
// Types: `Publisher<Schema>` (with `Publisher<Schema>::Loan`, a message being
// built in shared memory), `Subscriber<Schema>` (with `Received<Schema>`, a
// message read in place), `TypedStatus`, `kMessageSlotBytes`.
//
//   ipc::Publisher<Task> pub(channel, pool);
//   auto loan = pub.loan();                   // a MessageBuilder in pool buffers
//   loan.root().setId(42);                    // writes go straight to shm
//   pub.send(std::move(loan));                // seals; only handles cross
//
//   ipc::Subscriber<Task> sub(channel);       // channel opened with the pool
//   ipc::Received<Task> msg;
//   if (sub.receive(msg, 1s) == ipc::TypedStatus::ok) use(msg.root().getId());
//
// What crosses the channel: the message's buffer handles (1 … 8, buffer 0
// first; see ipc/message.hpp for the layout) and no inline bytes. A channel
// or broadcast carrying messages needs slots with room for 8 handles:
// slot_bytes ≥ kMessageSlotBytes (a message with more segments than the
// slot holds is refused with SendStatus::too_large).
//
// Freezing: send() consumes the Loan (std::move(loan)), so after send() the
// sender has no builder; readers hold references. Do not keep a
// Schema::Builder obtained from loan.root() past send(): its arena is gone
// (setting a pointer field through it is a use-after-free) and a scalar
// written through it changes a message others are reading. Debug builds of libipc verify the seal-time checksum on
// receive (ReaderConfig::checksum), which catches a write after send.
//
// Lifetime: a Received<Schema> holds references to the message buffers
// until it is reset or destroyed (for broadcast: the buffer is returned to
// the pool when the ring has overwritten the slot and the last subscriber
// dropped its Received). How many a process can hold is bounded by the
// pool's capacity and budgets: a publisher that cannot get buffers gets
// TypedStatus::no_buffers (never a deadlock).
//
// Bad messages: a receive that finds a malformed message (bad header, bad
// segment table, pointers out of range, limits exceeded — checked by
// MessageReader::parse and, unless SubscriberConfig::check_all is false, by a
// full traversal up front) returns TypedStatus::malformed with the reason in
// last_error(); the message is dropped and the channel moves on.
//
// Concurrency: an endpoint object belongs to one thread at a time; any
// number of endpoints in any processes may share a channel (MPMC) or a
// broadcast.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "ipc/broadcast.hpp"
#include "ipc/channel.hpp"
#include "ipc/error.hpp"
#include "ipc/message.hpp"

namespace ipc {

inline constexpr std::uint32_t kMessageSlotBytes =
    ((ring::kSlotHeaderBytes + MessageHeader::kMaxSegments * ring::kHandleBytes + 63) / 64) * 64;  // 192

enum class TypedStatus : std::uint8_t {
  ok,
  empty,       // try_receive: nothing there
  timed_out,   // receive / blocking send: nothing arrived, no room in time
  full,        // try_send or Backpressure::fail: the ring is full (the message is dropped)
  too_large,   // more segments than the slot holds handles (create the channel with kMessageSlotBytes)
  no_buffers,  // the pool could not give the message's buffers (exhausted / over budget)
  malformed,   // a received message failed validation (last_error() says why); it was dropped
  failed,      // anything else (last_error() says what)
};
const char* to_string(TypedStatus s) noexcept;

namespace detail {
TypedStatus typed_status(SendStatus s) noexcept;
}

template <class Schema>
class Publisher {
 public:
  // A message being built directly in pool buffers.
  class Loan {
   public:
    Loan(Loan&&) noexcept = default;
    Loan& operator=(Loan&&) noexcept = default;
    // The root struct (initialised on first call). Capnp setters may throw
    // ipc::Error(no_space) when the pool has no buffer for a new segment.
    typename Schema::Builder root() {
      if (!rooted_) {
        rooted_ = true;
        return builder_->template initRoot<Schema>();
      }
      return builder_->template getRoot<Schema>();
    }
    MessageBuilder& builder() noexcept { return *builder_; }

   private:
    friend class Publisher;
    explicit Loan(std::unique_ptr<MessageBuilder> b) noexcept : builder_(std::move(b)) {}
    std::unique_ptr<MessageBuilder> builder_;  // on the heap: capnp's arena points into it
    bool rooted_ = false;
  };

  // `first_buffer_bytes`: default size of a message's first buffer (header
  // included); size it to your typical message to keep messages in one
  // segment. The channel/broadcast and the pool must outlive the endpoint.
  Publisher(Channel& channel, BufferPool& pool,
            std::size_t first_buffer_bytes = MessageBuilder::kDefaultFirstBufferBytes)
      : target_(&channel), pool_(&pool), first_buffer_bytes_(first_buffer_bytes) {}
  Publisher(Broadcast& broadcast, BufferPool& pool,
            std::size_t first_buffer_bytes = MessageBuilder::kDefaultFirstBufferBytes)
      : target_(&broadcast), pool_(&pool), first_buffer_bytes_(first_buffer_bytes) {}

  // A new message. `first_buffer_bytes` 0: the publisher's default.
  Loan loan(std::size_t first_buffer_bytes = 0) {
    return Loan(
        std::make_unique<MessageBuilder>(*pool_, first_buffer_bytes ? first_buffer_bytes : first_buffer_bytes_));
  }

  // Seals the message and sends its handles. Channel: per its backpressure
  // policy, waiting up to `timeout`; broadcast: per its policy. On any
  // status but ok the message is dropped (its buffers go back to the pool).
  TypedStatus send(Loan&& loan, std::chrono::nanoseconds timeout = kForever) {
    Loan l = std::move(loan);
    if (!l.builder_ || !l.rooted_) {
      error_ = "publisher: send() of a loan without a root (call loan.root() first)";
      return TypedStatus::failed;
    }
    SealedMessage sealed = std::move(*l.builder_).seal();
    return send_sealed(std::move(sealed), timeout);
  }
  TypedStatus send_sealed(SealedMessage&& sealed, std::chrono::nanoseconds timeout = kForever) {
    std::vector<Buffer> buffers = sealed.take_buffers();
    SendStatus st;
    if (auto* c = std::get_if<Channel*>(&target_))
      st = (*c)->send({}, std::span<Buffer>(buffers), timeout);
    else
      st = std::get<Broadcast*>(target_)->publish({}, std::span<Buffer>(buffers), timeout);
    if (st != SendStatus::ok)
      error_ = std::string("publisher: send failed: ") + to_string(st);
    else
      error_.clear();
    return detail::typed_status(st);
  }
  // Builds and sends in one call: fill(root) writes the message.
  template <class Fill>
  TypedStatus publish(Fill&& fill, std::chrono::nanoseconds timeout = kForever) {
    try {
      Loan l = loan();
      std::forward<Fill>(fill)(l.root());
      return send(std::move(l), timeout);
    } catch (const Error& e) {
      error_ = e.what();
      return e.code() == ErrorCode::no_space ? TypedStatus::no_buffers : TypedStatus::failed;
    } catch (const kj::Exception& e) {  // capnp refused a value (e.g. a Text with a NUL)
      error_ = std::string("publisher: capnp: ") + e.getDescription().cStr();
      return TypedStatus::failed;
    }
  }

  const std::string& last_error() const noexcept { return error_; }

 private:
  std::variant<Channel*, Broadcast*> target_;
  BufferPool* pool_;
  std::size_t first_buffer_bytes_;
  std::string error_;
};

// A received message, read in place from shared memory.
template <class Schema>
class Received {
 public:
  Received() = default;
  // A moved-from Received is empty (the defaulted moves would leave its
  // optional engaged with a moved-from reader: true, and root() on null).
  Received(Received&& o) noexcept
      : reader_(std::exchange(o.reader_, std::nullopt)), missed_(o.missed_), position_(o.position_) {}
  Received& operator=(Received&& o) noexcept {
    if (this != &o) {
      reader_ = std::exchange(o.reader_, std::nullopt);
      missed_ = o.missed_;
      position_ = o.position_;
    }
    return *this;
  }

  explicit operator bool() const noexcept { return reader_.has_value(); }
  // Lazy capnp accessors: with SubscriberConfig::check_all (the default) the
  // structure was verified at receive, so they do not throw on pointers.
  typename Schema::Reader root() { return reader_->template root<Schema>(); }
  MessageReader& reader() noexcept { return *reader_; }
  // Broadcast, lossy: messages missed right before this one.
  std::uint64_t missed() const noexcept { return missed_; }
  std::uint64_t position() const noexcept { return position_; }
  void reset() noexcept { reader_.reset(); }

 private:
  template <class>
  friend class Subscriber;
  std::optional<MessageReader> reader_;
  std::uint64_t missed_ = 0;
  std::uint64_t position_ = 0;
};

struct SubscriberConfig {
  ReaderConfig reader{};  // capnp traversal / nesting limits, checksum verification
  bool check_all = true;  // traverse every pointer at receive (a malformed message is refused up front)
};

template <class Schema>
class Subscriber {
 public:
  // Point-to-point: takes messages from `channel` (competing with other
  // subscribers of the channel: each message goes to one of them).
  // The channel (or broadcast) must have been opened with the pool its
  // messages come from: it takes their references over.
  explicit Subscriber(Channel& channel, SubscriberConfig config = {}) : source_(&channel), config_(config) {}
  // Fan-out: every message of the broadcast, from this subscription's cursor.
  explicit Subscriber(Subscription&& subscription, SubscriberConfig config = {})
      : source_(std::make_unique<Subscription>(std::move(subscription))), config_(config) {}

  TypedStatus try_receive(Received<Schema>& out) { return receive(out, std::chrono::nanoseconds::zero()); }

  // Waits up to `timeout` for the next message and validates it.
  TypedStatus receive(Received<Schema>& out, std::chrono::nanoseconds timeout = kForever) {
    out.reset();
    ReceiveStatus st;
    if (auto* c = std::get_if<Channel*>(&source_))
      st = timeout == std::chrono::nanoseconds::zero() ? (*c)->try_receive(message_) : (*c)->receive(message_, timeout);
    else {
      Subscription& s = *std::get<std::unique_ptr<Subscription>>(source_);
      st = timeout == std::chrono::nanoseconds::zero() ? s.try_receive(message_) : s.receive(message_, timeout);
    }
    if (st == ReceiveStatus::empty) return TypedStatus::empty;
    if (st == ReceiveStatus::timed_out) return TypedStatus::timed_out;
    out.missed_ = message_.missed();
    out.position_ = message_.position();
    if (message_.lost_buffers() != 0) {
      error_ = "subscriber: " + std::to_string(message_.lost_buffers()) +
               " buffer(s) of the message could not be taken over (too many concurrent holders of one buffer, "
               "or reclaimed meanwhile); message dropped";
      message_.clear();
      return TypedStatus::malformed;
    }
    MessageStatus ms = MessageStatus::ok;
    std::optional<MessageReader> r = MessageReader::parse(std::move(message_.buffers()), config_.reader, &error_, &ms);
    message_.clear();
    if (!r) return TypedStatus::malformed;
    if (config_.check_all && r->check_all(&error_) != MessageStatus::ok) return TypedStatus::malformed;
    out.reader_ = std::move(r);
    return TypedStatus::ok;
  }

  const std::string& last_error() const noexcept { return error_; }

 private:
  std::variant<Channel*, std::unique_ptr<Subscription>> source_;
  SubscriberConfig config_;
  Message message_;
  std::string error_;
};

}  // namespace ipc
