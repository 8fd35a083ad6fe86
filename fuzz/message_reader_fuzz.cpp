// libFuzzer target: arbitrary bytes -> message buffers -> MessageReader ->
// check_all() and a full traversal of the test schema's root (every field,
// every list element, every byte of Text/Data). Any outcome but a crash or
// a sanitizer report is a pass: hostile input must give a MessageStatus.
// Each buffer is its own exact-size heap allocation, so ASan reports any
// read past a segment. How to build and run: fuzz/CMakeLists.txt.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_input.hpp"
#include "ipc/message.hpp"
#include "test_types.capnp.h"
#include "walk_message.hpp"

using namespace ipc;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < fuzz::kPreludeBytes + sizeof(MessageHeader)) return 0;
  const std::uint8_t flags = data[0];
  const std::size_t n = 1 + (flags & 7);
  MessageHeader h;
  std::memcpy(&h, data + fuzz::kPreludeBytes, sizeof h);

  std::vector<std::vector<capnp::word>> storage;
  std::vector<std::span<const std::byte>> spans;
  std::size_t at = fuzz::kPreludeBytes;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t words =
        std::min(i < MessageHeader::kMaxSegments ? h.segment_words[i] : 0u, fuzz::kMaxFuzzWords);
    const std::size_t bytes = (i == 0 ? sizeof(MessageHeader) : 0) + (std::size_t{words} + data[1 + i]) * 8;
    storage.emplace_back(bytes / 8);
    const std::size_t take = at < size ? std::min(bytes, size - at) : 0;
    if (take) std::memcpy(storage.back().data(), data + at, take);
    at += take;
    spans.emplace_back(reinterpret_cast<const std::byte*>(storage.back().data()), bytes);
  }
  auto* header = reinterpret_cast<MessageHeader*>(storage[0].data());
  if (flags & (fuzz::kFixTotal | fuzz::kFixChecksum)) {
    std::uint64_t total = sizeof(MessageHeader);
    std::array<kj::ArrayPtr<const capnp::word>, MessageHeader::kMaxSegments> segs{};
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t room = (spans[i].size() - (i == 0 ? 64 : 0)) / 8;
      const std::size_t words = std::min<std::size_t>(header->segment_words[i], room);
      segs[i] = kj::arrayPtr(storage[i].data() + (i == 0 ? 8 : 0), words);
      total += std::uint64_t{header->segment_words[i]} * 8;
    }
    header->total_bytes = total;
    if (flags & fuzz::kFixChecksum) header->checksum = message_checksum(std::span(segs.data(), n));
  }

  ReaderConfig config;
  config.checksum = (flags & fuzz::kFixChecksum) ? ChecksumCheck::always : ChecksumCheck::never;
  std::optional<MessageReader> reader = MessageReader::parse(spans, config);
  if (!reader) return 0;
  (void)reader->check_all();
  (void)reader->visit<test::schema::AllTypes>(
      [](test::schema::AllTypes::Reader root) { (void)test::walk_struct(capnp::toDynamic(root)); });
  return 0;
}
