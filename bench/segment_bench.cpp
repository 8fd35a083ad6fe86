// segment_bench: time to create + map + touch a 64 MiB segment, against the
// floor of an anonymous shared mapping of the same size, in the same run.
//   ours:     Segment::create (O_TMPFILE, posix_fallocate, mmap, header, linkat)
//             + write one byte per 4 KiB page
//   baseline: mmap(MAP_SHARED|MAP_ANONYMOUS) + write one byte per page
// Teardown (unlink/munmap) is outside the timed region for both.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "bench_util.hpp"
#include "ipc/segment.hpp"

namespace {

constexpr std::size_t kSize = 64u << 20;
constexpr const char* kBench = "segment_bench";

void touch(std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; i += 4096) p[i] = std::byte{1};
}

double ours_ms(const std::string& domain) {
  double t0 = ipc::bench::now_ns();
  ipc::SegmentOptions o;
  o.size = kSize;
  o.domain = domain;
  ipc::Segment s = ipc::Segment::create("bench", o);
  touch(s.base() + 4096, kSize - 4096);
  double t1 = ipc::bench::now_ns();
  ipc::Segment::unlink("bench", domain);
  return (t1 - t0) / 1e6;
}

double baseline_ms() {
  double t0 = ipc::bench::now_ns();
  void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  touch(static_cast<std::byte*>(p), kSize);
  double t1 = ipc::bench::now_ns();
  ::munmap(p, kSize);
  return (t1 - t0) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = ipc::bench::parse_args(argc, argv);
  int cpu = ipc::bench::pin_to_cpu(0);
  std::string domain = "bench" + std::to_string(::getpid());
  ipc::Segment::unlink("bench", domain);
  int reps = args.quick ? 7 : 21;
  std::vector<double> ours, base;
  for (int i = 0; i < reps; ++i) {  // interleaved, so drift hits both sides alike
    ours.push_back(ours_ms(domain));
    base.push_back(baseline_ms());
  }
  double o = ipc::bench::median(ours), b = ipc::bench::median(base);
  std::printf("segment_bench: create+map+touch %zu MiB, median of %d, pinned to CPU %d\n", kSize >> 20, reps, cpu);
  std::printf("  %-44s %10.3f ms\n", "ours: Segment::create + touch", o);
  std::printf("  %-44s %10.3f ms\n", "baseline: mmap shared anonymous + touch", b);
  ipc::bench::result(kBench, "create_map_touch_64MiB", o, "ms");
  ipc::bench::result(kBench, "anon_mmap_touch_64MiB", b, "ms");
  ipc::bench::ratio(kBench, "create_map_touch_64MiB_vs_anon_mmap", o, b);
  return 0;
}
