// fuzz/fuzz_input.hpp — the input format of message_reader_fuzz, shared with
// the seed writer:
//
//   byte 0      bits 0-2: buffer count - 1 (1..8 buffers)
//               bit 3:    recompute header.total_bytes (reach capnp sooner)
//               bit 4:    recompute header.checksum and verify it
//   bytes 1-8   slack words per buffer (capacity beyond its segment)
//   then        buffer 0 (64-byte header + segment 0 + slack), buffer 1, ...
//               each buffer's size = its header word count (capped at
//               kMaxFuzzWords) + slack; missing input bytes read as zero.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ipc::fuzz {
inline constexpr std::size_t kPreludeBytes = 9;
inline constexpr std::uint32_t kMaxFuzzWords = 4096;
inline constexpr std::uint8_t kFixTotal = 1u << 3;
inline constexpr std::uint8_t kFixChecksum = 1u << 4;
}  // namespace ipc::fuzz
