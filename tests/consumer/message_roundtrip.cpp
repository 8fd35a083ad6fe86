// consumer_message: libipc::message with the consumer's own schema
// (note.capnp, compiled by ipc_capnp_schemas). Builds a Note in buffers of a
// pool in a segment of its own domain, seals it and reads it back in place:
// in this process, then in a forked child that opens the segment itself and
// adopts the buffers. Unlinks the segment. Exit 0 = all good.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ipc/message.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "note.capnp.h"

namespace {

// Hand-over area in the segment: the sealed message's handles and who holds them.
struct Board {
  std::uint32_t sender;
  std::uint32_t count;
  ipc::BufferHandle handles[ipc::MessageHeader::kMaxSegments];
};

bool note_ok(consumer::Note::Reader n) {
  return n.getId() == 7 && std::strcmp(n.getText().cStr(), "hello from a consumer") == 0 && n.getTags().size() == 2 &&
         std::strcmp(n.getTags()[1].cStr(), "two") == 0;
}

ipc::SealedMessage build(ipc::BufferPool& pool) {
  ipc::MessageBuilder b(pool, 1024);
  auto note = b.initRoot<consumer::Note>();
  note.setId(7);
  note.setText("hello from a consumer");
  auto tags = note.initTags(2);
  tags.set(0, "one");
  tags.set(1, "two");
  return std::move(b).seal();
}

// Parses `buffers` (checksum verified) and checks the note; 0 = ok.
int read_note(std::vector<ipc::Buffer> buffers, const char* who) {
  std::string error;
  ipc::ReaderConfig config;
  config.checksum = ipc::ChecksumCheck::always;
  std::optional<ipc::MessageReader> r = ipc::MessageReader::parse(std::move(buffers), config, &error);
  if (!r) {
    std::fprintf(stderr, "consumer_message (%s): parse failed: %s\n", who, error.c_str());
    return 1;
  }
  if (r->check_all(&error) != ipc::MessageStatus::ok) {
    std::fprintf(stderr, "consumer_message (%s): check_all: %s\n", who, error.c_str());
    return 1;
  }
  bool ok = false;
  if (r->visit<consumer::Note>([&](consumer::Note::Reader n) { ok = note_ok(n); }, &error) != ipc::MessageStatus::ok ||
      !ok) {
    std::fprintf(stderr, "consumer_message (%s): wrong content %s\n", who, error.c_str());
    return 1;
  }
  return 0;
}

// The child: its own mapping, adopts the parent's references, reads in place.
int child(const std::string& domain) {
  ipc::Segment seg = ipc::Segment::open("msg", {.domain = domain});
  ipc::BufferPool pool = ipc::BufferPool::open(seg, "pool");
  auto& board = seg.open<Board>("board", ipc::ObjectType::raw);
  std::vector<ipc::Buffer> buffers;
  for (std::uint32_t i = 0; i < board.count; ++i) {
    std::optional<ipc::Buffer> b = pool.adopt(board.handles[i], board.sender);
    if (!b) return 2;
    buffers.push_back(std::move(*b));
  }
  return read_note(std::move(buffers), "child");
}

std::uint32_t in_use(const ipc::BufferPool& pool) {
  std::uint32_t n = 0;
  for (const ipc::ClassStats& c : pool.stats().classes) n += c.in_use;
  return n;
}

int run(const std::string& domain) {
  ipc::SegmentOptions options;
  options.size = 4u << 20;
  options.domain = domain;  // a domain of our own: /dev/shm/ipc.<domain>.msg
  ipc::Segment seg = ipc::Segment::create("msg", options);
  ipc::PoolConfig cfg;
  cfg.class_sizes = {256, 4096};
  cfg.buffers_per_class = 8;
  cfg.cache_per_class = 0;
  ipc::BufferPool pool = ipc::BufferPool::create(seg, "pool", cfg);
  auto& board = seg.find_or_create<Board>("board", ipc::ObjectType::raw);

  // 1. Read in this process.
  if (read_note(build(pool).take_buffers(), "parent") != 0) return 2;
  if (in_use(pool) != 0) return 3;

  // 2. Hand the references to a forked child, which reads in place.
  ipc::SealedMessage sealed = build(pool);
  std::vector<ipc::BufferHandle> handles = sealed.release_buffers();
  board.sender = static_cast<std::uint32_t>(::getpid());
  board.count = static_cast<std::uint32_t>(handles.size());
  for (std::size_t i = 0; i < handles.size(); ++i) board.handles[i] = handles[i];
  pid_t kid = ::fork();
  if (kid < 0) return 4;
  if (kid == 0) {
    int rc = 9;
    try {
      rc = child(domain);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "consumer_message (child): %s\n", e.what());
    }
    ::_exit(rc);
  }
  int status = 0;
  if (::waitpid(kid, &status, 0) != kid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 5;
  if (in_use(pool) != 0) return 6;  // the child's reader dropped the last references
  return 0;
}

}  // namespace

int main() {
  const std::string domain = "consumer-msg-" + std::to_string(::getpid());
  int rc = 1;
  try {
    rc = run(domain);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_message: %s\n", e.what());
  }
  try {
    if (!ipc::Segment::unlink("msg", domain)) rc = rc ? rc : 10;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_message: unlink: %s\n", e.what());
    rc = rc ? rc : 11;
  }
  if (rc != 0) {
    std::fprintf(stderr, "consumer_message: FAILED (%d)\n", rc);
    return 1;
  }
  std::printf("consumer_message: ok\n");
  return 0;
}
