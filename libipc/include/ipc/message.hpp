// ipc/message.hpp — Cap'n Proto messages built directly in pool buffers and
// read in place by other processes: zero copies between the writer's last
// store and the reader's first load.
//
// Types: `MessageHeader` (64 B, the start of buffer 0), `MessageStatus`
// (why a message was refused), `ChecksumCheck`, `ReaderConfig`,
// `MessageBuilder` (a capnp::MessageBuilder whose segments are pool buffers),
// `SealedMessage` (the frozen result: buffers + handles to send), and
// `MessageReader` (validates, then reads a received message in place).
//
// Layout of one message, in kMaxSegments = 8 pool buffers at most:
//
//   buffer 0:  MessageHeader (64 B) | segment 0 (words)          | unused
//   buffer i:  segment i (words)                                 | unused
//
//   MessageHeader  magic "IPCM", layout version, segment count (1..8), the
//                  used word count of every segment (unused entries 0),
//                  total bytes (64 + 8 × Σ words, a redundant check), a
//                  checksum over the segments' used words, flags/reserved 0.
//
// Segment i is exactly what capnp::MessageBuilder::getSegmentsForOutput()
// reports for segment i, in place: the reader hands capnp the same memory
// (a SegmentArrayMessageReader over the shared mapping; no stream framing,
// no copy). Pool buffers are 64-byte aligned, so every segment is word
// aligned as capnp 0.9.2 requires ("even on x86").
//
// Growth. Buffer 0 has the caller's size hint (default 4 KiB). Each further
// segment asks the pool for max(capnp's minimum, 3 × the message so far), so
// the message at most quadruples per segment: 8 segments starting from a
// 4 KiB hint reach 64 MiB, a 16 MiB message needs 7 (fewer with a larger
// hint; give the hint when you know the size). When the pool cannot give
// that much (too_large, exhausted, over budget) the request halves down to
// capnp's minimum before failing. Segment memory is zeroed before capnp gets
// it (capnp requires it; pool buffers are recycled dirty). TODO(perf): keep a
// "zeroed" bit per buffer and zero on free, off the sender's path.
//
// Freezing. seal() writes the header and moves the buffers into a
// SealedMessage; from then on the message must not change: Cap'n Proto's
// reader validates a pointer and then re-reads it from memory (layout.c++
// readStructPointer, 0.9.2), so a buffer that changes under a reader can turn
// a checked pointer into an out-of-bounds read. Capnp's limits stop
// *malformed* messages, not *mutating* ones. The protocol is: the builder is
// consumed by seal() (`std::move(builder).seal()`; any later segment request
// throws), senders never keep a writable pointer, and readers hold
// references. The checksum (FNV-1a over 64-bit words, 4 interleaved lanes:
// any change of a single word is always detected) is computed by seal() and
// verified by the reader in debug builds of libipc, or always/never as
// ReaderConfig::checksum says — it catches a write after seal, it is not a
// defence against a malicious peer (the peer can recompute it).
//
// Reading. MessageReader::parse() copies the header out of shared memory
// once (so it cannot change between check and use), validates it against
// the buffers actually received — segment count 1..8 and equal to the
// number of buffers, every segment's words within its buffer, magic,
// version, total, reserved fields zero, alignment — and only then builds
// the capnp reader over the segments' used words. Capnp bounds-checks every
// pointer against those arrays, limits nesting (64) and traversal
// (ReaderConfig; default max(64 MiB, 8 × the message)), so a hostile or
// corrupt message yields an error, never an out-of-bounds read. Capnp
// accessors are lazy: a bad pointer deep in the message throws kj::Exception
// from the accessor that follows it. `visit<T>(fn)` runs fn(root) and turns
// a kj::Exception into MessageStatus::malformed with the description;
// `check_all()` traverses every pointer once up front.
//
// Lifetime and budget. A MessageBuilder and a SealedMessage hold Buffers of
// the BufferPool handle they were made with: release them before that
// handle closes. A MessageReader made from Buffers holds their references
// while it lives (the span form holds nothing: the caller keeps the memory
// mapped). Messages held by slow readers therefore keep pool memory
// claimed; the bound is the pool's capacity and budgets: a builder that
// cannot get a buffer fails with an ipc::Error naming the pool and the
// AllocStatus (exhausted / over_budget / timed_out under the wait policy),
// never a deadlock. Drop readers promptly, or give the pool a budget.
//
// Concurrency. A MessageBuilder, SealedMessage or MessageReader belongs to
// one thread at a time (capnp's builder and read limiter are not
// synchronised). Any number of processes may read one sealed message at the
// same time, each with its own MessageReader.
//
// Crash. Every buffer is owned by exactly one pid in the pool's descriptors
// from the moment it is claimed (pool.hpp), so a process killed while
// building — between any two allocateSegment() calls or in the middle of
// filling a list — leaves only buffers that pool.reclaim(pid) /
// reclaim_dead() return. A process killed after seal() but before the
// handles reach a channel slot likewise leaks nothing past reclaim. No
// shared state other than the pool is touched.
#pragma once

#include <capnp/message.h>
#include <kj/exception.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ipc/pool.hpp"

namespace ipc {

// The first 64 bytes of buffer 0. Plain data, written once by seal() before
// the message is published (the channel's release/acquire orders it).
struct MessageHeader {
  static constexpr std::uint32_t kMagic = 0x4d435049;  // "IPCM" little-endian
  static constexpr std::uint16_t kVersion = 1;
  static constexpr std::size_t kMaxSegments = 8;

  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t segment_count;                // 1..kMaxSegments
  std::uint32_t segment_words[kMaxSegments];  // used words of segment i; 0 beyond segment_count
  std::uint64_t total_bytes;                  // sizeof(MessageHeader) + 8 × Σ segment_words
  std::uint64_t checksum;                     // message_checksum() of the used words
  std::uint32_t flags;                        // 0 (reserved for future use; nonzero is refused)
  std::uint32_t reserved;                     // 0
};
static_assert(sizeof(MessageHeader) == 64 && alignof(MessageHeader) == 8);
static_assert(std::is_standard_layout_v<MessageHeader> && std::is_trivially_copyable_v<MessageHeader>);

// Why a message was refused. `malformed` is capnp's verdict (bad pointer,
// traversal or nesting limit, bad text); the others are the header checks.
enum class MessageStatus : std::uint8_t {
  ok,
  no_buffers,            // no buffer given, or a null buffer
  too_many_segments,     // more buffers than MessageHeader::kMaxSegments
  misaligned,            // a buffer is not 8-byte aligned
  buffer_too_small,      // buffer 0 cannot even hold the header
  bad_magic,             // not a message (or not written yet)
  bad_version,           // written by an incompatible libipc
  bad_header,            // counts inconsistent (segment count vs buffers, total, reserved fields)
  segment_out_of_range,  // a segment's word count exceeds its buffer
  checksum_mismatch,     // the message changed after seal()
  malformed,             // capnp refused the content (kj::Exception)
};
const char* to_string(MessageStatus s) noexcept;

// Checksum over the used words of `segments`, as seal() computes it.
std::uint64_t message_checksum(std::span<const kj::ArrayPtr<const capnp::word>> segments) noexcept;

enum class ChecksumCheck : std::uint8_t {
  build_default,  // verify in debug builds of libipc, skip with NDEBUG
  always,         // verify on every parse (costs one pass over the message)
  never,
};
// What ChecksumCheck::build_default means in this build of libipc.
bool checksum_verified_by_default() noexcept;

struct ReaderConfig {
  // Words capnp may read before refusing (repeated reads count again).
  // 0 = max(capnp's default 8 Mi words = 64 MiB, 8 × the message's words).
  std::uint64_t traversal_limit_words = 0;
  int nesting_limit = 64;  // capnp's default
  ChecksumCheck checksum = ChecksumCheck::build_default;
};

class MessageReader;

// The frozen output of MessageBuilder::seal(): the message's buffers, buffer
// 0 first. Move-only. Destroying it releases the references it still holds.
class SealedMessage {
 public:
  SealedMessage() = default;
  SealedMessage(SealedMessage&&) noexcept = default;
  SealedMessage& operator=(SealedMessage&&) noexcept = default;
  SealedMessage(const SealedMessage&) = delete;
  SealedMessage& operator=(const SealedMessage&) = delete;

  std::size_t segment_count() const noexcept { return buffers_.size(); }
  std::uint64_t total_bytes() const noexcept { return total_bytes_; }  // header + used words
  bool empty() const noexcept { return buffers_.empty(); }

  // The handles to send, buffer 0 first (this object keeps its references).
  std::vector<BufferHandle> handles() const;
  // The buffers themselves (the references move to the caller; this object
  // becomes empty). E.g. to read the message in this process.
  std::vector<Buffer> take_buffers() noexcept { return std::exchange(buffers_, {}); }
  // Gives up this object's references without releasing them (Buffer::detach)
  // and returns their handles: the references now belong to whoever the
  // caller hands them to (a channel slot, pool.transfer() to a receiver).
  // Nobody releases them otherwise: pool.reclaim(this pid) is the backstop.
  std::vector<BufferHandle> release_buffers();

 private:
  friend class MessageBuilder;
  SealedMessage(std::vector<Buffer> buffers, std::uint64_t total_bytes) noexcept
      : buffers_(std::move(buffers)), total_bytes_(total_bytes) {}
  std::vector<Buffer> buffers_;
  std::uint64_t total_bytes_ = 0;
};

// A capnp::MessageBuilder whose segments are buffers of `pool`.
//
//   MessageBuilder b(pool, 64 * 1024);           // hint: buffer 0 bytes
//   auto root = b.initRoot<schema::Task>();      // may throw ipc::Error (below)
//   ...
//   SealedMessage m = std::move(b).seal();        // b is finished
//
// SECURITY/contract: capnp's allocateSegment() cannot report failure, so
// when the pool has no buffer for the next segment, or the message would
// need more than kMaxSegments, the capnp call that needed the space
// (initRoot, set, init*) throws ipc::Error (ErrorCode::no_space, naming the
// pool, the status and what to do). The builder is then unusable: destroy
// it (its buffers go back to the pool). Call reserve() first to get the
// first buffer without exceptions. Not movable (capnp's arena points into
// the object).
class MessageBuilder : public capnp::MessageBuilder {
 public:
  static constexpr std::size_t kMaxSegments = MessageHeader::kMaxSegments;
  static constexpr std::size_t kHeaderBytes = sizeof(MessageHeader);
  static constexpr std::size_t kDefaultFirstBufferBytes = 4096;

  // `first_buffer_bytes`: size of buffer 0 including the 64-byte header
  // (at least kHeaderBytes + 8). Nothing is allocated until reserve() or
  // the first capnp call. `pool` must outlive this object and the
  // SealedMessage it makes.
  explicit MessageBuilder(BufferPool& pool, std::size_t first_buffer_bytes = kDefaultFirstBufferBytes,
                          Priority priority = Priority::normal);
  ~MessageBuilder() noexcept(false) override;

  // Allocates buffer 0 now. Never throws; ok if it already has one.
  [[nodiscard]] AllocStatus reserve() noexcept;

  // Writes the header and checksum and hands the buffers over. Throws
  // ipc::Error(invalid_argument) if nothing was built (no initRoot) or it
  // was sealed before. Afterwards capnp accessors of this builder must not
  // be used (they would write into the frozen message; the checksum makes
  // that visible to readers that verify); a request for more space throws.
  SealedMessage seal() &&;

  std::size_t segment_count() const noexcept { return buffers_.size(); }
  std::size_t allocated_bytes() const noexcept { return allocated_bytes_; }  // capacity of all buffers
  BufferPool& pool() const noexcept { return *pool_; }

  // capnp::MessageBuilder: the next segment, zeroed, from the pool (see
  // Growth in the file comment). Throws ipc::Error as described above.
  kj::ArrayPtr<capnp::word> allocateSegment(capnp::uint minimum_words) override;

 private:
  Buffer allocate_buffer(std::size_t want, std::size_t minimum);
  BufferPool* pool_;
  std::size_t first_buffer_bytes_;
  Priority priority_;
  std::vector<Buffer> buffers_;      // buffer i holds segment i
  std::uint64_t segment_words_ = 0;  // Σ words handed to capnp
  std::size_t allocated_bytes_ = 0;
  bool sealed_ = false;
};

// A received message, read in place. Movable; holds its buffers'
// references (Buffer form) while it lives.
class MessageReader {
 public:
  // Validates the header against the buffers (see the file comment) and
  // prepares the capnp reader. Never throws except std::bad_alloc. On
  // failure returns nullopt and, if given, the status and a message naming
  // what was wrong; the buffers are released.
  static std::optional<MessageReader> parse(std::vector<Buffer> buffers, const ReaderConfig& config = {},
                                            std::string* error = nullptr, MessageStatus* status = nullptr);
  // Read-only form over memory the caller keeps valid and unchanged for
  // the reader's lifetime (e.g. a read-only mapping). Each span: one buffer
  // (its full capacity), buffer 0 first.
  static std::optional<MessageReader> parse(std::span<const std::span<const std::byte>> buffers,
                                            const ReaderConfig& config = {}, std::string* error = nullptr,
                                            MessageStatus* status = nullptr);
  // Throwing convenience: ipc::Error(corrupted) with parse()'s message.
  explicit MessageReader(std::vector<Buffer> buffers, const ReaderConfig& config = {});

  MessageReader(MessageReader&&) noexcept;
  MessageReader& operator=(MessageReader&&) noexcept;
  ~MessageReader();

  // The root as T. Lazy: the accessors of the returned Reader throw
  // kj::Exception on a corrupt pointer or an exceeded limit. Readers must
  // not outlive this object.
  template <class T>
  typename T::Reader root() {
    return capnp_reader().getRoot<T>();
  }

  // Runs fn(root<T>()); a kj::Exception from capnp (inside fn too) becomes
  // MessageStatus::malformed with its description in *error. Other
  // exceptions from fn propagate.
  template <class T, class Fn>
  MessageStatus visit(Fn&& fn, std::string* error = nullptr) {
    try {
      std::forward<Fn>(fn)(root<T>());
      return MessageStatus::ok;
    } catch (const kj::Exception& e) {
      set_kj_error(e, error);
      return MessageStatus::malformed;
    }
  }

  // Follows every pointer of the message once (bounds, nesting, traversal
  // limit), so later accessors cannot fail on structure (Text NUL checks
  // still happen when a Text is read). Costs one pass.
  MessageStatus check_all(std::string* error = nullptr) noexcept;

  capnp::MessageReader& capnp_reader() noexcept;
  std::size_t segment_count() const noexcept;
  std::uint64_t total_bytes() const noexcept;
  // Gives the buffers back (the reader becomes empty and unusable).
  std::vector<Buffer> take_buffers() noexcept;

 public:
  struct Impl;  // implementation detail: segment table + capnp reader, on the heap so MessageReader moves

 private:
  explicit MessageReader(std::unique_ptr<Impl> impl) noexcept;
  static void set_kj_error(const kj::Exception& e, std::string* error);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipc
