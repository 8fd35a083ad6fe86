// channel_bench: our ring channels (ipc/channel.hpp) and broadcast channel
// (ipc/broadcast.hpp) against their floors and baselines, all measured in the
// same run. Our objects live in one real ipc::Segment (domain "bench<pid>");
// boost::interprocess::message_queue is /dev/shm/ipc_channel_bench_<pid>.
// Both are unlinked on every exit path (normal, error, signal, watchdog).
// Parent pinned to CPU 0, the other process(es) to CPU 1.
//
// 1. Busy-poll latency, ping-pong between two processes (one-way = round
//    trip / 2; p50 and p99 of the round trips of a repetition, median over
//    repetitions). Every kind answers with a 64 B message the same way it asks.
//      ours 64B     SPSC channel (capacity 1024, slot_bytes 128): try_send of
//                   a 64 B inline message; the receiver loops on try_receive,
//                   checks all 64 B, answers on a second SPSC channel
//      ours 4KiB    the request is a fresh 4 KiB BufferPool buffer (same
//                   segment) sent as a handle (zero copy); the sender writes
//                   its first and last 64 B, the receiver checks those 128 B
//                   and releases the buffer (the last reference: it is freed)
//      floor        raw cache-line ping-pong: a 64 B line in shm, the writer
//                   writes 56 B and then a sequence number (release); the
//                   reader spins until it sees it and reads all 64 B, then
//                   answers the same way on a second line
// 2. Blocking latency, the same ping-pong without any spinning:
//      ours         SPSC channels created with spin = 0; try_send, then
//                   receive() (sleeps on the channel's futex Event at once)
//      floor        raw FUTEX_WAIT/FUTEX_WAKE on two shared 32-bit words (as in
//                   sync_bench); the waker always makes the wake syscall
// 3. SPSC throughput, 64 B messages: the child (CPU 1) produces N, the parent
//    (CPU 0) consumes and checks each sequence number; cost = time from the
//    start barrier until the consumer has the N-th message, / N.
//      ours         SPSC channel, capacity 1024, try_send / try_receive spin loops
//      boost spsc   boost::lockfree::spsc_queue<std::array<char,64>,
//                   capacity<1024>> placement-new'd in our segment; push/pop spin loops
//      boost mq     boost::interprocess::message_queue(1024 deep, 64 B),
//                   blocking send / receive (its normal use: mutex + condvars)
//      uds          socketpair(AF_UNIX): SOCK_SEQPACKET (one send/recv per
//                   message) and SOCK_STREAM (64 B writes, 16 KiB reads);
//                   the faster of the two (per run) is the baseline
// 4. Broadcast (lossy, capacity 1024, slot_bytes 128): publisher cost per
//    64 B message with 0, 1, 4, 16 subscriber processes busy-polling
//    try_receive, all subscribers pinned to CPU 1 (2-CPU machine: they share
//    it), publisher on CPU 0 publishing N messages back to back. Cost = the
//    publisher thread's CPU time (CLOCK_THREAD_CPUTIME_ID) per message, so
//    time the publisher spends preempted on this shared VM is not counted;
//    wall time is printed beside it. Every subscriber checks each message it
//    reads and that read + missed = N at the end.
//
// Drift (this is a noisy 2-vCPU VM) must hit all sides alike, so within each
// repetition the kinds alternate in blocks/chunks, in an order that rotates
// with the block and the repetition. Each RATIO is the median over
// repetitions of the ratio within a repetition: the VM's two vCPUs land on
// near or far host cores from one repetition to the next (a cache-line round
// trip of ~140 or ~380 ns here), which moves ours and its baseline together.
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ipc/broadcast.hpp"
#include "ipc/channel.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

namespace {

namespace bench = ipc::bench;
namespace bip = boost::interprocess;

constexpr const char* kBench = "channel_bench";
constexpr const char* kSegment = "chan";
constexpr unsigned kWatchdogSeconds = 60;  // per child run; a hung run is cleaned up, not left forever
constexpr std::size_t kMsg = 64;
constexpr std::size_t kBigBuffer = 4096;
constexpr std::uint32_t kCapacity = 1024;
constexpr std::uint32_t kSlotBytes = 128;

// Channel object names.
constexpr const char* kLatAB = "lat_ab";          // busy 64 B requests, parent -> child
constexpr const char* kLatABHandle = "lat_ab_h";  // busy 4 KiB handle requests, parent -> child
constexpr const char* kLatBA = "lat_ba";          // busy answers, child -> parent
constexpr const char* kBlkAB = "blk_ab";          // blocking requests
constexpr const char* kBlkBA = "blk_ba";          // blocking answers
constexpr const char* kTput = "tput";             // throughput, child -> parent
constexpr const char* kPool = "pool";             // 4 KiB buffers
constexpr const char* kBroadcast = "bcast";

using bench::cleanup::die;
using bench::cleanup::reap;

using BoostSpsc = boost::lockfree::spsc_queue<std::array<char, kMsg>, boost::lockfree::capacity<kCapacity>>;

// ---- shared state ----------------------------------------------------------------------------

// One cache line of the floor: 56 B payload then the sequence number.
struct alignas(64) FloorLine {
  unsigned char payload[56];
  std::atomic<std::uint64_t> seq{0};
};
static_assert(sizeof(FloorLine) == 64);

struct alignas(64) Line32 {
  std::atomic<std::uint32_t> v{0};
};

constexpr int kMaxSubscribers = 16;

struct State {
  struct alignas(64) {
    std::atomic<std::uint32_t> arrive{0};  // two-party spin barrier
    std::atomic<std::uint32_t> failed{0};  // set by a process that dies with an error
    std::atomic<int> child_cpu{-1};
  } ctl;
  FloorLine to_child;   // cache-line floor: parent -> child
  FloorLine to_parent;  // cache-line floor: child -> parent
  Line32 fx_to_child;   // futex floor
  Line32 fx_to_parent;
  struct alignas(64) {
    std::uint32_t errors = 0;       // payload errors seen by the child
    std::uint32_t first_error = 0;  // a code: see error_text()
  } check;
  struct alignas(64) {
    std::atomic<std::uint32_t> ready{0};  // subscribers subscribed
    std::atomic<std::uint32_t> stop{0};   // publisher done: drain and exit
    std::atomic<std::uint64_t> published{0};
  } bc;
  struct alignas(64) SubResult {
    std::uint64_t received = 0;
    std::uint64_t missed = 0;
    std::uint64_t errors = 0;
  } sub[kMaxSubscribers];
};

State* g_state = nullptr;  // a dying process flags the failure here for the other

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void check_failed(State* st) {
  if (st->ctl.failed.load(std::memory_order_relaxed)) die("the other process failed");
}

// Two-party spin barrier on st->ctl.arrive; `gen` counts the barriers this side passed.
void barrier(State* st, std::uint32_t& gen) {
  ++gen;
  st->ctl.arrive.fetch_add(1, std::memory_order_acq_rel);
  std::uint32_t spins = 0;
  while (st->ctl.arrive.load(std::memory_order_acquire) < 2 * gen) {
    if ((++spins & 0xffff) == 0) check_failed(st);
    cpu_relax();
  }
}

// Forks a child pinned to CPU 1 that runs fn() and exits; the parent returns its pid.
template <typename Fn>
pid_t spawn(State* st, Fn fn) {
  st->ctl.child_cpu.store(-1);
  st->ctl.arrive.store(0);
  return bench::cleanup::fork_watched(kWatchdogSeconds, [&] {
    st->ctl.child_cpu.store(bench::pin_to_cpu(1));
    try {
      fn();
    } catch (const std::exception& e) {
      die(e.what());
    }
  });
}

// ---- payloads ----------------------------------------------------------------------------------

// A 64 B message: the sequence number in the first 8 bytes, its low byte in the other 56.
inline void fill64(std::byte* p, std::uint64_t seq) {
  std::memcpy(p, &seq, 8);
  std::memset(p + 8, static_cast<unsigned char>(seq), kMsg - 8);
}

// Reads all 64 B; true if they are the message `seq`.
inline bool check64(const std::byte* p, std::uint64_t seq) {
  std::uint64_t got;
  std::memcpy(&got, p, 8);
  const auto v = static_cast<unsigned char>(seq);
  unsigned char bad = 0;
  for (std::size_t i = 8; i < kMsg; ++i) bad |= static_cast<unsigned char>(static_cast<unsigned char>(p[i]) ^ v);
  return got == seq && bad == 0;
}

inline void fill_floor(FloorLine& l, std::uint64_t seq) {
  std::memset(l.payload, static_cast<unsigned char>(seq), sizeof l.payload);
  l.seq.store(seq, std::memory_order_release);  // SYNC POINT: publishes the payload
}

// Spins until the line carries `seq`, then reads all 64 B (payload and sequence).
inline bool wait_floor(State* st, const FloorLine& l, std::uint64_t seq) {
  std::uint32_t spins = 0;
  while (l.seq.load(std::memory_order_acquire) != seq) {  // SYNC POINT: pairs with fill_floor
    if ((++spins & 0xfffff) == 0) check_failed(st);
    cpu_relax();
  }
  const auto v = static_cast<unsigned char>(seq);
  unsigned char bad = 0;
  for (unsigned char c : l.payload) bad |= static_cast<unsigned char>(c ^ v);
  return bad == 0;
}

enum ErrorCode : std::uint32_t {
  kErrPayload = 1,
  kErrNoBuffer = 2,
  kErrSend = 3,
  kErrSequence = 4,
};
const char* error_text(std::uint32_t e) {
  switch (e) {
    case kErrPayload: return "payload mismatch";
    case kErrNoBuffer: return "handle message without a buffer (or a lost buffer)";
    case kErrSend: return "send failed";
    case kErrSequence: return "out-of-order sequence number";
    default: return "unknown";
  }
}
void child_error(State* st, std::uint32_t code) {
  if (st->check.errors++ == 0) st->check.first_error = code;
}

// ---- ping-pong latency -------------------------------------------------------------------------

enum PingKind { kBusy64 = 0, kBusyHandle = 1, kFloorLine = 2, kBlock64 = 3, kFloorFutex = 4, kPingKinds = 5 };
constexpr const char* kPingName[kPingKinds] = {
    "ours: SPSC channel, 64 B inline, try_receive spin",
    "ours: SPSC channel, 4 KiB buffer handle, spin",
    "floor: raw cache-line ping-pong (64 B line)",
    "ours: SPSC channel, 64 B inline, receive() sleeps",
    "floor: raw FUTEX_WAIT/FUTEX_WAKE",
};

long futex(std::atomic<std::uint32_t>* w, int op, std::uint32_t val) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), op, val, nullptr, nullptr, 0);
}

struct Handles {
  ipc::Segment* seg;
  ipc::BufferPool* pool;
  ipc::Channel* lat_ab;
  ipc::Channel* lat_ab_h;
  ipc::Channel* lat_ba;
  ipc::Channel* blk_ab;
  ipc::Channel* blk_ba;
  ipc::Channel* tput;
};

[[noreturn]] [[gnu::noinline]] void send_failed(const char* where, ipc::SendStatus s) {
  die(std::string(where) + ": send failed: " + ipc::to_string(s));
}

// Sends until ok (the ring has room in a ping-pong; `full` only while the other side finishes a receive).
inline void send_spin(ipc::Channel& ch, std::span<const std::byte> bytes, const char* where) {
  for (;;) {
    ipc::SendStatus s = ch.try_send(bytes);
    if (s == ipc::SendStatus::ok) return;
    if (s != ipc::SendStatus::full) [[unlikely]]
      send_failed(where, s);
    cpu_relax();
  }
}

inline void receive_spin(State* st, ipc::Channel& ch, ipc::Message& m) {
  std::uint32_t spins = 0;
  while (ch.try_receive(m) != ipc::ReceiveStatus::ok) {
    if ((++spins & 0xfffff) == 0) check_failed(st);
    cpu_relax();
  }
}

inline void receive_block(ipc::Channel& ch, ipc::Message& m) {
  if (ch.receive(m) != ipc::ReceiveStatus::ok) [[unlikely]]
    die("blocking receive returned without a message");
}

struct PingRep {
  double p50[kPingKinds];  // one-way, ns
  double p99[kPingKinds];
};

// One repetition: a forked child answers `blocks` blocks of `block` round
// trips of each kind in `kinds`, interleaved block by block in a rotating
// order both sides derive from (rep, block). The parent times every round
// trip; the first 2 of each block (a hand-over between kinds) and the first
// `warmup_blocks` blocks are not counted.
PingRep pingpong_rep(const Handles& hd, State* st, const std::vector<PingKind>& kinds, int block, int blocks,
                     int warmup_blocks, int rep) {
  const int nk = static_cast<int>(kinds.size());
  auto kind_of = [&](int b, int k) { return kinds[static_cast<std::size_t>((rep + b + k) % nk)]; };
  st->to_child.seq.store(0);
  st->to_parent.seq.store(0);
  st->fx_to_child.v.store(0);
  st->fx_to_parent.v.store(0);
  st->check.errors = 0;
  st->check.first_error = 0;

  pid_t pid = spawn(st, [&] {
    ipc::BufferPool pool = ipc::BufferPool::open(*hd.seg, kPool);
    ipc::Channel ab = ipc::Channel::open(*hd.seg, kLatAB);
    ipc::Channel ab_h = ipc::Channel::open(*hd.seg, kLatABHandle, &pool);
    ipc::Channel ba = ipc::Channel::open(*hd.seg, kLatBA);
    ipc::Channel bab = ipc::Channel::open(*hd.seg, kBlkAB);
    ipc::Channel bba = ipc::Channel::open(*hd.seg, kBlkBA);
    ipc::Message m;
    std::byte answer[kMsg];
    std::uint64_t seq = 0;
    std::uint32_t fx_seen = 0;
    for (int b = 0; b < warmup_blocks + blocks; ++b)
      for (int k = 0; k < nk; ++k) {
        const PingKind kind = kind_of(b, k);
        for (int r = 0; r < block; ++r) {
          ++seq;
          switch (kind) {
            case kBusy64:
              receive_spin(st, ab, m);
              if (m.size() != kMsg || !check64(m.data().data(), seq)) child_error(st, kErrPayload);
              fill64(answer, seq);
              send_spin(ba, answer, "answer");
              break;
            case kBusyHandle: {
              receive_spin(st, ab_h, m);
              if (m.buffers().size() != 1 || m.lost_buffers() != 0) {
                child_error(st, kErrNoBuffer);
              } else {
                const std::byte* p = m.buffers()[0].data();
                if (!check64(p, seq) || !check64(p + kBigBuffer - kMsg, seq)) child_error(st, kErrPayload);
              }
              m.clear();  // releases the last reference: the buffer is freed
              fill64(answer, seq);
              send_spin(ba, answer, "answer");
              break;
            }
            case kFloorLine:
              if (!wait_floor(st, st->to_child, seq)) child_error(st, kErrPayload);
              fill_floor(st->to_parent, seq);
              break;
            case kBlock64:
              receive_block(bab, m);
              if (m.size() != kMsg || !check64(m.data().data(), seq)) child_error(st, kErrPayload);
              fill64(answer, seq);
              if (bba.try_send(answer) != ipc::SendStatus::ok) child_error(st, kErrSend);
              break;
            case kFloorFutex:
              while (st->fx_to_child.v.load(std::memory_order_acquire) == fx_seen)
                futex(&st->fx_to_child.v, FUTEX_WAIT, fx_seen);
              fx_seen = st->fx_to_child.v.load(std::memory_order_acquire);
              st->fx_to_parent.v.fetch_add(1, std::memory_order_release);
              futex(&st->fx_to_parent.v, FUTEX_WAKE, 1);
              break;
            default: break;
          }
        }
      }
  });

  std::vector<double> rt[kPingKinds];
  for (auto& v : rt) v.reserve(static_cast<std::size_t>(block * blocks));
  ipc::Message m;
  std::byte request[kMsg];
  std::uint64_t seq = 0;
  std::uint32_t answer_errors = 0;
  for (int b = 0; b < warmup_blocks + blocks; ++b)
    for (int k = 0; k < nk; ++k) {
      const PingKind kind = kind_of(b, k);
      for (int r = 0; r < block; ++r) {
        ++seq;
        const double t0 = bench::now_ns();
        switch (kind) {
          case kBusy64:
            fill64(request, seq);
            send_spin(*hd.lat_ab, request, "request");
            receive_spin(st, *hd.lat_ba, m);
            if (!check64(m.data().data(), seq)) ++answer_errors;
            break;
          case kBusyHandle: {
            ipc::Allocation a = hd.pool->allocate(kBigBuffer);
            if (!a) [[unlikely]]
              die(std::string("BufferPool::allocate(4096): ") + ipc::to_string(a.status));
            fill64(a.buffer.data(), seq);
            fill64(a.buffer.data() + kBigBuffer - kMsg, seq);
            ipc::SendStatus s = hd.lat_ab_h->try_send({}, std::span<ipc::Buffer>(&a.buffer, 1));
            if (s != ipc::SendStatus::ok) [[unlikely]]
              send_failed("handle request", s);
            receive_spin(st, *hd.lat_ba, m);
            if (!check64(m.data().data(), seq)) ++answer_errors;
            break;
          }
          case kFloorLine:
            fill_floor(st->to_child, seq);
            if (!wait_floor(st, st->to_parent, seq)) ++answer_errors;
            break;
          case kBlock64:
            fill64(request, seq);
            if (hd.blk_ab->try_send(request) != ipc::SendStatus::ok) die("blocking request: ring full");
            receive_block(*hd.blk_ba, m);
            if (!check64(m.data().data(), seq)) ++answer_errors;
            break;
          case kFloorFutex: {
            const std::uint32_t seen = st->fx_to_parent.v.load(std::memory_order_acquire);
            st->fx_to_child.v.fetch_add(1, std::memory_order_release);
            futex(&st->fx_to_child.v, FUTEX_WAKE, 1);
            while (st->fx_to_parent.v.load(std::memory_order_acquire) == seen)
              futex(&st->fx_to_parent.v, FUTEX_WAIT, seen);
            break;
          }
          default: break;
        }
        const double t1 = bench::now_ns();
        if (b >= warmup_blocks && r > 1) rt[kind].push_back(t1 - t0);
      }
    }
  reap(pid);
  if (answer_errors != 0) die(std::to_string(answer_errors) + " wrong answers in the latency ping-pong");
  if (st->check.errors != 0)
    die("latency child: " + std::to_string(st->check.errors) + " errors, first: " + error_text(st->check.first_error));
  PingRep out{};
  for (int k = 0; k < kPingKinds; ++k) {
    out.p50[k] = rt[k].empty() ? 0 : bench::percentile(rt[k], 0.5) / 2;
    out.p99[k] = rt[k].empty() ? 0 : bench::percentile(rt[k], 0.99) / 2;
  }
  return out;
}

// ---- throughput --------------------------------------------------------------------------------

enum Side { kOurs = 0, kBoostSpscSide = 1, kBoostMq = 2, kUdsSeq = 3, kUdsStream = 4, kSides = 5 };
constexpr const char* kSideName[kSides] = {
    "ours: SPSC channel (try_send/try_receive spin)", "boost::lockfree::spsc_queue in shm (spin)",
    "boost::interprocess::message_queue (blocking)",  "Unix socketpair SOCK_SEQPACKET",
    "Unix socketpair SOCK_STREAM (64 B writes)",
};

struct TputObjects {
  ipc::Segment* seg;
  BoostSpsc* spsc;
  bip::message_queue* mq;
  int seq_fd[2];  // [0] parent reads, [1] child writes
  int stream_fd[2];
};

[[noreturn]] [[gnu::noinline]] void sys_failed(const char* what) {
  die(std::string(what) + ": " + std::strerror(errno));
}

void produce(Side side, const TputObjects& o, ipc::Channel& ch, std::uint64_t first, long n) {
  std::array<char, kMsg> msg{};
  auto* bytes = reinterpret_cast<std::byte*>(msg.data());
  for (long i = 0; i < n; ++i) {
    fill64(bytes, first + static_cast<std::uint64_t>(i));
    switch (side) {
      case kOurs: send_spin(ch, std::span<const std::byte>(bytes, kMsg), "throughput"); break;
      case kBoostSpscSide:
        while (!o.spsc->push(msg)) cpu_relax();
        break;
      case kBoostMq: o.mq->send(msg.data(), kMsg, 0); break;
      case kUdsSeq:
        if (::send(o.seq_fd[1], msg.data(), kMsg, 0) != static_cast<ssize_t>(kMsg)) sys_failed("send (seqpacket)");
        break;
      case kUdsStream:
        if (::write(o.stream_fd[1], msg.data(), kMsg) != static_cast<ssize_t>(kMsg)) sys_failed("write (stream)");
        break;
      default: break;
    }
  }
}

// Consumes n messages; returns the number of wrong ones.
long consume(Side side, State* st, const TputObjects& o, ipc::Channel& ch, std::uint64_t first, long n) {
  long bad = 0;
  std::array<char, kMsg> msg{};
  ipc::Message m;
  std::uint32_t spins = 0;
  if (side == kUdsStream) {
    static std::array<char, 16384> buf;
    std::size_t have = 0;
    long got = 0;
    while (got < n) {
      ssize_t r = ::read(o.stream_fd[0], buf.data() + have, buf.size() - have);
      if (r <= 0) sys_failed("read (stream)");
      have += static_cast<std::size_t>(r);
      std::size_t off = 0;
      for (; have - off >= kMsg; off += kMsg, ++got)
        if (!check64(reinterpret_cast<const std::byte*>(buf.data() + off), first + static_cast<std::uint64_t>(got)))
          ++bad;
      std::memmove(buf.data(), buf.data() + off, have - off);
      have -= off;
    }
    return bad;
  }
  for (long i = 0; i < n; ++i) {
    const std::byte* p = reinterpret_cast<const std::byte*>(msg.data());
    switch (side) {
      case kOurs:
        while (ch.try_receive(m) != ipc::ReceiveStatus::ok) {
          if ((++spins & 0xfffff) == 0) check_failed(st);
          cpu_relax();
        }
        p = m.data().data();
        break;
      case kBoostSpscSide:
        while (!o.spsc->pop(msg)) {
          if ((++spins & 0xfffff) == 0) check_failed(st);
          cpu_relax();
        }
        break;
      case kBoostMq: {
        bip::message_queue::size_type size = 0;
        unsigned prio = 0;
        o.mq->receive(msg.data(), kMsg, size, prio);
        if (size != kMsg) ++bad;
        break;
      }
      case kUdsSeq:
        if (::recv(o.seq_fd[0], msg.data(), kMsg, 0) != static_cast<ssize_t>(kMsg)) sys_failed("recv (seqpacket)");
        break;
      default: break;
    }
    if (!check64(p, first + static_cast<std::uint64_t>(i))) ++bad;
  }
  return bad;
}

inline Side side_of(int rep, int chunk, int k) { return static_cast<Side>((rep + chunk + k) % kSides); }

// One repetition: the child produces `chunks` chunks of n messages per side
// (sides rotating), the parent consumes; a spin barrier starts each chunk.
// Returns ns per message per side.
std::array<double, kSides> throughput_rep(const TputObjects& o, State* st, ipc::Channel& ch, long n, int chunks,
                                          int rep) {
  pid_t pid = spawn(st, [&] {
    ipc::Channel mine = ipc::Channel::open(*o.seg, kTput);
    std::uint32_t gen = 0;
    for (int c = 0; c < chunks; ++c)
      for (int k = 0; k < kSides; ++k) {
        barrier(st, gen);
        produce(side_of(rep, c, k), o, mine, static_cast<std::uint64_t>(c) << 32, n);
      }
  });
  std::array<double, kSides> total{};
  long bad = 0;
  std::uint32_t gen = 0;
  for (int c = 0; c < chunks; ++c)
    for (int k = 0; k < kSides; ++k) {
      const Side side = side_of(rep, c, k);
      barrier(st, gen);
      const double t0 = bench::now_ns();
      bad += consume(side, st, o, ch, static_cast<std::uint64_t>(c) << 32, n);
      total[side] += bench::now_ns() - t0;
    }
  reap(pid);
  if (bad != 0) die("throughput: " + std::to_string(bad) + " messages with a wrong sequence number or payload");
  for (double& t : total) t /= static_cast<double>(n * chunks);
  return total;
}

// ---- broadcast ---------------------------------------------------------------------------------

// Subscription process: busy-polls until the publisher is done and the ring is drained.
void subscriber_body(ipc::Segment& seg, State* st, int index) {
  ipc::Broadcast bc = ipc::Broadcast::open(seg, kBroadcast);
  ipc::Subscription sub = bc.subscribe(ipc::StartAt::next);
  st->bc.ready.fetch_add(1, std::memory_order_acq_rel);
  ipc::Message m;
  std::uint64_t last = 0;
  std::uint64_t errors = 0;
  std::uint32_t spins = 0;
  for (;;) {
    // stop is read before the attempt: once it is set, every message is
    // committed, so an empty ring then means fully drained.
    const bool stop = st->bc.stop.load(std::memory_order_acquire) != 0;
    if (sub.try_receive(m) == ipc::ReceiveStatus::ok) {
      std::uint64_t seq = 0;
      if (m.size() != kMsg) {
        ++errors;
        continue;
      }
      std::memcpy(&seq, m.data().data(), 8);
      if (!check64(m.data().data(), seq) || seq <= last) ++errors;
      last = seq;
      continue;
    }
    if (stop) break;
    if ((++spins & 0xfffff) == 0) check_failed(st);
    cpu_relax();
  }
  st->sub[index].received = sub.received();
  st->sub[index].missed = sub.missed();
  st->sub[index].errors = errors;
}

inline double thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

struct BroadcastRep {
  double cpu_ns_per_publish;   // publisher thread CPU time / n
  double wall_ns_per_publish;  // wall time / n (includes preemption)
  std::uint64_t received;      // summed over subscribers
  std::uint64_t missed;
};

// Forks `subs` subscriber processes pinned to CPU 1 (they die with the
// parent: PR_SET_PDEATHSIG), waits until all subscribed, publishes n 64 B
// messages and times that.
BroadcastRep broadcast_rep(ipc::Segment& seg, ipc::Broadcast& bc, State* st, int subs, long n,
                           std::uint64_t& next_seq) {
  st->bc.ready.store(0);
  st->bc.stop.store(0);
  for (auto& s : st->sub) s = State::SubResult{};
  const pid_t parent = ::getpid();
  std::vector<pid_t> pids;
  std::fflush(stdout);
  std::fflush(stderr);
  for (int i = 0; i < subs; ++i) {
    pid_t pid = ::fork();
    if (pid < 0) sys_failed("fork (subscriber)");
    if (pid == 0) {
      bench::cleanup::g_is_child = 1;
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      bench::pin_to_cpu(1);
      try {
        subscriber_body(seg, st, i);
      } catch (const std::exception& e) {
        die(e.what());
      }
      ::_exit(0);
    }
    pids.push_back(pid);
    if (i == 0) bench::cleanup::g_child = pid;  // the others die with us (PDEATHSIG)
  }
  ::alarm(kWatchdogSeconds);
  std::uint32_t spins = 0;
  while (st->bc.ready.load(std::memory_order_acquire) < static_cast<std::uint32_t>(subs)) {
    if ((++spins & 0xfff) == 0) check_failed(st);
    sched_yield();  // subscribers share CPU 1; opening and subscribing takes them a moment
  }
  std::byte msg[kMsg];
  const double t0 = bench::now_ns();
  const double c0 = thread_cpu_ns();
  for (long i = 0; i < n; ++i) {
    fill64(msg, ++next_seq);
    ipc::SendStatus s = bc.try_publish(msg);
    if (s != ipc::SendStatus::ok) [[unlikely]]
      send_failed("broadcast publish", s);
  }
  const double c1 = thread_cpu_ns();
  const double t1 = bench::now_ns();
  st->bc.stop.store(1, std::memory_order_release);
  for (pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
      if (errno != EINTR) sys_failed("waitpid (subscriber)");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      die("subscriber failed (status " + std::to_string(status) + ")");
  }
  ::alarm(0);
  bench::cleanup::g_child = 0;
  BroadcastRep out{(c1 - c0) / static_cast<double>(n), (t1 - t0) / static_cast<double>(n), 0, 0};
  std::uint64_t errors = 0;
  for (int i = 0; i < subs; ++i) {
    if (st->sub[i].received + st->sub[i].missed != static_cast<std::uint64_t>(n))
      std::printf("  WARNING: broadcast subscriber %d of %d: read %llu + missed %llu != %ld published\n", i, subs,
                  static_cast<unsigned long long>(st->sub[i].received),
                  static_cast<unsigned long long>(st->sub[i].missed), n);
    out.received += st->sub[i].received;
    out.missed += st->sub[i].missed;
    errors += st->sub[i].errors;
  }
  if (errors != 0) die("broadcast: subscribers saw " + std::to_string(errors) + " wrong or out-of-order messages");
  return out;
}

// ---- the run -----------------------------------------------------------------------------------

struct Line {
  enum { result, ratio } kind;
  std::string metric;
  double a, b;
  const char* unit;
};

double vmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double vmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

int run(const bench::Args& args, const Handles& hd, TputObjects& to, ipc::Broadcast& bc, State* st) {
  const int reps = args.reps;
  const int cpu0 = bench::pin_to_cpu(0);
  std::vector<Line> lines;
  if (bench::cpu_count() < 2)
    std::printf("NOTE: only %d CPU: both sides share it, figures are not meaningful\n\n", bench::cpu_count());

  // 1 + 2. Latency.
  {
    const int block = 200;
    const int blocks_busy = args.quick ? 20 : 60;
    const int blocks_blocking = args.quick ? 5 : 20;
    std::vector<double> p50[kPingKinds], p99[kPingKinds];
    std::vector<double> q_busy, q_handle, q_blocking;  // per-repetition ratios
    for (int r = 0; r < reps; ++r) {
      PingRep busy = pingpong_rep(hd, st, {kBusy64, kBusyHandle, kFloorLine}, block, blocks_busy, 1, r);
      PingRep blk = pingpong_rep(hd, st, {kBlock64, kFloorFutex}, block, blocks_blocking, 1, r);
      for (int k : {kBusy64, kBusyHandle, kFloorLine}) {
        p50[k].push_back(busy.p50[k]);
        p99[k].push_back(busy.p99[k]);
      }
      for (int k : {kBlock64, kFloorFutex}) {
        p50[k].push_back(blk.p50[k]);
        p99[k].push_back(blk.p99[k]);
      }
      q_busy.push_back(busy.p50[kBusy64] / busy.p50[kFloorLine]);
      q_handle.push_back(busy.p50[kBusyHandle] / busy.p50[kFloorLine]);
      q_blocking.push_back(blk.p50[kBlock64] / blk.p50[kFloorFutex]);
    }
    std::printf(
        "channel_bench 1+2: one-way latency (round trip / 2), parent pinned to CPU %d, child to CPU %d,\n"
        "  busy kinds: %d round trips each per repetition, blocking kinds: %d, in interleaved blocks of %d;\n"
        "  p50 / p99 of a repetition, median of %d repetitions\n",
        cpu0, st->ctl.child_cpu.load(), block * blocks_busy, block * blocks_blocking, block, reps);
    std::printf("  %-52s %10s %10s %10s %10s\n", "", "p50", "min rep", "max rep", "p99");
    for (int k = 0; k < kPingKinds; ++k)
      std::printf("  %-52s %7.1f ns %7.1f ns %7.1f ns %7.1f ns\n", kPingName[k], bench::median(p50[k]), vmin(p50[k]),
                  vmax(p50[k]), bench::median(p99[k]));
    std::printf(
        "  ratio to its floor, median of the per-repetition ratios [min, max]:\n"
        "    busy 64B %.3f [%.3f, %.3f]   busy 4KiB handle %.3f [%.3f, %.3f]   blocking 64B %.3f [%.3f, %.3f]\n\n",
        bench::median(q_busy), vmin(q_busy), vmax(q_busy), bench::median(q_handle), vmin(q_handle), vmax(q_handle),
        bench::median(q_blocking), vmin(q_blocking), vmax(q_blocking));
    const auto us = [](const std::vector<double>& v) { return bench::median(v) / 1e3; };
    lines.push_back({Line::result, "latency_busy_64B_p50", us(p50[kBusy64]), 0, "us"});
    lines.push_back({Line::result, "latency_busy_64B_p99", us(p99[kBusy64]), 0, "us"});
    lines.push_back({Line::result, "latency_busy_4KiB_handle_p50", us(p50[kBusyHandle]), 0, "us"});
    lines.push_back({Line::result, "latency_busy_4KiB_handle_p99", us(p99[kBusyHandle]), 0, "us"});
    lines.push_back({Line::result, "latency_cacheline_floor_p50", us(p50[kFloorLine]), 0, "us"});
    lines.push_back({Line::result, "latency_cacheline_floor_p99", us(p99[kFloorLine]), 0, "us"});
    lines.push_back({Line::result, "latency_blocking_64B_p50", us(p50[kBlock64]), 0, "us"});
    lines.push_back({Line::result, "latency_blocking_64B_p99", us(p99[kBlock64]), 0, "us"});
    lines.push_back({Line::result, "latency_futex_floor_p50", us(p50[kFloorFutex]), 0, "us"});
    lines.push_back({Line::result, "latency_futex_floor_p99", us(p99[kFloorFutex]), 0, "us"});
    lines.push_back({Line::ratio, "latency_busy_64B_vs_cacheline_floor", bench::median(q_busy), 1, nullptr});
    lines.push_back({Line::ratio, "latency_busy_4KiB_handle_vs_cacheline_floor", bench::median(q_handle), 1, nullptr});
    lines.push_back({Line::ratio, "latency_blocking_64B_vs_futex_floor", bench::median(q_blocking), 1, nullptr});
  }

  // 3. Throughput.
  {
    const long n = args.quick ? 15'000 : 100'000;  // messages per side per chunk
    const int chunks = args.quick ? 2 : 3;
    throughput_rep(to, st, *hd.tput, n / 10, 1, 0);  // warm-up (page faults, socket buffers, frequency)
    std::vector<double> v[kSides];
    std::vector<double> q[kSides];  // per repetition: ours / this side
    for (int r = 0; r < reps; ++r) {
      std::array<double, kSides> x = throughput_rep(to, st, *hd.tput, n, chunks, r);
      for (int k = 0; k < kSides; ++k) {
        v[k].push_back(x[k]);
        q[k].push_back(x[kOurs] / x[k]);
      }
    }
    const double ours = bench::median(v[kOurs]);
    const double seq = bench::median(v[kUdsSeq]), stream = bench::median(v[kUdsStream]);
    const bool stream_faster = stream < seq;
    std::printf(
        "channel_bench 3: SPSC throughput, 64 B messages, producer pinned to CPU %d, consumer to CPU %d,\n"
        "  %ld messages per side per repetition in %d interleaved chunks, time per message, median of %d\n",
        st->ctl.child_cpu.load(), cpu0, n * chunks, chunks, reps);
    std::printf("  %-52s %11s %9s %9s %11s %11s\n", "", "per msg", "min rep", "max rep", "ours/this*", "msgs/s");
    for (int k = 0; k < kSides; ++k) {
      const double m = bench::median(v[k]);
      std::printf("  %-52s %8.1f ns %9.1f %9.1f %11.3f %10.2fM\n", kSideName[k], m, vmin(v[k]), vmax(v[k]),
                  bench::median(q[k]), 1e3 / m);
    }
    std::printf("  * median of the per-repetition ratios (the sides of a repetition share its conditions)\n");
    std::printf("  UDS baseline for the ratio: %s (the faster of the two in this run)\n\n",
                stream_faster ? "SOCK_STREAM" : "SOCK_SEQPACKET");
    lines.push_back({Line::result, "spsc_throughput_64B", ours, 0, "ns"});
    lines.push_back({Line::result, "spsc_throughput_64B_boost_spsc", bench::median(v[kBoostSpscSide]), 0, "ns"});
    lines.push_back({Line::result, "spsc_throughput_64B_boost_mq", bench::median(v[kBoostMq]), 0, "ns"});
    lines.push_back({Line::result, "spsc_throughput_64B_uds_seqpacket", seq, 0, "ns"});
    lines.push_back({Line::result, "spsc_throughput_64B_uds_stream", stream, 0, "ns"});
    lines.push_back({Line::ratio, "spsc_throughput_64B_vs_boost_spsc", bench::median(q[kBoostSpscSide]), 1, nullptr});
    lines.push_back({Line::ratio, "spsc_throughput_64B_vs_boost_mq", bench::median(q[kBoostMq]), 1, nullptr});
    lines.push_back({Line::ratio, "spsc_throughput_64B_vs_uds", bench::median(q[stream_faster ? kUdsStream : kUdsSeq]),
                     1, nullptr});
  }

  // 4. Broadcast.
  {
    const long n = args.quick ? 100'000 : 400'000;
    constexpr int kCounts[4] = {0, 1, 4, 16};
    std::uint64_t next_seq = 0;
    broadcast_rep(*hd.seg, bc, st, 1, n / 10, next_seq);  // warm-up
    std::vector<double> v[4], wall[4];
    std::vector<double> q4, q16;  // per-repetition ratios to 1 subscriber
    std::vector<double> recv_share[4], missed_share[4];
    for (int r = 0; r < reps; ++r)
      for (int k = 0; k < 4; ++k) {
        const int idx = (r + k) % 4;
        const int subs = kCounts[idx];
        BroadcastRep b = broadcast_rep(*hd.seg, bc, st, subs, n, next_seq);
        v[idx].push_back(b.cpu_ns_per_publish);
        wall[idx].push_back(b.wall_ns_per_publish);
        if (k == 3) {  // every count has run in this repetition
          q4.push_back(v[2].back() / v[1].back());
          q16.push_back(v[3].back() / v[1].back());
        }
        if (subs > 0) {
          recv_share[idx].push_back(static_cast<double>(b.received) / static_cast<double>(subs * n));
          missed_share[idx].push_back(static_cast<double>(b.received + b.missed) / static_cast<double>(subs * n));
        }
      }
    std::printf(
        "channel_bench 4: broadcast (lossy, capacity %u, slot_bytes %u), publisher pinned to CPU %d,\n"
        "  all subscribers busy-polling try_receive pinned to CPU %d (they share it), %ld x 64 B try_publish\n"
        "  back to back per repetition; cost = publisher thread CPU time per message (wall time,\n"
        "  which includes preemption by other processes, beside it), median of %d\n",
        kCapacity, kSlotBytes, cpu0, bench::cpu_count() > 1 ? 1 : 0, n, reps);
    std::printf("  %-30s %11s %9s %9s %10s %10s %18s\n", "", "CPU/publish", "min rep", "max rep", "wall", "read/sub",
                "(read+missed)/sub");
    for (int k = 0; k < 4; ++k) {
      char name[64];
      std::snprintf(name, sizeof name, "%d subscriber%s", kCounts[k], kCounts[k] == 1 ? "" : "s");
      if (kCounts[k] == 0)
        std::printf("  %-30s %8.1f ns %9.1f %9.1f %7.1f ns %10s %18s\n", name, bench::median(v[k]), vmin(v[k]),
                    vmax(v[k]), bench::median(wall[k]), "-", "-");
      else
        std::printf("  %-30s %8.1f ns %9.1f %9.1f %7.1f ns %9.1f%% %17.1f%%\n", name, bench::median(v[k]), vmin(v[k]),
                    vmax(v[k]), bench::median(wall[k]), 100 * bench::median(recv_share[k]),
                    100 * bench::median(missed_share[k]));
    }
    std::printf("  read/sub: share of the messages a subscriber read (lossy: the rest were overrun)\n");
    std::printf(
        "  ratio to 1 subscriber, median of the per-repetition ratios [min, max]: 4 subs %.3f [%.3f, %.3f], "
        "16 subs %.3f [%.3f, %.3f]\n\n",
        bench::median(q4), vmin(q4), vmax(q4), bench::median(q16), vmin(q16), vmax(q16));
    lines.push_back({Line::result, "broadcast_publish_0sub", bench::median(v[0]), 0, "ns"});
    lines.push_back({Line::result, "broadcast_publish_1sub", bench::median(v[1]), 0, "ns"});
    lines.push_back({Line::result, "broadcast_publish_4sub", bench::median(v[2]), 0, "ns"});
    lines.push_back({Line::result, "broadcast_publish_16sub", bench::median(v[3]), 0, "ns"});
    lines.push_back({Line::ratio, "broadcast_4sub_vs_1sub", bench::median(q4), 1, nullptr});
    lines.push_back({Line::ratio, "broadcast_16sub_vs_1sub", bench::median(q16), 1, nullptr});
  }

  for (const Line& l : lines)
    if (l.kind == Line::result) bench::result(kBench, l.metric, l.a, l.unit);
  for (const Line& l : lines)
    if (l.kind == Line::ratio) bench::ratio(kBench, l.metric, l.a, l.b);
  return 0;
}

void make_socketpair(int type, int fds[2], const char* what) {
  if (::socketpair(AF_UNIX, type, 0, fds) != 0) sys_failed(what);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args = bench::parse_args(argc, argv);
  bench::cleanup::install(kBench);
  bench::cleanup::g_on_die = [] {
    if (g_state != nullptr) g_state->ctl.failed.store(1);
  };

  const std::string domain = "bench" + std::to_string(::getpid());
  const std::string mq_name = "ipc_channel_bench_" + std::to_string(::getpid());
  int rc = 1;
  try {
    bench::cleanup::add_path("/dev/shm" + ipc::Segment::shm_name(kSegment, domain));
    bench::cleanup::add_path("/dev/shm/" + mq_name);
    ipc::Segment::unlink(kSegment, domain);
    bip::message_queue::remove(mq_name.c_str());

    ipc::PoolConfig pool_cfg;
    pool_cfg.class_sizes = {kBigBuffer};
    pool_cfg.buffers_per_class = 128;
    ipc::ChannelConfig spsc;
    spsc.kind = ipc::ChannelKind::spsc;
    spsc.capacity = kCapacity;
    spsc.slot_bytes = kSlotBytes;
    spsc.backpressure = ipc::Backpressure::fail;  // every send here is try_send
    spsc.spin = 0;                                // receive() sleeps at once
    ipc::BroadcastConfig bc_cfg;
    bc_cfg.capacity = kCapacity;
    bc_cfg.slot_bytes = kSlotBytes;
    bc_cfg.policy = ipc::BroadcastPolicy::lossy;

    ipc::SegmentOptions so;
    so.size = ipc::BufferPool::bytes_needed(pool_cfg) + 6 * ipc::Channel::bytes_needed(spsc) +
              ipc::Broadcast::bytes_needed(bc_cfg) + sizeof(BoostSpsc) + sizeof(State) + (1u << 20);
    so.domain = domain;
    ipc::Segment seg = ipc::Segment::create(kSegment, so);
    State* st = &seg.find_or_create<State>("state", ipc::ObjectType::raw);
    g_state = st;
    BoostSpsc* bspsc = &seg.find_or_create<BoostSpsc>("boost_spsc", ipc::ObjectType::raw);
    bip::message_queue mq(bip::create_only, mq_name.c_str(), kCapacity, kMsg);
    int rc_run = 1;
    {
      ipc::BufferPool pool = ipc::BufferPool::create(seg, kPool, pool_cfg);
      ipc::Channel lat_ab = ipc::Channel::create(seg, kLatAB, spsc);
      ipc::Channel lat_ab_h = ipc::Channel::create(seg, kLatABHandle, spsc, &pool);
      ipc::Channel lat_ba = ipc::Channel::create(seg, kLatBA, spsc);
      ipc::Channel blk_ab = ipc::Channel::create(seg, kBlkAB, spsc);
      ipc::Channel blk_ba = ipc::Channel::create(seg, kBlkBA, spsc);
      ipc::Channel tput = ipc::Channel::create(seg, kTput, spsc);
      ipc::Broadcast bc = ipc::Broadcast::create(seg, kBroadcast, bc_cfg);
      Handles hd{&seg, &pool, &lat_ab, &lat_ab_h, &lat_ba, &blk_ab, &blk_ba, &tput};
      TputObjects to{&seg, bspsc, &mq, {-1, -1}, {-1, -1}};
      make_socketpair(SOCK_SEQPACKET, to.seq_fd, "socketpair(SOCK_SEQPACKET)");
      make_socketpair(SOCK_STREAM, to.stream_fd, "socketpair(SOCK_STREAM)");
      rc_run = run(args, hd, to, bc, st);
      for (int fd : {to.seq_fd[0], to.seq_fd[1], to.stream_fd[0], to.stream_fd[1]}) ::close(fd);
      pool.flush();
      const ipc::PoolStats ps = pool.stats();
      for (const ipc::ClassStats& c : ps.classes)
        if (c.in_use != 0)
          std::printf("WARNING: pool class %zu B: %u buffers still in use after the run (a leak)\n", c.buffer_size,
                      c.in_use);
    }
    rc = rc_run;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "channel_bench: %s\n", e.what());
    rc = 1;
  }
  g_state = nullptr;
  ipc::Segment::unlink(kSegment, domain);
  bip::message_queue::remove(mq_name.c_str());
  bench::cleanup::forget_paths();
  std::fflush(stdout);
  return rc;
}
