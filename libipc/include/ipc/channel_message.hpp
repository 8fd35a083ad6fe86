// ipc/channel_message.hpp — what a channel or broadcast receiver gets
// (`Message`: inline bytes plus zero-copy buffers) and what send/receive
// report (`SendStatus`, `ReceiveStatus`). Not to be confused with
// ipc/message.hpp, the Cap'n Proto message built in pool buffers (which
// travels *inside* a Message as buffer handles).
//
// A Message is process-local (heap memory and Buffer references); nothing
// of it lives in shared memory. One thread uses a Message at a time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "ipc/detail/clock.hpp"  // ipc::kForever, the default timeout of every receive
#include "ipc/pool.hpp"

namespace ipc {

enum class SendStatus : std::uint8_t {
  ok,
  full,        // try_send / Backpressure::fail: no free slot
  timed_out,   // blocking send: no slot freed in time
  too_large,   // bytes + 16·buffers exceed the slot payload
  no_pool,     // buffers given, but the channel was opened without a BufferPool
  bad_buffer,  // an empty Buffer, one of another pool, or its reference could not be moved
};
enum class ReceiveStatus : std::uint8_t { ok, empty, timed_out };
const char* to_string(SendStatus s) noexcept;
const char* to_string(ReceiveStatus s) noexcept;

// A received message: its inline bytes (copied out of the slot) and the
// buffers that travelled as handles (zero copy; this process now holds one
// reference to each, released when the Message is cleared or destroyed).
// Reuse one Message across receives: its byte storage is kept.
class Message {
 public:
  Message() = default;
  // A moved-from Message is empty and can receive again.
  Message(Message&& o) noexcept { *this = std::move(o); }
  Message& operator=(Message&& o) noexcept {
    if (this != &o) {
      bytes_ = std::move(o.bytes_);
      capacity_ = std::exchange(o.capacity_, 0);
      size_ = std::exchange(o.size_, 0);
      buffers_ = std::move(o.buffers_);
      o.buffers_.clear();
      position_ = std::exchange(o.position_, 0);
      lost_buffers_ = std::exchange(o.lost_buffers_, 0);
      missed_ = std::exchange(o.missed_, 0);
    }
    return *this;
  }

  std::span<const std::byte> data() const noexcept { return {bytes_.get(), size_}; }
  std::size_t size() const noexcept { return size_; }
  std::vector<Buffer>& buffers() noexcept { return buffers_; }
  const std::vector<Buffer>& buffers() const noexcept { return buffers_; }
  // The ring position this message was sent at (broadcast: its sequence).
  std::uint64_t position() const noexcept { return position_; }
  // Handles that could not be taken over (a buffer that went away: only
  // possible after a reclaim raced the receive). 0 normally.
  std::uint32_t lost_buffers() const noexcept { return lost_buffers_; }
  // Broadcast, lossy policy: messages this subscriber missed (overwritten
  // before it read them) right before this one. 0 for channels.
  std::uint64_t missed() const noexcept { return missed_; }
  void clear() noexcept {
    size_ = 0;
    buffers_.clear();
    lost_buffers_ = 0;
    missed_ = 0;
  }

  // Receive-side plumbing (used by Channel / Subscriber).
  std::byte* prepare(std::size_t n) {
    if (n > capacity_ || !bytes_) {  // never null, so memcpy(prepare(0), src, 0) is defined
      capacity_ = std::max<std::size_t>(n, 64);
      bytes_ = std::make_unique<std::byte[]>(capacity_);
    }
    size_ = n;
    return bytes_.get();
  }
  void set_position(std::uint64_t p) noexcept { position_ = p; }
  void add_lost() noexcept { ++lost_buffers_; }
  void add_missed(std::uint64_t n) noexcept { missed_ += n; }

 private:
  std::unique_ptr<std::byte[]> bytes_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::vector<Buffer> buffers_;
  std::uint64_t position_ = 0;
  std::uint32_t lost_buffers_ = 0;
  std::uint64_t missed_ = 0;
};

}  // namespace ipc
