// channel_demo: ring channels and broadcast between real processes.
//   1. Work queue: 2 producer processes and 2 consumer processes share an
//      MPMC channel; every 8th message carries a 4 KiB pool buffer (zero
//      copy: only its 16-byte handle crosses). A third producer is SIGKILLed
//      in the middle of its stream; nobody hangs, and every message whose
//      send() had returned is received exactly once.
//   2. Broadcast: one publisher, a fast and a slow subscriber on a lossy
//      broadcast channel: the slow one is overrun and told exactly how many
//      messages it missed.
//   3. Typed Cap'n Proto messages: a Publisher<Task> builds tasks directly
//      in pool buffers (64 B and 1 MiB payloads) and sends only their
//      handles; a worker process reads them in place and answers with a
//      Publisher<Result>. Latency of a 1 MiB task is about that of a 64 B one.
//   4. Live figures: ping-pong latency over two SPSC channels (busy-poll and
//      blocking), and streaming throughput.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ipc/broadcast.hpp"
#include "ipc/channel.hpp"
#include "ipc/endpoint.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"
#include "tasks.capnp.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Item {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint64_t check;  // producer * 2^32 + seq, scrambled
};
std::uint64_t check_of(std::uint32_t p, std::uint32_t s) {
  return (std::uint64_t{p} << 32 | s) * 0x9e3779b97f4a7c15ull;
}

// Shared bookkeeping: what producers had sent (after send() returned) and
// what consumers received.
constexpr int kProducers = 3;
constexpr std::uint32_t kPerProducer = 100000;
struct Board {
  std::atomic<std::uint32_t> acked[kProducers];
  std::atomic<std::uint8_t> seen[kProducers][kPerProducer];
  std::atomic<std::uint32_t> duplicates;
  std::atomic<std::uint32_t> corrupt;
  std::atomic<std::uint32_t> buffers_ok;
  std::atomic<std::uint32_t> consumers_done;
};

ipc::Segment attach(const std::string& domain) { return ipc::Segment::open("demo", {.domain = domain}); }

void producer(const std::string& domain, std::uint32_t id) {
  ipc::Segment seg = attach(domain);
  ipc::BufferPool pool = ipc::BufferPool::open(seg, "buffers");
  ipc::Channel work = ipc::Channel::open(seg, "work", &pool);
  auto& board = seg.open<Board>("board", ipc::ObjectType::raw);
  for (std::uint32_t s = 0; s < kPerProducer; ++s) {
    Item item{id, s, check_of(id, s)};
    auto bytes = std::as_bytes(std::span(&item, 1));
    ipc::SendStatus st;
    if (s % 8 == 0) {
      ipc::Allocation a = pool.allocate_for(4096, std::chrono::seconds(5));
      if (!a) ::_exit(3);
      std::memcpy(a.buffer.data(), &item, sizeof item);
      std::memcpy(a.buffer.data() + 4096 - sizeof item, &item, sizeof item);
      st = work.send(std::move(a.buffer), bytes, std::chrono::seconds(10));
    } else {
      st = work.send(bytes, {}, std::chrono::seconds(10));
    }
    if (st != ipc::SendStatus::ok) ::_exit(2);
    board.acked[id].store(s + 1, std::memory_order_release);
  }
  ::_exit(0);
}

void consumer(const std::string& domain) {
  ipc::Segment seg = attach(domain);
  ipc::BufferPool pool = ipc::BufferPool::open(seg, "buffers");
  ipc::Channel work = ipc::Channel::open(seg, "work", &pool);
  auto& board = seg.open<Board>("board", ipc::ObjectType::raw);
  ipc::Message m;
  // Stop after 300 ms of silence (the producers are done or dead).
  while (work.receive(m, std::chrono::milliseconds(300)) == ipc::ReceiveStatus::ok) {
    Item item;
    std::memcpy(&item, m.data().data(), sizeof item);
    if (m.size() != sizeof item || item.producer >= kProducers || item.seq >= kPerProducer ||
        item.check != check_of(item.producer, item.seq)) {
      board.corrupt.fetch_add(1);
      continue;
    }
    if (board.seen[item.producer][item.seq].exchange(1)) board.duplicates.fetch_add(1);
    if (!m.buffers().empty()) {
      Item head, tail;
      std::memcpy(&head, m.buffers()[0].data(), sizeof head);
      std::memcpy(&tail, m.buffers()[0].data() + 4096 - sizeof tail, sizeof tail);
      if (head.check == item.check && tail.check == item.check) board.buffers_ok.fetch_add(1);
    }
  }
  board.consumers_done.fetch_add(1);
  ::_exit(0);
}

bool work_queue_demo(ipc::Segment& seg, const std::string& domain) {
  ipc::PoolConfig pc;
  pc.class_sizes = {4096};
  pc.buffers_per_class = 512;
  ipc::BufferPool pool = ipc::BufferPool::create(seg, "buffers", pc);
  ipc::ChannelConfig cc;
  cc.kind = ipc::ChannelKind::mpmc;
  cc.capacity = 256;
  cc.slot_bytes = 64;  // 16-byte header + 16-byte item + one 16-byte handle
  ipc::Channel work = ipc::Channel::create(seg, "work", cc, &pool);
  auto& board = seg.find_or_create<Board>("board", ipc::ObjectType::raw);

  auto t0 = Clock::now();
  std::vector<pid_t> pids;
  for (int c = 0; c < 2; ++c)
    if (pid_t p = ::fork(); p == 0)
      consumer(domain);
    else
      pids.push_back(p);
  pid_t producers[kProducers];
  for (std::uint32_t id = 0; id < kProducers; ++id)
    if ((producers[id] = ::fork()) == 0) producer(domain, id);
  // Kill producer 2 somewhere in the middle of its stream.
  while (board.acked[2].load() < kPerProducer / 3) std::this_thread::yield();
  ::kill(producers[2], SIGKILL);
  ::waitpid(producers[2], nullptr, 0);
  std::uint32_t reclaimed_slots = work.reclaim(static_cast<std::uint32_t>(producers[2]));
  std::uint32_t reclaimed_buffers = pool.reclaim(static_cast<std::uint32_t>(producers[2]));
  for (int id = 0; id < 2; ++id) ::waitpid(producers[id], nullptr, 0);
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count() - 0.3;

  std::uint64_t lost = 0, received = 0;
  for (int id = 0; id < kProducers; ++id) {
    const std::uint32_t acked = board.acked[id].load();
    for (std::uint32_t s = 0; s < kPerProducer; ++s) {
      const bool got = board.seen[id][s].load();
      received += got;
      if (s < acked && !got) ++lost;
    }
  }
  ipc::ChannelStats st = work.stats();
  ipc::PoolStats ps = pool.stats();
  std::printf("\nwork queue: MPMC channel 'work' (256 slots), 3 producer and 2 consumer processes\n");
  std::printf("  producer pid %d SIGKILLed after %u of %u messages; reclaim: %u slot(s), %u buffer(s)\n", producers[2],
              board.acked[2].load(), kPerProducer, reclaimed_slots, reclaimed_buffers);
  std::printf("  received %llu messages (%.2f M/s), %u carried 4 KiB buffers zero-copy, all intact\n",
              static_cast<unsigned long long>(received), static_cast<double>(received) / secs / 1e6,
              board.buffers_ok.load());
  std::printf("  acknowledged but lost: %llu, duplicates: %u, corrupt: %u, pool buffers still in use: %u\n",
              static_cast<unsigned long long>(lost), board.duplicates.load(), board.corrupt.load(),
              ps.classes[0].in_use);
  std::printf("  stats seen by any process: sends %llu, receives %llu, depth %llu, recovered %llu\n",
              static_cast<unsigned long long>(st.sends), static_cast<unsigned long long>(st.receives),
              static_cast<unsigned long long>(st.depth), static_cast<unsigned long long>(st.recovered));
  const bool ok = lost == 0 && board.duplicates.load() == 0 && board.corrupt.load() == 0 && ps.classes[0].in_use == 0 &&
                  board.consumers_done.load() == 2;
  std::printf("  work queue: %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

bool broadcast_demo(ipc::Segment& seg, const std::string& domain) {
  ipc::BroadcastConfig bc;
  bc.capacity = 64;
  bc.policy = ipc::BroadcastPolicy::lossy;
  ipc::Broadcast events = ipc::Broadcast::create(seg, "events", bc);
  struct Result {
    std::atomic<std::uint64_t> received[2], missed[2], gaps_ok[2];
    std::atomic<std::uint32_t> ready;
  };
  auto& r = seg.find_or_create<Result>("events.result", ipc::ObjectType::raw);
  constexpr std::uint64_t kEvents = 20000;
  pid_t subs[2];
  for (int k = 0; k < 2; ++k) {
    if ((subs[k] = ::fork()) == 0) {
      ipc::Segment mine = attach(domain);
      ipc::Broadcast b = ipc::Broadcast::open(mine, "events");
      ipc::Subscription sub = b.subscribe(ipc::StartAt::next);
      auto& res = mine.open<Result>("events.result", ipc::ObjectType::raw);
      res.ready.fetch_add(1);
      ipc::Message m;
      std::uint64_t expect = 0, ok = 1;
      while (sub.receive(m, std::chrono::milliseconds(300)) == ipc::ReceiveStatus::ok) {
        std::uint64_t v;
        std::memcpy(&v, m.data().data(), sizeof v);
        if (v != expect + m.missed()) ok = 0;  // the gap is exactly what we were told we missed
        expect = v + 1;
        res.received[k].fetch_add(1);
        res.missed[k].fetch_add(m.missed());
        if (k == 1 && v % 64 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the slow one
      }
      res.gaps_ok[k].store(ok);
      ::_exit(0);
    }
  }
  while (r.ready.load() < 2) std::this_thread::yield();
  for (std::uint64_t i = 0; i < kEvents; ++i) {
    if (events.publish(std::as_bytes(std::span(&i, 1))) != ipc::SendStatus::ok) return false;
    if (i % 32 == 31) std::this_thread::sleep_for(std::chrono::microseconds(200));  // a steady event rate
  }
  for (pid_t p : subs) ::waitpid(p, nullptr, 0);
  std::printf("\nbroadcast 'events' (lossy, 64 slots): %llu events published\n",
              static_cast<unsigned long long>(kEvents));
  const char* names[2] = {"fast", "slow"};
  for (int k = 0; k < 2; ++k)
    std::printf("  %s subscriber pid %d: received %llu, told it missed %llu, gaps match: %s\n", names[k], subs[k],
                static_cast<unsigned long long>(r.received[k].load()),
                static_cast<unsigned long long>(r.missed[k].load()), r.gaps_ok[k].load() ? "yes" : "NO");
  bool ok = true;
  for (int k = 0; k < 2; ++k) ok = ok && r.gaps_ok[k].load() && r.received[k].load() + r.missed[k].load() == kEvents;
  std::printf("  broadcast: %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

// Typed, zero-copy Cap'n Proto tasks to a worker process and results back.
bool message_demo(ipc::Segment& seg, const std::string& domain) {
  using ipc::schema::Result;
  using ipc::schema::Task;
  ipc::PoolConfig pc;
  pc.class_sizes = {4096, 65536};
  pc.buffers_per_class = 32;
  pc.cache_per_class = 0;
  pc.large_strategy = ipc::LargeStrategy::best_fit;
  pc.large_region_bytes = 8u << 20;
  ipc::BufferPool pool = ipc::BufferPool::create(seg, "messages", pc);
  ipc::ChannelConfig cc;
  cc.kind = ipc::ChannelKind::spsc;
  cc.capacity = 16;
  cc.slot_bytes = ipc::kMessageSlotBytes;  // room for a message's handles
  ipc::Channel tasks = ipc::Channel::create(seg, "tasks", cc, &pool);
  ipc::Channel results = ipc::Channel::create(seg, "results", cc, &pool);
  constexpr int kRounds = 200;
  const std::size_t sizes[2] = {64, 1u << 20};

  pid_t worker = ::fork();
  if (worker == 0) {
    ipc::Segment mine = attach(domain);
    ipc::BufferPool p = ipc::BufferPool::open(mine, "messages");
    ipc::Channel in = ipc::Channel::open(mine, "tasks", &p);
    ipc::Channel out = ipc::Channel::open(mine, "results", &p);
    ipc::Subscriber<Task> sub(in);
    ipc::Publisher<Result> pub(out, p, 256);
    ipc::Received<Task> task;
    for (int i = 0; i < 2 * kRounds; ++i) {
      if (sub.receive(task, std::chrono::seconds(10)) != ipc::TypedStatus::ok) ::_exit(2);
      Task::Reader t = task.root();
      capnp::Data::Reader data = t.getPayload();  // in place: no copy of the 1 MiB
      const std::uint64_t sum = data.size() ? data[0] + data[data.size() - 1] + data.size() : 0;
      const std::uint64_t id = t.getId();
      task.reset();  // the task's buffers go back to the pool
      ipc::TypedStatus st = pub.publish([&](Result::Builder r) {
        r.setTaskId(id);
        capnp::Data::Builder ok = r.initOk(sizeof sum);
        std::memcpy(ok.begin(), &sum, sizeof sum);
      });
      if (st != ipc::TypedStatus::ok) ::_exit(3);
    }
    ::_exit(0);
  }

  ipc::Publisher<Task> pub(tasks, pool);
  ipc::Subscriber<Result> sub(results);
  ipc::Received<Result> result;
  std::vector<double> lat[2];
  bool ok = true;
  for (int i = 0; i < 2 * kRounds && ok; ++i) {
    const int k = i % 2;
    auto loan = pub.loan(sizes[k] + 4096);  // one segment: header + struct + payload
    Task::Builder t = loan.root();
    t.setId(static_cast<std::uint64_t>(i));
    t.setKind("checksum");
    capnp::Data::Builder payload = t.initPayload(sizes[k]);
    payload[0] = static_cast<std::uint8_t>(i);
    payload[sizes[k] - 1] = 7;
    const auto t0 = Clock::now();  // building (and zeroing) the message is not timed
    ok = pub.send(std::move(loan)) == ipc::TypedStatus::ok &&
         sub.receive(result, std::chrono::seconds(10)) == ipc::TypedStatus::ok;
    lat[k].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 2);
    if (!ok) break;
    std::uint64_t sum = 0;
    Result::Reader r = result.root();
    if (r.isOk() && r.getOk().size() == sizeof sum) std::memcpy(&sum, r.getOk().begin(), sizeof sum);
    ok = r.getTaskId() == static_cast<std::uint64_t>(i) && sum == static_cast<std::uint8_t>(i) + 7u + sizes[k];
    result.reset();
  }
  int status = 0;
  ::waitpid(worker, &status, 0);
  ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  for (auto& v : lat) std::sort(v.begin(), v.end());
  const double small = lat[0].empty() ? 0 : lat[0][lat[0].size() / 2];
  const double large = lat[1].empty() ? 0 : lat[1][lat[1].size() / 2];
  const std::uint32_t in_use = pool.stats().classes[0].in_use + pool.stats().classes[1].in_use;
  std::printf("\ntyped Cap'n Proto tasks (Publisher<Task> -> worker pid %d -> Publisher<Result>), zero copy:\n",
              worker);
  std::printf("  %d tasks with 64 B and %d with 1 MiB payloads, built in pool buffers; results verified: %s\n", kRounds,
              kRounds, ok ? "yes" : "NO");
  const double ratio = small > 0 ? large / small : 0.0;
  // The goal (1 MiB within 1.5x of 64 B) is bench/message_bench's figure, timed from send() of a sealed message
  // to the reader's last element; this round trip also pays for sealing (a checksum over the whole 1 MiB).
  std::printf("  one way (round trip / 2, median): 64 B task %.1f us, 1 MiB task %.1f us (x%.2f; goal <= 1.5x%s)\n",
              small, large, ratio, ratio <= 1.5 ? ": met" : ": missed, it includes the 1 MiB checksum");
  std::printf("  pool buffers in use after: %u\n", in_use);
  std::printf("  typed messages: %s\n", ok && in_use == 0 ? "PASS" : "FAIL");
  return ok && in_use == 0;
}

// Round trips over two SPSC channels; returns the median one-way time in ns.
double pingpong(ipc::Segment& seg, const std::string& domain, bool busy, int rounds) {
  const char* names[2] = {busy ? "ping.b" : "ping.s", busy ? "pong.b" : "pong.s"};
  ipc::ChannelConfig cc;
  cc.kind = ipc::ChannelKind::spsc;
  cc.capacity = 16;
  ipc::Channel ping = ipc::Channel::create(seg, names[0], cc);
  ipc::Channel pong = ipc::Channel::create(seg, names[1], cc);
  auto recv = [busy](ipc::Channel& c, ipc::Message& m) {
    if (busy) {
      while (c.try_receive(m) != ipc::ReceiveStatus::ok) {
      }
    } else if (c.receive(m, std::chrono::seconds(5)) != ipc::ReceiveStatus::ok) {
      ::_exit(4);
    }
  };
  pid_t echo = ::fork();
  if (echo == 0) {
    ipc::Segment mine = attach(domain);
    ipc::Channel in = ipc::Channel::open(mine, names[0]);
    ipc::Channel out = ipc::Channel::open(mine, names[1]);
    ipc::Message m;
    for (int i = 0; i < rounds; ++i) {
      recv(in, m);
      if (out.send(m.data()) != ipc::SendStatus::ok) ::_exit(3);
    }
    ::_exit(0);
  }
  std::vector<double> samples;
  char payload[64] = "ping";
  ipc::Message m;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    if (ping.send(std::as_bytes(std::span(payload))) != ipc::SendStatus::ok) break;
    recv(pong, m);
    samples.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2);
  }
  ::waitpid(echo, nullptr, 0);
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? 0 : samples[samples.size() / 2];
}

}  // namespace

int run(const std::string& domain) {
  ipc::SegmentOptions options;
  options.size = 64u << 20;
  options.domain = domain;
  ipc::Segment seg = ipc::Segment::create("demo", options);
  std::printf("libipc channel demo — segment %s\n", seg.info().path.c_str());
  bool ok = work_queue_demo(seg, domain);
  ok = broadcast_demo(seg, domain) && ok;
  ok = message_demo(seg, domain) && ok;
  double busy = pingpong(seg, domain, true, 20000);
  double blocking = pingpong(seg, domain, false, 5000);
  std::printf("\nlatency, 64 B message one way (median of ping-pong / 2): busy-poll %.2f us, blocking %.1f us\n",
              busy / 1000, blocking / 1000);
  std::printf("  (the goals compare with a raw cache-line and futex ping-pong in the same run: bench/channel_bench)\n");
  std::printf("\n%s\n", ok ? "channel demo: all checks passed" : "channel demo: CHECKS FAILED");
  return ok ? 0 : 1;
}

int main() {
  const std::string domain = "chdemo" + std::to_string(::getpid());
  int rc = 1;
  try {
    rc = run(domain);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "channel demo failed: %s\n", e.what());
  }
  for (const std::string& name : ipc::Segment::list(domain)) ipc::Segment::unlink(name, domain);
  return rc;
}
