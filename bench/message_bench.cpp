// message_bench: zero-copy Cap'n Proto messages (ipc/message.hpp) sent as
// pool buffer handles through an SPSC channel (ipc/channel.hpp), against the
// same message in our own 64 B form and against two copying baselines, all
// measured in the same run (docs/benchmarks.md).
//
// The message (bench/bench_message.capnp): struct BenchMessage { seq UInt64;
// payload List(UInt64) } with 8 elements ("64 B": 64 B of payload) or
// 131072 elements ("1 MiB"). Every element is written (element i of message
// s is s * 2^20 + i), so the sender's cache holds a fully built message.
//
// Method: busy-poll ping-pong between the parent (pinned to CPU 0) and a
// forked child (CPU 1). The parent builds the message *before* starting the
// clock (building and zeroing are not part of the figure; their median is
// printed beside it), then times from the send until it has the child's
// answer; one-way = round trip / 2 (nothing subtracted). The child, in the
// timed path, receives, parses in place, reads root.seq and the last list
// element (and the list size), and answers with them; the parent checks
// every answer. Each kind answers the same way it asks:
//   ours 64B / 1MiB  MessageBuilder over the pool (hint 256 B / 1 MiB + 4 KiB:
//                    one buffer, one capnp segment), seal(), take_buffers();
//                    timed: Channel::try_send({}, buffers) moves the handles
//                    into the slot; the child try_receive-spins, runs
//                    MessageReader::parse(std::move(m.buffers())) with
//                    ChecksumCheck::never and then check_all() (a full
//                    pointer traversal; O(1) for a primitive list), reads the
//                    fields and try_sends a 64 B inline answer on a second
//                    SPSC channel. Only after answering does it drop the
//                    reader (the last reference: the buffers are freed).
//   uds copy         the message built in a capnp::MallocMessageBuilder
//                    (first segment 1 MiB + 4 KiB: one segment); timed:
//                    capnp::messageToFlatArray + write() of the whole array
//                    to a socketpair(AF_UNIX, SOCK_STREAM) (default buffer
//                    sizes); the child reads it fully into a preallocated
//                    word-aligned buffer (recv MSG_DONTWAIT spin, length from
//                    capnp::expectedSizeInWordsFromPrefix), parses it with
//                    capnp::FlatArrayMessageReader, reads the same fields and
//                    writes a 64 B answer back; the parent spins on recv
//                    MSG_DONTWAIT for it.
//   boost mq copy    the same flat array sent with
//                    boost::interprocess::message_queue::send (1 message
//                    deep, max size 1 MiB + 8 KiB); the child try_receive-spins
//                    (copying it out into its preallocated buffer), parses
//                    with FlatArrayMessageReader, answers on a second queue
//                    (64 B) that the parent try_receive-spins on.
//   control          ours 64 B, but before building it the sender writes
//                    1 MiB of private scratch memory (zero, then fill: the
//                    stores of building the 1 MiB message). Not a SPEC
//                    figure: it shows how much of "1 MiB vs 64 B" is the
//                    sender's cache being full of dirty lines (this VM's L2
//                    is 512 KiB per core) when the clock starts.
// Baselines busy-poll too, so ours is not credited with their wake-ups
// (measured before the mallopt below: blocking recv/receive was no faster
// for either). Both processes set mallopt(M_MMAP_THRESHOLD 16 MiB,
// M_TRIM_THRESHOLD 256 MiB) so the baselines' 1 MiB mallocs reuse mapped
// heap pages: without it every messageToFlatArray paid ~256 page faults
// (uds p50 ~500 us instead of ~105).
//
// Drift on this shared 2-vCPU VM must hit every kind alike: a repetition
// (one child process) runs blocks of `block` round trips per kind, the kinds
// interleaved block by block in an order rotating with the block and the
// repetition; the first block of a repetition and the first 2 round trips of
// each block (a hand-over between kinds) are not counted. p50/p99 are per
// repetition, reported as the median over >= 5 repetitions; each RATIO is
// the median of the per-repetition ratios of p50s.
//
// Cleanup: the segment (domain "bench<pid>") and both message queues are
// unlinked on every exit path (normal, error, signal, watchdog). bench_util's
// cleanup holds two paths; the second queue is unlinked by a local signal
// handler and die() hook that then defer to bench_util's.
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bench_message.capnp.h"
#include "bench_util.hpp"
#include "ipc/channel.hpp"
#include "ipc/message.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace {

namespace bench = ipc::bench;
namespace bip = boost::interprocess;
using bench::cleanup::die;
using ipc::bench::schema::BenchMessage;

constexpr const char* kBench = "message_bench";
constexpr const char* kSegment = "msg";
constexpr const char* kPool = "pool";
constexpr const char* kRequests = "requests";  // parent -> child, message handles
constexpr const char* kAnswers = "answers";    // child -> parent, 64 B inline
constexpr unsigned kWatchdogSeconds = 120;     // per child run; a hung run is cleaned up

constexpr std::size_t kSmallElements = 8;            // 64 B of payload
constexpr std::size_t kBigElements = 1u << 17;       // 1 MiB of payload
constexpr std::size_t kSmallHint = 256;              // buffer 0 of the 64 B message (header included)
constexpr std::size_t kBigHint = (1u << 20) + 4096;  // buffer 0 of the 1 MiB message: one segment
constexpr std::size_t kFlatMax = (1u << 20) + 8192;  // receive buffer / mq message size: 1 MiB + slack
constexpr std::size_t kAnswerBytes = 64;

enum Kind { kOurs64 = 0, kOurs1M = 1, kUds1M = 2, kMq1M = 3, kOurs64Dirty = 4, kKinds = 5 };
constexpr const char* kKindName[kKinds] = {
    "ours: 64 B capnp message, buffer handle, SPSC channel", "ours: 1 MiB capnp message, buffer handle, SPSC channel",
    "uds copy: 1 MiB flat array, socketpair SOCK_STREAM",    "boost mq copy: 1 MiB flat array, message_queue",
    "control: ours 64 B after writing 1 MiB of scratch",
};

// ---- shared control state (in the segment) ---------------------------------------------------

struct State {
  struct alignas(64) {
    std::atomic<std::uint32_t> failed{0};  // set by a process that dies with an error
    std::atomic<int> child_cpu{-1};
  } ctl;
};
State* g_state = nullptr;

// The second message queue's /dev/shm path (bench_util's cleanup holds two).
char g_extra_path[256] = "";

void unlink_extra() {
  if (!bench::cleanup::g_is_child && g_extra_path[0] != '\0') ::unlink(g_extra_path);
}
void on_signal(int sig) {
  unlink_extra();
  bench::cleanup::on_signal(sig);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline void check_failed(std::uint32_t& spins) {
  if ((++spins & 0xfffff) == 0 && g_state->ctl.failed.load(std::memory_order_relaxed)) die("the other process failed");
}

[[noreturn]] [[gnu::noinline]] void sys_failed(const char* what) {
  die(std::string(what) + ": " + std::strerror(errno));
}

// ---- the message -------------------------------------------------------------------------------

inline std::uint64_t element(std::uint64_t seq, std::size_t i) { return (seq << 20) + i; }

void fill(BenchMessage::Builder root, std::uint64_t seq, std::size_t elements) {
  root.setSeq(seq);
  auto list = root.initPayload(static_cast<capnp::uint>(elements));
  for (std::size_t i = 0; i < elements; ++i) list.set(static_cast<capnp::uint>(i), element(seq, i));
}

// The child's answer: what it read. 64 B on every path.
struct Answer {
  std::uint64_t seq;
  std::uint64_t last;
  std::uint64_t size;
  std::uint64_t ok;  // 1: parsed and checked by capnp; 0: refused (see the child's stderr)
  std::uint64_t pad[4];
};
static_assert(sizeof(Answer) == kAnswerBytes);

Answer read_fields(BenchMessage::Reader root) {
  Answer a{};
  a.seq = root.getSeq();
  auto list = root.getPayload();
  a.size = list.size();
  a.last = a.size > 0 ? list[a.size - 1] : 0;
  a.ok = 1;
  return a;
}

bool answer_matches(const Answer& a, std::uint64_t seq, std::size_t elements) {
  return a.ok == 1 && a.seq == seq && a.size == elements && a.last == element(seq, elements - 1);
}

// ---- transport helpers -----------------------------------------------------------------------

void send_handles(ipc::Channel& ch, std::vector<ipc::Buffer>& buffers) {
  for (;;) {
    const ipc::SendStatus s = ch.try_send({}, std::span<ipc::Buffer>(buffers));
    if (s == ipc::SendStatus::ok) return;
    if (s != ipc::SendStatus::full) [[unlikely]]
      die(std::string("request channel: try_send failed: ") + ipc::to_string(s));
    cpu_relax();
  }
}

void send_answer(ipc::Channel& ch, const Answer& a) {
  const auto bytes = std::as_bytes(std::span<const Answer, 1>(&a, 1));
  for (;;) {
    const ipc::SendStatus s = ch.try_send(bytes);
    if (s == ipc::SendStatus::ok) return;
    if (s != ipc::SendStatus::full) [[unlikely]]
      die(std::string("answer channel: try_send failed: ") + ipc::to_string(s));
    cpu_relax();
  }
}

void receive_spin(ipc::Channel& ch, ipc::Message& m) {
  std::uint32_t spins = 0;
  while (ch.try_receive(m) != ipc::ReceiveStatus::ok) {
    check_failed(spins);
    cpu_relax();
  }
}

void write_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  while (n > 0) {
    const ssize_t r = ::write(fd, b, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      sys_failed("write (unix socket)");
    }
    b += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Busy-polls recv(MSG_DONTWAIT) until exactly n bytes have arrived.
void recv_spin(int fd, void* p, std::size_t n) {
  auto* b = static_cast<unsigned char*>(p);
  std::uint32_t spins = 0;
  while (n > 0) {
    const ssize_t r = ::recv(fd, b, n, MSG_DONTWAIT);
    if (r > 0) {
      b += r;
      n -= static_cast<std::size_t>(r);
    } else if (r == 0) {
      die("unix socket: the peer closed it");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      check_failed(spins);
      cpu_relax();
    } else {
      sys_failed("recv (unix socket)");
    }
  }
}

// Reads one capnp flat-array message from the stream into buf (word aligned,
// `capacity_words`); returns its size in words. Never reads past the message.
std::size_t recv_flat(int fd, capnp::word* buf, std::size_t capacity_words) {
  auto* bytes = reinterpret_cast<unsigned char*>(buf);
  std::size_t have = 0;
  std::size_t want = sizeof(capnp::word);  // the segment table's first word
  for (;;) {
    if (have >= sizeof(capnp::word)) {
      want = capnp::expectedSizeInWordsFromPrefix(kj::arrayPtr(buf, have / sizeof(capnp::word))) * sizeof(capnp::word);
      if (have >= want) return want / sizeof(capnp::word);
      if (want > capacity_words * sizeof(capnp::word))
        die("unix socket: a message of " + std::to_string(want) + " bytes exceeds the receive buffer");
    }
    recv_spin(fd, bytes + have, want - have);
    have = want;
  }
}

// ---- objects both processes use ----------------------------------------------------------------

struct Objects {
  ipc::Segment* seg;
  ipc::BufferPool* pool;
  ipc::Channel* requests;
  ipc::Channel* answers;
  bip::message_queue* mq_requests;
  bip::message_queue* mq_answers;
  int fd[2];  // socketpair: [0] parent, [1] child
};

// ---- the child ---------------------------------------------------------------------------------

// Answers `total` requests of the kinds kind_of(i) says, in order.
template <typename KindOf>
void child_body(const Objects& o, long total, KindOf kind_of) {
  ipc::BufferPool pool = ipc::BufferPool::open(*o.seg, kPool);
  ipc::Channel requests = ipc::Channel::open(*o.seg, kRequests, &pool);
  ipc::Channel answers = ipc::Channel::open(*o.seg, kAnswers);
  std::vector<capnp::word> flat(kFlatMax / sizeof(capnp::word));  // the copying baselines' receive buffer
  ipc::ReaderConfig config;
  config.checksum = ipc::ChecksumCheck::never;
  ipc::Message m;
  std::string error;
  ipc::MessageStatus status = ipc::MessageStatus::ok;
  for (long i = 0; i < total; ++i) {
    Answer a{};
    switch (kind_of(i)) {
      case kOurs64:
      case kOurs1M:
      case kOurs64Dirty: {
        receive_spin(requests, m);
        if (m.lost_buffers() != 0) die("request channel: a buffer handle was lost");
        std::optional<ipc::MessageReader> reader =
            ipc::MessageReader::parse(std::move(m.buffers()), config, &error, &status);
        if (!reader) die("MessageReader::parse: " + error);
        if ((status = reader->check_all(&error)) != ipc::MessageStatus::ok) die("check_all: " + error);
        status = reader->visit<BenchMessage>([&](BenchMessage::Reader root) { a = read_fields(root); }, &error);
        if (status != ipc::MessageStatus::ok) die("reading the message: " + error);
        send_answer(answers, a);
        break;  // the reader goes here, after the answer: the buffers are freed off the timed path
      }
      case kUds1M: {
        const std::size_t words = recv_flat(o.fd[1], flat.data(), flat.size());
        capnp::FlatArrayMessageReader reader(kj::arrayPtr(flat.data(), words));
        a = read_fields(reader.getRoot<BenchMessage>());
        write_all(o.fd[1], &a, sizeof a);
        break;
      }
      case kMq1M: {
        bip::message_queue::size_type size = 0;
        unsigned priority = 0;
        std::uint32_t spins = 0;
        while (!o.mq_requests->try_receive(flat.data(), kFlatMax, size, priority)) {
          check_failed(spins);
          cpu_relax();
        }
        if (size % sizeof(capnp::word) != 0) die("message_queue: a message of " + std::to_string(size) + " bytes");
        capnp::FlatArrayMessageReader reader(kj::arrayPtr(flat.data(), size / sizeof(capnp::word)));
        a = read_fields(reader.getRoot<BenchMessage>());
        o.mq_answers->send(&a, sizeof a, 0);
        break;
      }
      default: break;
    }
  }
}

// ---- one repetition ------------------------------------------------------------------------------

struct Rep {
  double p50[kKinds];  // one-way, ns
  double p99[kKinds];
  double build[kKinds];  // median ns to build the message (not timed)
};

// The parent's side of one round trip of `kind`: builds the message, then
// times send → answer. Returns the round trip in ns; *build_ns the build time.
double round_trip(const Objects& o, Kind kind, std::uint64_t seq, double* build_ns) {
  Answer a{};
  const bool small = kind == kOurs64 || kind == kOurs64Dirty;
  const std::size_t elements = small ? kSmallElements : kBigElements;
  double t0 = 0;
  const double b0 = bench::now_ns();
  if (kind == kOurs64Dirty) {
    // The stores of building a 1 MiB message (zero, then fill), into private
    // memory: the sender's 512 KiB L2 ends up full of dirty lines, as it is
    // when the 1 MiB message is sent.
    static std::vector<std::uint64_t> scratch(kBigElements);
    std::memset(scratch.data(), 0, scratch.size() * sizeof scratch[0]);
    for (std::size_t i = 0; i < scratch.size(); ++i) scratch[i] = element(seq, i);
    asm volatile("" : : "r"(scratch.data()) : "memory");  // the stores are not dead
  }
  if (kind != kUds1M && kind != kMq1M) {
    std::vector<ipc::Buffer> buffers;
    {
      ipc::MessageBuilder builder(*o.pool, small ? kSmallHint : kBigHint);
      fill(builder.initRoot<BenchMessage>(), seq, elements);
      buffers = std::move(builder).seal().take_buffers();
    }
    if (buffers.size() != 1) die("the message took " + std::to_string(buffers.size()) + " segments, expected 1");
    t0 = bench::now_ns();
    send_handles(*o.requests, buffers);
    ipc::Message m;
    receive_spin(*o.answers, m);
    if (m.size() != sizeof a) die("answer channel: a message of " + std::to_string(m.size()) + " bytes");
    std::memcpy(&a, m.data().data(), sizeof a);
  } else {
    capnp::MallocMessageBuilder builder(static_cast<capnp::uint>(kBigHint / sizeof(capnp::word)),
                                        capnp::AllocationStrategy::FIXED_SIZE);
    fill(builder.initRoot<BenchMessage>(), seq, elements);
    if (builder.getSegmentsForOutput().size() != 1) die("the malloc message took more than 1 segment");
    t0 = bench::now_ns();
    kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
    const kj::ArrayPtr<const kj::byte> bytes = flat.asBytes();
    if (kind == kUds1M) {
      write_all(o.fd[0], bytes.begin(), bytes.size());
      recv_spin(o.fd[0], &a, sizeof a);
    } else {
      o.mq_requests->send(bytes.begin(), bytes.size(), 0);
      bip::message_queue::size_type size = 0;
      unsigned priority = 0;
      std::uint32_t spins = 0;
      while (!o.mq_answers->try_receive(&a, sizeof a, size, priority)) {
        check_failed(spins);
        cpu_relax();
      }
      if (size != sizeof a) die("answer message_queue: a message of " + std::to_string(size) + " bytes");
    }
  }
  const double t1 = bench::now_ns();
  *build_ns = t0 - b0;
  if (!answer_matches(a, seq, elements))
    die(std::string(kKindName[kind]) + ": wrong answer for message " + std::to_string(seq) + " (seq " +
        std::to_string(a.seq) + ", size " + std::to_string(a.size) + ", last " + std::to_string(a.last) + ")");
  return t1 - t0;
}

Rep run_rep(const Objects& o, int rep, int block, int blocks) {
  constexpr int kWarmupBlocks = 1;
  constexpr int kHandOver = 2;  // round trips at the start of a block that are not counted
  const int total_blocks = kWarmupBlocks + blocks;
  auto kind_at = [rep, block](long i) {  // the kind of round trip i, as both processes derive it
    const long b = i / (static_cast<long>(block) * kKinds);
    const long k = (i / block) % kKinds;
    return static_cast<Kind>((rep + b + k) % kKinds);
  };
  const long total = static_cast<long>(total_blocks) * kKinds * block;
  g_state->ctl.child_cpu.store(-1, std::memory_order_relaxed);
  const pid_t pid = bench::cleanup::fork_watched(kWatchdogSeconds, [&] {
    g_state->ctl.child_cpu.store(bench::pin_to_cpu(1), std::memory_order_relaxed);
    try {
      child_body(o, total, kind_at);
    } catch (const std::exception& e) {
      die(e.what());
    }
  });
  std::vector<double> rt[kKinds], build[kKinds];
  std::uint64_t seq = static_cast<std::uint64_t>(rep) << 32;
  try {
    for (long i = 0; i < total; ++i) {
      const Kind kind = kind_at(i);
      double b = 0;
      const double t = round_trip(o, kind, ++seq, &b);
      if (i / (static_cast<long>(block) * kKinds) >= kWarmupBlocks && i % block >= kHandOver) {
        rt[kind].push_back(t);
        build[kind].push_back(b);
      }
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  bench::cleanup::reap(pid);
  Rep out{};
  for (int k = 0; k < kKinds; ++k) {
    out.p50[k] = bench::percentile(rt[k], 0.5) / 2;
    out.p99[k] = bench::percentile(rt[k], 0.99) / 2;
    out.build[k] = bench::median(build[k]);
  }
  return out;
}

double vmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double vmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

int run(const bench::Args& args, const Objects& o) {
  const int cpu0 = bench::pin_to_cpu(0);
  if (bench::cpu_count() < 2)
    std::printf("NOTE: only %d CPU: both sides share it, figures are not meaningful\n\n", bench::cpu_count());
  const int block = 25;
  const int blocks = args.quick ? 12 : 60;
  run_rep(o, 0, 5, 1);  // warm-up: page faults in the pool region, socket and queue buffers, malloc's thresholds

  std::vector<double> p50[kKinds], p99[kKinds], build[kKinds];
  std::vector<double> q64, quds, qmq, qdirty;  // per-repetition ratios of p50s
  for (int r = 0; r < args.reps; ++r) {
    const Rep x = run_rep(o, r, block, blocks);
    for (int k = 0; k < kKinds; ++k) {
      p50[k].push_back(x.p50[k]);
      p99[k].push_back(x.p99[k]);
      build[k].push_back(x.build[k]);
    }
    q64.push_back(x.p50[kOurs1M] / x.p50[kOurs64]);
    quds.push_back(x.p50[kOurs1M] / x.p50[kUds1M]);
    qmq.push_back(x.p50[kOurs1M] / x.p50[kMq1M]);
    qdirty.push_back(x.p50[kOurs1M] / x.p50[kOurs64Dirty]);
  }

  std::printf(
      "message_bench: one-way latency (round trip / 2) from send of a built message until the receiver\n"
      "  has read root.seq and the last list element (and answered); parent pinned to CPU %d, child to\n"
      "  CPU %d, all receives busy-poll; %d round trips per kind per repetition in interleaved blocks of %d;\n"
      "  p50 / p99 of a repetition, median of %d repetitions. Build = median time to build the message\n"
      "  before the clock starts (not part of the latency).\n",
      cpu0, g_state->ctl.child_cpu.load(), (block - 2) * blocks, block, args.reps);
  std::printf("  %-56s %10s %10s %10s %10s %10s\n", "", "p50", "min rep", "max rep", "p99", "build");
  for (int k = 0; k < kKinds; ++k)
    std::printf("  %-56s %7.2f us %7.2f us %7.2f us %7.2f us %7.1f us\n", kKindName[k], bench::median(p50[k]) / 1e3,
                vmin(p50[k]) / 1e3, vmax(p50[k]) / 1e3, bench::median(p99[k]) / 1e3, bench::median(build[k]) / 1e3);
  std::printf(
      "  ours 1 MiB / x, median of the per-repetition p50 ratios [min, max]:\n"
      "    vs ours 64 B %.3f [%.3f, %.3f] (goal <= 1.5)   vs uds copy %.3f [%.3f, %.3f]   vs boost mq copy "
      "%.3f [%.3f, %.3f]\n",
      bench::median(q64), vmin(q64), vmax(q64), bench::median(quds), vmin(quds), vmax(quds), bench::median(qmq),
      vmin(qmq), vmax(qmq));
  std::printf(
      "    vs the control (64 B sent right after the sender wrote 1 MiB elsewhere) %.3f [%.3f, %.3f]:\n"
      "    what is left when both sides start from the same dirty cache\n",
      bench::median(qdirty), vmin(qdirty), vmax(qdirty));
  std::printf(
      "  receiver: ours = MessageReader::parse (ChecksumCheck::never) + check_all(); baselines =\n"
      "  capnp::FlatArrayMessageReader over the copy; the sender's timed path for the baselines includes\n"
      "  capnp::messageToFlatArray (the serialisation copy).\n\n");

  const auto us = [](const std::vector<double>& v) { return bench::median(v) / 1e3; };
  bench::result(kBench, "latency_64B_p50", us(p50[kOurs64]), "us");
  bench::result(kBench, "latency_64B_p99", us(p99[kOurs64]), "us");
  bench::result(kBench, "latency_1MiB_p50", us(p50[kOurs1M]), "us");
  bench::result(kBench, "latency_1MiB_p99", us(p99[kOurs1M]), "us");
  bench::result(kBench, "latency_1MiB_uds_copy_p50", us(p50[kUds1M]), "us");
  bench::result(kBench, "latency_1MiB_uds_copy_p99", us(p99[kUds1M]), "us");
  bench::result(kBench, "latency_1MiB_boost_mq_copy_p50", us(p50[kMq1M]), "us");
  bench::result(kBench, "latency_1MiB_boost_mq_copy_p99", us(p99[kMq1M]), "us");
  bench::result(kBench, "latency_64B_after_1MiB_write_p50", us(p50[kOurs64Dirty]), "us");
  bench::result(kBench, "latency_64B_after_1MiB_write_p99", us(p99[kOurs64Dirty]), "us");
  bench::ratio(kBench, "latency_1MiB_vs_64B", bench::median(q64), 1);
  bench::ratio(kBench, "latency_1MiB_vs_uds_copy", bench::median(quds), 1);
  bench::ratio(kBench, "latency_1MiB_vs_boost_mq_copy", bench::median(qmq), 1);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  // Keep freed heap memory (no trim, no mmap for 1 MiB): the baselines'
  // 1 MiB malloc() calls (messageToFlatArray) then reuse mapped pages instead
  // of paying ~256 page faults per message. Favours the baselines.
  ::mallopt(M_MMAP_THRESHOLD, 16 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  bench::cleanup::install(kBench);
  {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) ::sigaction(sig, &sa, nullptr);
  }
  bench::cleanup::g_on_die = [] {
    if (g_state != nullptr) g_state->ctl.failed.store(1, std::memory_order_relaxed);
    unlink_extra();
  };

  const std::string domain = "bench" + std::to_string(::getpid());
  const std::string mq_requests = "ipc_message_bench_req_" + std::to_string(::getpid());
  const std::string mq_answers = "ipc_message_bench_ans_" + std::to_string(::getpid());
  int rc = 1;
  try {
    bench::cleanup::add_path("/dev/shm" + ipc::Segment::shm_name(kSegment, domain));
    bench::cleanup::add_path("/dev/shm/" + mq_requests);
    std::snprintf(g_extra_path, sizeof g_extra_path, "/dev/shm/%s", mq_answers.c_str());
    ipc::Segment::unlink(kSegment, domain);
    bip::message_queue::remove(mq_requests.c_str());
    bip::message_queue::remove(mq_answers.c_str());

    ipc::PoolConfig pool_cfg;
    pool_cfg.class_sizes = {256, 4096, 65536};
    pool_cfg.buffers_per_class = 16;
    pool_cfg.large_strategy = ipc::LargeStrategy::best_fit;
    pool_cfg.large_region_bytes = 8u << 20;
    ipc::ChannelConfig spsc;
    spsc.kind = ipc::ChannelKind::spsc;
    spsc.capacity = 16;
    spsc.slot_bytes = 192;  // room for the 8 handles of a message of 8 segments
    spsc.backpressure = ipc::Backpressure::fail;

    ipc::SegmentOptions so;
    so.size =
        ipc::BufferPool::bytes_needed(pool_cfg) + 2 * ipc::Channel::bytes_needed(spsc) + sizeof(State) + (1u << 20);
    so.domain = domain;
    ipc::Segment seg = ipc::Segment::create(kSegment, so);
    g_state = &seg.find_or_create<State>("state", ipc::ObjectType::raw);
    bip::message_queue mq_req(bip::create_only, mq_requests.c_str(), 1, kFlatMax);
    bip::message_queue mq_ans(bip::create_only, mq_answers.c_str(), 1, kAnswerBytes);
    {
      ipc::BufferPool pool = ipc::BufferPool::create(seg, kPool, pool_cfg);
      ipc::Channel requests = ipc::Channel::create(seg, kRequests, spsc, &pool);
      ipc::Channel answers = ipc::Channel::create(seg, kAnswers, spsc);
      Objects o{&seg, &pool, &requests, &answers, &mq_req, &mq_ans, {-1, -1}};
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, o.fd) != 0) sys_failed("socketpair(AF_UNIX, SOCK_STREAM)");
      rc = run(args, o);
      ::close(o.fd[0]);
      ::close(o.fd[1]);
      pool.flush();
      const ipc::PoolStats ps = pool.stats();
      std::uint32_t in_use = 0;
      for (const ipc::ClassStats& c : ps.classes) in_use += c.in_use;  // the large region counts as a class
      if (in_use != 0 || ps.claimed_bytes != 0) {
        std::printf("WARNING: %u pool buffers (%llu bytes) still in use after the run (a leak)\n", in_use,
                    static_cast<unsigned long long>(ps.claimed_bytes));
        rc = 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kBench, e.what());
    rc = 1;
  }
  g_state = nullptr;
  ipc::Segment::unlink(kSegment, domain);
  bip::message_queue::remove(mq_requests.c_str());
  bip::message_queue::remove(mq_answers.c_str());
  bench::cleanup::forget_paths();
  g_extra_path[0] = '\0';
  std::fflush(stdout);
  return rc;
}
