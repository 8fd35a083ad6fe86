// Cap'n Proto messages in pool buffers: see ipc/message.hpp for the layout,
// the growth rule and the freezing protocol.
#include "ipc/message.hpp"

#include <capnp/any.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "ipc/error.hpp"

namespace ipc {

namespace {

// capnp cannot address more words than this in one segment (common.h).
constexpr std::uint64_t kMaxSegmentWords = (std::uint64_t{1} << capnp::SEGMENT_WORD_COUNT_BITS) - 1;
constexpr std::uint64_t kDefaultTraversalWords = 8u * 1024 * 1024;  // capnp's default (64 MiB)
constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;

std::string bytes_text(std::uint64_t b) { return std::to_string(b) + " B"; }

}  // namespace

const char* to_string(MessageStatus s) noexcept {
  switch (s) {
    case MessageStatus::ok: return "ok";
    case MessageStatus::no_buffers: return "no_buffers";
    case MessageStatus::too_many_segments: return "too_many_segments";
    case MessageStatus::misaligned: return "misaligned";
    case MessageStatus::buffer_too_small: return "buffer_too_small";
    case MessageStatus::bad_magic: return "bad_magic";
    case MessageStatus::bad_version: return "bad_version";
    case MessageStatus::bad_header: return "bad_header";
    case MessageStatus::segment_out_of_range: return "segment_out_of_range";
    case MessageStatus::checksum_mismatch: return "checksum_mismatch";
    case MessageStatus::malformed: return "malformed";
  }
  return "unknown";
}

bool checksum_verified_by_default() noexcept {
#ifdef NDEBUG
  return false;
#else
  return true;
#endif
}

// FNV-1a with 64-bit words as the unit, in 4 interleaved lanes so the
// multiplies overlap (one lane is a serial multiply chain). Each step
// (h ^ w) * odd is a bijection of h, so changing any single word always
// changes the result. Segment boundaries are mixed in via the word counts.
std::uint64_t message_checksum(std::span<const kj::ArrayPtr<const capnp::word>> segments) noexcept {
  std::uint64_t lane[4] = {kFnvOffset, kFnvOffset ^ 1, kFnvOffset ^ 2, kFnvOffset ^ 3};
  std::uint64_t total = 0;
  for (const auto& seg : segments) {
    const auto* p = reinterpret_cast<const unsigned char*>(seg.begin());
    const std::size_t n = seg.size();
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int k = 0; k < 4; ++k) {
        std::uint64_t w;
        std::memcpy(&w, p + (i + k) * 8, 8);
        lane[k] = (lane[k] ^ w) * kFnvPrime;
      }
    }
    for (; i < n; ++i) {
      std::uint64_t w;
      std::memcpy(&w, p + i * 8, 8);
      lane[0] = (lane[0] ^ w) * kFnvPrime;
    }
    lane[1] = (lane[1] ^ n) * kFnvPrime;  // segment boundary
    total += n;
  }
  std::uint64_t h = kFnvOffset;
  for (std::uint64_t v : {lane[0], lane[1], lane[2], lane[3], total}) h = (h ^ v) * kFnvPrime;
  return h;
}

// ---------------------------------------------------------------------------
// SealedMessage

std::vector<BufferHandle> SealedMessage::handles() const {
  std::vector<BufferHandle> out;
  out.reserve(buffers_.size());
  for (const Buffer& b : buffers_) out.push_back(b.handle());
  return out;
}

std::vector<BufferHandle> SealedMessage::release_buffers() {
  std::vector<BufferHandle> out;
  out.reserve(buffers_.size());
  for (Buffer& b : buffers_) out.push_back(b.detach());
  buffers_.clear();
  return out;
}

// ---------------------------------------------------------------------------
// MessageBuilder

MessageBuilder::MessageBuilder(BufferPool& pool, std::size_t first_buffer_bytes, Priority priority)
    : pool_(&pool), first_buffer_bytes_(first_buffer_bytes), priority_(priority) {
  if (first_buffer_bytes < kHeaderBytes + sizeof(capnp::word))
    throw Error(ErrorCode::invalid_argument, "MessageBuilder on pool '" + pool.name() + "': first_buffer_bytes " +
                                                 std::to_string(first_buffer_bytes) + " cannot hold the " +
                                                 std::to_string(kHeaderBytes) +
                                                 "-byte message header and one word; pass at least " +
                                                 std::to_string(kHeaderBytes + sizeof(capnp::word)));
  buffers_.reserve(kMaxSegments);
}

// Buffers release themselves (back to the pool) unless seal() moved them out.
// capnp's base destructor does not touch segment memory.
MessageBuilder::~MessageBuilder() noexcept(false) = default;

AllocStatus MessageBuilder::reserve() noexcept {
  if (!buffers_.empty() || sealed_) return AllocStatus::ok;
  Allocation a = pool_->allocate(first_buffer_bytes_, priority_);
  if (!a) return a.status;
  allocated_bytes_ += a.buffer.capacity();
  buffers_.push_back(std::move(a.buffer));
  return AllocStatus::ok;
}

// Asks for `want` bytes, halving down to `minimum` when the pool refuses
// for lack of room; throws ipc::Error with the last status otherwise.
Buffer MessageBuilder::allocate_buffer(std::size_t want, std::size_t minimum) {
  std::size_t size = std::max(want, minimum);
  for (;;) {
    Allocation a = pool_->allocate(size, priority_);
    if (a) return std::move(a.buffer);
    const bool room_problem = a.status == AllocStatus::too_large || a.status == AllocStatus::exhausted ||
                              a.status == AllocStatus::over_budget;
    if (room_problem && size > minimum) {
      size = std::max(minimum, size / 2);
      continue;
    }
    throw Error(ErrorCode::no_space,
                "MessageBuilder: pool '" + pool_->name() + "' has no buffer of " + bytes_text(minimum) +
                    " for message segment " + std::to_string(buffers_.size()) + " (" + to_string(a.status) +
                    "; the message already holds " + bytes_text(allocated_bytes_) + " in " +
                    std::to_string(buffers_.size()) +
                    " buffers): release messages held by readers, enlarge the pool or its budget, or give "
                    "the pool a large region (PoolConfig.large_strategy) for big messages");
  }
}

kj::ArrayPtr<capnp::word> MessageBuilder::allocateSegment(capnp::uint minimum_words) {
  if (sealed_)
    throw Error(ErrorCode::invalid_argument, "MessageBuilder on pool '" + pool_->name() +
                                                 "': the message was sealed and is frozen; build the next "
                                                 "message with a new MessageBuilder");
  const bool first = buffers_.empty() || segment_words_ == 0;
  const std::size_t header = first ? kHeaderBytes : 0;
  const std::size_t minimum = header + std::size_t{minimum_words} * sizeof(capnp::word);
  if (first && buffers_.empty()) {
    Buffer b = allocate_buffer(first_buffer_bytes_, minimum);
    allocated_bytes_ += b.capacity();
    buffers_.push_back(std::move(b));
  } else if (first) {
    // reserve() got buffer 0; capnp asks for segment 0 now.
    if (buffers_[0].capacity() < minimum) {
      Buffer b = allocate_buffer(minimum, minimum);
      allocated_bytes_ += b.capacity() - buffers_[0].capacity();
      buffers_[0] = std::move(b);
    }
  } else {
    if (buffers_.size() >= kMaxSegments)
      throw Error(ErrorCode::no_space,
                  "MessageBuilder on pool '" + pool_->name() + "': the message needs more than " +
                      std::to_string(kMaxSegments) + " segments (" + bytes_text(segment_words_ * 8) +
                      " so far); pass a larger first_buffer_bytes hint or use a pool with larger buffers");
    const std::uint64_t grow = 3 * segment_words_ * sizeof(capnp::word);
    const std::uint64_t cap = kMaxSegmentWords * sizeof(capnp::word);
    Buffer b = allocate_buffer(static_cast<std::size_t>(std::min(grow, cap)), minimum);
    allocated_bytes_ += b.capacity();
    buffers_.push_back(std::move(b));
  }
  Buffer& b = buffers_.back();
  const std::uint64_t words = std::min<std::uint64_t>((b.capacity() - header) / sizeof(capnp::word), kMaxSegmentWords);
  std::byte* start = b.data() + header;
  std::memset(start, 0, words * sizeof(capnp::word));  // capnp requires zeroed segments
  segment_words_ += words;
  return kj::arrayPtr(reinterpret_cast<capnp::word*>(start), static_cast<std::size_t>(words));
}

SealedMessage MessageBuilder::seal() && {
  if (sealed_)
    throw Error(ErrorCode::invalid_argument,
                "MessageBuilder on pool '" + pool_->name() + "': seal() called twice; a builder makes one message");
  auto segments = getSegmentsForOutput();
  if (segments.size() == 0)
    throw Error(ErrorCode::invalid_argument,
                "MessageBuilder on pool '" + pool_->name() + "': nothing to seal; call initRoot<T>() before seal()");
  if (segments.size() != buffers_.size())
    throw Error(ErrorCode::corrupted, "MessageBuilder on pool '" + pool_->name() + "': capnp reports " +
                                          std::to_string(segments.size()) + " segments but " +
                                          std::to_string(buffers_.size()) +
                                          " buffers were allocated (a segment allocation failed part-way); "
                                          "discard this builder");
  MessageHeader h{};
  h.magic = MessageHeader::kMagic;
  h.version = MessageHeader::kVersion;
  h.segment_count = static_cast<std::uint16_t>(segments.size());
  std::uint64_t total = kHeaderBytes;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::byte* expect = buffers_[i].data() + (i == 0 ? kHeaderBytes : 0);
    if (reinterpret_cast<const std::byte*>(segments[i].begin()) != expect)
      throw Error(ErrorCode::corrupted, "MessageBuilder on pool '" + pool_->name() + "': capnp segment " +
                                            std::to_string(i) + " is not buffer " + std::to_string(i) +
                                            "; discard this builder");
    h.segment_words[i] = static_cast<std::uint32_t>(segments[i].size());
    total += segments[i].size() * sizeof(capnp::word);
  }
  h.total_bytes = total;
  h.checksum = message_checksum(std::span(segments.begin(), segments.size()));
  std::memcpy(buffers_[0].data(), &h, sizeof h);
  sealed_ = true;
  return SealedMessage(std::exchange(buffers_, {}), total);
}

// ---------------------------------------------------------------------------
// MessageReader

struct MessageReader::Impl {
  std::vector<Buffer> buffers;  // empty for the span form
  std::array<kj::ArrayPtr<const capnp::word>, MessageHeader::kMaxSegments> segments{};
  std::size_t count = 0;
  std::uint64_t total_bytes = 0;
  std::optional<capnp::SegmentArrayMessageReader> reader;
};

namespace {

struct RawBuffer {
  const std::byte* data;
  std::size_t size;
};

MessageStatus fail(MessageStatus s, std::string msg, std::string* error, MessageStatus* status) {
  if (error) *error = "message: " + std::move(msg);
  if (status) *status = s;
  return s;
}

std::string too_many_text(std::size_t n) {
  return std::to_string(n) + " buffers given, a message has at most " + std::to_string(MessageHeader::kMaxSegments) +
         " segments";
}

// Validates and fills impl->segments/count/total_bytes. The header is copied
// out of shared memory once: every check and every use reads the copy.
MessageStatus validate(std::span<const RawBuffer> bufs, const ReaderConfig& config, MessageReader::Impl& impl,
                       std::string* error, MessageStatus* status) {
  constexpr std::size_t kMax = MessageHeader::kMaxSegments;
  constexpr std::size_t kHeader = sizeof(MessageHeader);
  if (bufs.empty()) return fail(MessageStatus::no_buffers, "no buffers given", error, status);
  if (bufs.size() > kMax) return fail(MessageStatus::too_many_segments, too_many_text(bufs.size()), error, status);
  for (std::size_t i = 0; i < bufs.size(); ++i) {
    if (bufs[i].data == nullptr)
      return fail(MessageStatus::no_buffers, "buffer " + std::to_string(i) + " is null", error, status);
    if (reinterpret_cast<std::uintptr_t>(bufs[i].data) % sizeof(capnp::word) != 0)
      return fail(MessageStatus::misaligned, "buffer " + std::to_string(i) + " is not 8-byte aligned", error, status);
  }
  if (bufs[0].size < kHeader)
    return fail(MessageStatus::buffer_too_small,
                "buffer 0 has " + std::to_string(bufs[0].size) + " B, less than the 64-byte header", error, status);
  MessageHeader h;
  std::memcpy(&h, bufs[0].data, sizeof h);
  if (h.magic != MessageHeader::kMagic)
    return fail(MessageStatus::bad_magic, "buffer 0 does not start with a message header (bad magic)", error, status);
  if (h.version != MessageHeader::kVersion)
    return fail(MessageStatus::bad_version,
                "layout version " + std::to_string(h.version) + ", this libipc reads " +
                    std::to_string(MessageHeader::kVersion) + "; rebuild sender and receiver with one libipc",
                error, status);
  if (h.segment_count != bufs.size())
    return fail(MessageStatus::bad_header,
                "header says " + std::to_string(h.segment_count) + " segments, " + std::to_string(bufs.size()) +
                    " buffers given",
                error, status);
  if (h.flags != 0 || h.reserved != 0)
    return fail(MessageStatus::bad_header, "reserved header fields are not zero", error, status);
  std::uint64_t total = kHeader;
  for (std::size_t i = 0; i < kMax; ++i) {
    const std::uint64_t words = h.segment_words[i];
    if (i >= bufs.size()) {
      if (words != 0)
        return fail(MessageStatus::bad_header, "unused segment entry " + std::to_string(i) + " is not zero", error,
                    status);
      continue;
    }
    const std::uint64_t room = (bufs[i].size - (i == 0 ? kHeader : 0)) / sizeof(capnp::word);
    if (words > room || words > kMaxSegmentWords)
      return fail(MessageStatus::segment_out_of_range,
                  "segment " + std::to_string(i) + " claims " + std::to_string(words) + " words, its buffer holds " +
                      std::to_string(room),
                  error, status);
    if (i == 0 && words == 0)
      return fail(MessageStatus::bad_header, "segment 0 is empty (no root pointer)", error, status);
    const std::byte* start = bufs[i].data + (i == 0 ? kHeader : 0);
    impl.segments[i] = kj::arrayPtr(reinterpret_cast<const capnp::word*>(start), static_cast<std::size_t>(words));
    total += words * sizeof(capnp::word);
  }
  if (h.total_bytes != total)
    return fail(MessageStatus::bad_header,
                "header total " + std::to_string(h.total_bytes) + " B does not match its segments (" +
                    std::to_string(total) + " B)",
                error, status);
  impl.count = bufs.size();
  impl.total_bytes = total;
  const bool verify = config.checksum == ChecksumCheck::always ||
                      (config.checksum == ChecksumCheck::build_default && checksum_verified_by_default());
  if (verify && message_checksum(std::span(impl.segments.data(), impl.count)) != h.checksum)
    return fail(MessageStatus::checksum_mismatch,
                "checksum mismatch: the message was modified after seal() (a sender kept writing, or memory was "
                "corrupted); find the writer — messages are frozen once sent",
                error, status);
  if (config.nesting_limit <= 0)
    return fail(MessageStatus::bad_header, "ReaderConfig::nesting_limit must be positive", error, status);
  capnp::ReaderOptions options;
  options.nestingLimit = config.nesting_limit;
  options.traversalLimitInWords = config.traversal_limit_words != 0
                                      ? config.traversal_limit_words
                                      : std::max(kDefaultTraversalWords, 8 * (total / sizeof(capnp::word)));
  impl.reader.emplace(kj::arrayPtr(impl.segments.data(), impl.count), options);
  if (status) *status = MessageStatus::ok;
  return MessageStatus::ok;
}

}  // namespace

MessageReader::MessageReader(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
MessageReader::MessageReader(MessageReader&&) noexcept = default;
MessageReader& MessageReader::operator=(MessageReader&&) noexcept = default;
MessageReader::~MessageReader() = default;  // the capnp reader goes before the buffers (member order)

std::optional<MessageReader> MessageReader::parse(std::vector<Buffer> buffers, const ReaderConfig& config,
                                                  std::string* error, MessageStatus* status) {
  auto impl = std::make_unique<Impl>();
  std::array<RawBuffer, MessageHeader::kMaxSegments> raw{};
  const std::size_t n = std::min(buffers.size(), raw.size());
  for (std::size_t i = 0; i < n; ++i) raw[i] = {buffers[i].data(), buffers[i].capacity()};
  if (buffers.size() > raw.size()) {
    fail(MessageStatus::too_many_segments, too_many_text(buffers.size()), error, status);
    return std::nullopt;
  }
  impl->buffers = std::move(buffers);
  if (validate(std::span(raw.data(), n), config, *impl, error, status) != MessageStatus::ok) return std::nullopt;
  return MessageReader(std::move(impl));
}

std::optional<MessageReader> MessageReader::parse(std::span<const std::span<const std::byte>> buffers,
                                                  const ReaderConfig& config, std::string* error,
                                                  MessageStatus* status) {
  if (buffers.size() > MessageHeader::kMaxSegments) {
    fail(MessageStatus::too_many_segments, too_many_text(buffers.size()), error, status);
    return std::nullopt;
  }
  std::array<RawBuffer, MessageHeader::kMaxSegments> raw{};
  for (std::size_t i = 0; i < buffers.size(); ++i) raw[i] = {buffers[i].data(), buffers[i].size()};
  auto impl = std::make_unique<Impl>();
  if (validate(std::span(raw.data(), buffers.size()), config, *impl, error, status) != MessageStatus::ok)
    return std::nullopt;
  return MessageReader(std::move(impl));
}

MessageReader::MessageReader(std::vector<Buffer> buffers, const ReaderConfig& config) {
  std::string error;
  std::optional<MessageReader> r = parse(std::move(buffers), config, &error);
  if (!r) throw Error(ErrorCode::corrupted, error + " (drop the message; the sender is buggy or the memory corrupt)");
  impl_ = std::move(r->impl_);
}

void MessageReader::set_kj_error(const kj::Exception& e, std::string* error) {
  if (error) *error = std::string("message: malformed (capnp): ") + e.getDescription().cStr();
}

MessageStatus MessageReader::check_all(std::string* error) noexcept {
  try {
    (void)root<capnp::AnyPointer>().targetSize();
    return MessageStatus::ok;
  } catch (const kj::Exception& e) {
    try {
      set_kj_error(e, error);
    } catch (...) {
    }
    return MessageStatus::malformed;
  }
}

capnp::MessageReader& MessageReader::capnp_reader() noexcept { return *impl_->reader; }
std::size_t MessageReader::segment_count() const noexcept { return impl_ ? impl_->count : 0; }
std::uint64_t MessageReader::total_bytes() const noexcept { return impl_ ? impl_->total_bytes : 0; }

std::vector<Buffer> MessageReader::take_buffers() noexcept {
  if (!impl_) return {};
  impl_->reader.reset();
  std::vector<Buffer> out = std::move(impl_->buffers);
  impl_.reset();
  return out;
}

}  // namespace ipc
