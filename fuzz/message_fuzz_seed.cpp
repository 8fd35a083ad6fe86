// Writes seed inputs for message_reader_fuzz into the directory given: valid
// AllTypes messages (one and several segments) in fuzz_input.hpp's format.
#include <capnp/message.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "ipc/message.hpp"
#include "test_types.capnp.h"

using namespace ipc;
using ipc::test::schema::AllTypes;

namespace {

void fill(AllTypes::Builder r, unsigned n) {
  r.setInt64Field(-5);
  r.setTextField("seed");
  r.initDataField(16)[3] = 7;
  r.getStructField().setLabel("inner");
  r.getStructField().initChild().setId(3);
  auto texts = r.initTextList(n);
  auto structs = r.initStructList(n);
  auto lists = r.initListList(n);
  for (unsigned i = 0; i < n; ++i) {
    texts.set(i, "t" + std::to_string(i));
    structs[i].setId(i);
    lists.init(i, i % 4).set(0, 1);
  }
  r.initNested().setLabel("union");
  r.getPosition().setTag("pos");
}

bool write_seed(const std::string& path, unsigned first_words, unsigned n) {
  capnp::MallocMessageBuilder b(first_words, capnp::AllocationStrategy::FIXED_SIZE);
  fill(b.initRoot<AllTypes>(), n);
  auto segs = b.getSegmentsForOutput();
  if (segs.size() > MessageHeader::kMaxSegments) return false;
  MessageHeader h{};
  h.magic = MessageHeader::kMagic;
  h.version = MessageHeader::kVersion;
  h.segment_count = static_cast<std::uint16_t>(segs.size());
  h.total_bytes = sizeof h;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    h.segment_words[i] = static_cast<std::uint32_t>(segs[i].size());
    h.total_bytes += segs[i].size() * 8;
  }
  h.checksum = message_checksum(std::span(segs.begin(), segs.size()));
  std::vector<unsigned char> out(fuzz::kPreludeBytes, 0);
  out[0] = static_cast<unsigned char>(segs.size() - 1);
  out.resize(out.size() + sizeof h);
  std::memcpy(out.data() + fuzz::kPreludeBytes, &h, sizeof h);
  for (auto s : segs) {
    auto bytes = s.asBytes();
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = write_seed(dir + "/one-segment", 1024, 8) && write_seed(dir + "/three-segments", 64, 6);
  if (!ok) std::fprintf(stderr, "message_fuzz_seed: could not write seeds into %s\n", dir.c_str());
  return ok ? 0 : 1;
}
