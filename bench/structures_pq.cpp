// structures_pq: the priority-queue half of structures_bench (its main is in
// structures_bench.cpp and calls run_pq_bench). Our PriorityQueue of 64 B
// elements against boost::interprocess::message_queue with priorities (64 B
// messages), in the same run. Our queue lives in a real ipc::Segment (domain
// "bench<pid>", segment "pq"); Boost's queue is /dev/shm/ipc_pq_bench_<pid>.
// Both are registered with the cleanup module, so an interrupted run leaves
// /dev/shm clean, and unregistered again when this part is done.
//
// 1. One process pinned to CPU 0: steady-state push+pop pairs at a depth of
//    kDepth elements (prefilled), random priorities 0..31 from one table
//    shared by both sides (ns per pair):
//      ours      PriorityQueue<Msg64>::try_push + try_pop
//      baseline  message_queue::try_send(64 B, prio) + try_receive
// 2. Two processes: a producer (child, CPU 1) pushes kN elements with
//    blocking push, a consumer (parent, CPU 0) pops them with blocking pop;
//    both queues hold kCapacity elements. Cost = wall time / elements.
// The sides alternate in chunks whose order rotates, so drift on this noisy
// VM hits both alike; the figure is the median of the repetitions.
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ipc/priority_queue.hpp"
#include "ipc/segment.hpp"

namespace ipc::bench {

namespace {

namespace bip = boost::interprocess;

constexpr const char* kBench = "structures_bench";
constexpr const char* kSegment = "pq";
constexpr std::uint32_t kCapacity = 256;
constexpr std::uint32_t kDepth = 64;  // steady-state depth of the single-process test
constexpr unsigned kWatchdogSeconds = 60;
constexpr std::size_t kPrioTable = 4096;  // power of two

struct Msg64 {
  std::uint8_t b[64];
};

struct Control {
  alignas(64) std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint32_t> ready{0};
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// ---- single process ------------------------------------------------------------------

double ns_ours_pairs(PriorityQueue<Msg64>& q, const std::vector<std::uint32_t>& prio, long n, std::size_t& k) {
  Msg64 m{};
  Msg64 out{};
  double t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    m.b[0] = static_cast<std::uint8_t>(i);
    if (q.try_push(m, static_cast<std::int32_t>(prio[k++ & (kPrioTable - 1)])) != QueueStatus::ok) [[unlikely]]
      cleanup::die("PriorityQueue::try_push failed at steady depth");
    if (q.try_pop(out) != QueueStatus::ok) [[unlikely]]
      cleanup::die("PriorityQueue::try_pop failed at steady depth");
    asm volatile("" : : "g"(&out) : "memory");
  }
  return now_ns() - t0;
}

double ns_boost_pairs(bip::message_queue& q, const std::vector<std::uint32_t>& prio, long n, std::size_t& k) {
  Msg64 m{};
  Msg64 out{};
  bip::message_queue::size_type got = 0;
  unsigned int got_prio = 0;
  double t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    m.b[0] = static_cast<std::uint8_t>(i);
    if (!q.try_send(&m, sizeof m, prio[k++ & (kPrioTable - 1)])) [[unlikely]]
      cleanup::die("message_queue::try_send failed at steady depth");
    if (!q.try_receive(&out, sizeof out, got, got_prio)) [[unlikely]]
      cleanup::die("message_queue::try_receive failed at steady depth");
    asm volatile("" : : "g"(&out) : "memory");
  }
  return now_ns() - t0;
}

// ---- two processes -------------------------------------------------------------------

// Producer in a child on CPU 1, consumer here on CPU 0; returns ns per element.
template <typename Produce, typename Consume>
double two_process(Control* ctl, long n, Produce produce, Consume consume) {
  ctl->go.store(0);
  ctl->ready.store(0);
  pid_t child = cleanup::fork_watched(kWatchdogSeconds, [&] {
    pin_to_cpu(1);
    try {
      ctl->ready.store(1, std::memory_order_release);
      while (ctl->go.load(std::memory_order_acquire) == 0) cpu_relax();
      produce(n);
    } catch (const std::exception& e) {
      cleanup::die(e.what());
    }
  });
  while (ctl->ready.load(std::memory_order_acquire) == 0) cpu_relax();
  double t0 = now_ns();
  ctl->go.store(1, std::memory_order_release);
  consume(n);
  double t = now_ns() - t0;
  cleanup::reap(child);
  return t / static_cast<double>(n);
}

}  // namespace

void run_pq_bench(const Args& args) {
  cpu_set_t saved;
  const bool have_saved = ::sched_getaffinity(0, sizeof saved, &saved) == 0;
  const int cpu0 = pin_to_cpu(0);
  const std::string domain = "bench" + std::to_string(::getpid());
  const std::string boost_name = "ipc_pq_bench_" + std::to_string(::getpid());
  cleanup::add_path("/dev/shm" + Segment::shm_name(kSegment, domain));
  cleanup::add_path("/dev/shm/" + boost_name);
  Segment::unlink(kSegment, domain);
  bip::message_queue::remove(boost_name.c_str());

  const long pairs = args.quick ? 20000 : 100000;  // per chunk
  const int chunks = 4;
  const long n2 = args.quick ? 30000 : 150000;  // elements per 2-process run

  std::vector<std::uint32_t> prio(kPrioTable);
  std::mt19937 rng(12345);
  for (auto& p : prio) p = rng() % 32;

  double ours_pair = 0, boost_pair = 0, ours_2p = 0, boost_2p = 0;
  try {
    SegmentOptions so;
    so.size = PriorityQueueCore::bytes_needed(kCapacity, sizeof(Msg64)) + (1u << 20);
    so.domain = domain;
    Segment seg = Segment::create(kSegment, so);
    auto q = PriorityQueue<Msg64>::create(seg, "q", kCapacity);
    Control* ctl = &seg.find_or_create<Control>("control", ObjectType::raw);
    bip::message_queue mq(bip::create_only, boost_name.c_str(), kCapacity, sizeof(Msg64));

    // 1. Single process, steady depth.
    std::size_t k = 0;
    Msg64 fill{};
    for (std::uint32_t i = 0; i < kDepth; ++i) {
      if (q.try_push(fill, static_cast<std::int32_t>(prio[k & (kPrioTable - 1)])) != QueueStatus::ok ||
          !mq.try_send(&fill, sizeof fill, prio[k & (kPrioTable - 1)]))
        cleanup::die("prefill failed");
      ++k;
    }
    ns_ours_pairs(q, prio, pairs / 4, k);  // warm-up
    ns_boost_pairs(mq, prio, pairs / 4, k);
    std::vector<double> ours_v, boost_v;
    for (int rep = 0; rep < args.reps; ++rep) {
      double ours = 0, theirs = 0;
      for (int c = 0; c < chunks; ++c) {
        if ((c + rep) % 2 == 0) {
          ours += ns_ours_pairs(q, prio, pairs, k);
          theirs += ns_boost_pairs(mq, prio, pairs, k);
        } else {
          theirs += ns_boost_pairs(mq, prio, pairs, k);
          ours += ns_ours_pairs(q, prio, pairs, k);
        }
      }
      ours_v.push_back(ours / static_cast<double>(pairs * chunks));
      boost_v.push_back(theirs / static_cast<double>(pairs * chunks));
    }
    ours_pair = median(ours_v);
    boost_pair = median(boost_v);
    if (q.size() != kDepth || mq.get_num_msg() != kDepth) cleanup::die("depth drifted during the pair test");
    Msg64 drop{};
    bip::message_queue::size_type got = 0;
    unsigned int got_prio = 0;
    while (q.try_pop(drop) == QueueStatus::ok) {
    }
    while (mq.try_receive(&drop, sizeof drop, got, got_prio)) {
    }

    // 2. Producer process → consumer process, blocking calls.
    auto ours_produce = [&](long n) {
      Segment own = Segment::open(kSegment, {.domain = domain});
      auto oq = PriorityQueue<Msg64>::open(own, "q");
      Msg64 m{};
      std::size_t kk = 0;
      for (long i = 0; i < n; ++i)
        if (oq.push(m, static_cast<std::int32_t>(prio[kk++ & (kPrioTable - 1)])) != QueueStatus::ok)
          cleanup::die("PriorityQueue::push failed");
    };
    auto ours_consume = [&](long n) {
      Msg64 out{};
      for (long i = 0; i < n; ++i)
        if (q.pop(out) != QueueStatus::ok) cleanup::die("PriorityQueue::pop failed");
    };
    auto boost_produce = [&](long n) {
      bip::message_queue omq(bip::open_only, boost_name.c_str());
      Msg64 m{};
      std::size_t kk = 0;
      for (long i = 0; i < n; ++i) omq.send(&m, sizeof m, prio[kk++ & (kPrioTable - 1)]);
    };
    auto boost_consume = [&](long n) {
      Msg64 out{};
      bip::message_queue::size_type g = 0;
      unsigned int p = 0;
      for (long i = 0; i < n; ++i) mq.receive(&out, sizeof out, g, p);
    };
    std::vector<double> ours2, boost2;
    for (int rep = 0; rep < args.reps; ++rep) {
      if (rep % 2 == 0) {
        ours2.push_back(two_process(ctl, n2, ours_produce, ours_consume));
        boost2.push_back(two_process(ctl, n2, boost_produce, boost_consume));
      } else {
        boost2.push_back(two_process(ctl, n2, boost_produce, boost_consume));
        ours2.push_back(two_process(ctl, n2, ours_produce, ours_consume));
      }
    }
    ours_2p = median(ours2);
    boost_2p = median(boost2);
  } catch (const std::exception& e) {
    cleanup::die(std::string("pq part: ") + e.what());
  }
  Segment::unlink(kSegment, domain);
  bip::message_queue::remove(boost_name.c_str());
  cleanup::forget_paths();
  if (have_saved) ::sched_setaffinity(0, sizeof saved, &saved);

  std::printf("\n== priority queue: 64 B elements, priorities 0..31 (median of %d) ==\n", args.reps);
  std::printf("1. one process on CPU %d, push+pop pairs at depth %u (ns per pair)\n", cpu0, kDepth);
  std::printf("   %-52s %10.1f\n", "ours: PriorityQueue try_push + try_pop", ours_pair);
  std::printf("   %-52s %10.1f\n", "baseline: boost message_queue try_send + try_receive", boost_pair);
  std::printf("2. producer process on CPU 1 -> consumer on CPU %d, blocking, capacity %u (ns per element)\n", cpu0,
              kCapacity);
  std::printf("   %-52s %10.1f\n", "ours: PriorityQueue push / pop", ours_2p);
  std::printf("   %-52s %10.1f\n", "baseline: boost message_queue send / receive", boost_2p);
  result(kBench, "pq_push_pop_64B", ours_pair, "ns");
  result(kBench, "pq_push_pop_64B_boost_mq", boost_pair, "ns");
  result(kBench, "pq_2proc_64B", ours_2p, "ns");
  result(kBench, "pq_2proc_64B_boost_mq", boost_2p, "ns");
  ratio(kBench, "pq_push_pop_vs_boost_mq", ours_pair, boost_pair);
  ratio(kBench, "pq_2proc_vs_boost_mq", ours_2p, boost_2p);
}

}  // namespace ipc::bench
