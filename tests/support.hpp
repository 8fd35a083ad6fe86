// tests/support.hpp — helpers every libipc test uses.
//
// TestDomain: a domain name unique to this test (pid + counter) whose
// destructor removes every /dev/shm/ipc.<domain>.* file, also when the test
// failed. Segments of a test process that was killed outright are removed by
// the `cleanup_stale_test_segments` CTest fixture (tests/cleanup.cpp), which
// deletes ipc.t<pid>x* files whose pid no longer runs.
//
// Child processes: fork_child(fn) runs fn in a real forked process; the
// child's exit code is fn's return value (an exception → 100). Children
// never return into doctest (they _exit). wait_child(pid, timeout) reaps it,
// and SIGKILLs it on timeout so that a test fails instead of hanging.
// Children (below) kills and reaps every child a test started, also when the
// test leaves early through a failed REQUIRE; eventually() polls with a
// deadline; make_board<T>() places a zeroed struct in a segment; opts(d,
// size) are the SegmentOptions of a test segment.
//
// Randomised tests take seed() (IPC_TEST_SEED replays one) and their long
// loops take iterations(n) (IPC_TEST_ITERATIONS); both are printed.
// Timing: ms_since / ms_between measure, CHECK_PROMPT(ms, kPromptMs or
// kHangMs) prints the figure and checks a generous "did not hang" bound —
// never a speed criterion. Lower bounds ("did not return too early") are
// plain CHECKs. CHECK_RETURNED_AFTER: a blocking call returned only after
// the other side released what it waited for.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

#include "ipc/channel_message.hpp"
#include "ipc/error.hpp"
#include "ipc/pool.hpp"
#include "ipc/segment.hpp"

// doctest prints these by name (found by argument-dependent lookup).
namespace ipc {
std::ostream& operator<<(std::ostream& os, ErrorCode c);
std::ostream& operator<<(std::ostream& os, SendStatus s);
std::ostream& operator<<(std::ostream& os, ReceiveStatus s);
std::ostream& operator<<(std::ostream& os, AllocStatus s);
std::ostream& operator<<(std::ostream& os, BufferPool::HandleStatus s);
std::ostream& operator<<(std::ostream& os, PressureLevel l);
std::ostream& operator<<(std::ostream& os, const BufferHandle& h);
}  // namespace ipc

namespace ipc::test {

class TestDomain {
 public:
  TestDomain();
  ~TestDomain();
  TestDomain(const TestDomain&) = delete;
  TestDomain& operator=(const TestDomain&) = delete;
  const std::string& name() const { return name_; }
  operator const std::string&() const { return name_; }
  // Number of /dev/shm files this domain currently has.
  int leftover_files() const;

 private:
  std::string name_;
};

// Removes every /dev/shm/ipc.<domain>.* file; returns how many.
int remove_domain_files(const std::string& domain);

pid_t fork_child(const std::function<int()>& fn);

struct ChildExit {
  bool exited = false;  // normal exit
  int code = -1;        // exit code if exited
  bool signaled = false;
  int signal = 0;
  bool timed_out = false;  // we had to SIGKILL it
};
ChildExit wait_child(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Convenience: true when the child exited normally with code 0.
inline bool child_ok(const ChildExit& e) { return e.exited && e.code == 0 && !e.timed_out; }

// Kills with SIGKILL and reaps.
void kill_child(pid_t pid);

// Roles: code a test runs in a *fresh* process image (fork + exec of this
// test binary), for behaviour fixed at process start-up that a forked child
// would inherit instead (e.g. the log level, read once from IPC_LOG_LEVEL).
// Register at namespace scope: `const ipc::test::Role r("name", fn);`. main()
// (tests/main.cpp) plays the role named by IPC_TEST_ROLE instead of running
// doctest; the exit code is fn's return value (an exception: 100).
using RoleFn = int (*)();
struct Role {
  Role(const char* name, RoleFn fn);
};
// Runs role `name` with `env` applied ("NAME=value" sets, "NAME" unsets),
// stdout and stderr appended to the file `output_path`; waits up to
// `timeout` (then SIGKILL, timed_out).
ChildExit run_role(const std::string& name, const std::vector<std::string>& env, const std::string& output_path,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30));
// For main(): true when this process was started to play a role; it then
// has played it and `exit_code` is its result.
bool play_role(int& exit_code);
// The whole content of a (small) file; "" if it cannot be read.
std::string read_file(const std::string& path);

// The seed of a test that uses random numbers (kill points, orders): the
// environment variable IPC_TEST_SEED when set (decimal or 0x-hex), else a
// fresh one from the pid and the clock. Prints it (doctest MESSAGE) so that a
// failure can be replayed: IPC_TEST_SEED=<seed> ./tests/<x>_test -tc='<case>'.
// Call it once per test case, in the test process (not in a child).
unsigned seed();

// How many rounds a long randomised loop runs: the environment variable
// IPC_TEST_ITERATIONS when set (a positive number), else `default_count`.
// Printed (MESSAGE) either way.
int iterations(int default_count);

// ---- shared by the multi-process tests ----

// Options for a test segment in domain d (1 MiB unless told otherwise).
inline ipc::SegmentOptions opts(const std::string& domain, std::size_t size = 1u << 20) {
  ipc::SegmentOptions o;
  o.size = size;
  o.domain = domain;
  return o;
}
inline ipc::SegmentOptions opts(const TestDomain& d, std::size_t size = 1u << 20) { return opts(d.name(), size); }

// CLOCK_MONOTONIC now, in ns (comparable across processes).
inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Milliseconds since t0 (steady clock).
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
// Milliseconds between two now_ns() stamps (taken in any processes).
inline double ms_between(std::int64_t from_ns, std::int64_t to_ns) {
  return static_cast<double>(to_ns - from_ns) / 1e6;
}

// Upper bounds of "it happened promptly / did not hang" checks. Generous, so
// that a loaded CI machine does not fail them; they prove "no hang", never
// speed. Use them through CHECK_PROMPT, which also prints the figure.
inline constexpr double kPromptMs = 10'000.0;  // "at once", "within a few slices"
inline constexpr double kHangMs = 20'000.0;    // "eventually" (a dead peer noticed, a wake-up)

// Work the optimiser cannot remove, to widen read-modify-write windows.
inline void spin(unsigned n) {
  for (unsigned i = 0; i < n; ++i) asm volatile("" ::: "memory");
}

// Names of library enums as strings (doctest prints a const char* as a
// pointer): CHECK(str(r) == "ok"). Found through to_string by ADL.
template <typename E>
requires std::is_enum_v<E> std::string str(E e) { return std::string(to_string(e)); }

// A value-initialised (all zero) struct T in the segment.
template <typename T>
T& make_board(ipc::Segment& seg, const char* name = "board") {
  return seg.find_or_create<T>(name, ipc::ObjectType::raw);
}

// Polls `pred` until it holds or `timeout` passes; never hangs. Usable in children.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Forked children that are SIGKILLed and reaped when the test leaves early.
class Children {
 public:
  // `default_timeout`: how long wait() waits for a child unless told otherwise.
  explicit Children(std::chrono::milliseconds default_timeout = std::chrono::seconds(15))
      : default_timeout_(default_timeout) {}
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() {
    for (pid_t p : live_) test::kill_child(p);
  }
  pid_t spawn(const std::function<int()>& fn) {
    pid_t p = test::fork_child(fn);
    live_.push_back(p);
    return p;
  }
  test::ChildExit wait(pid_t p) { return wait(p, default_timeout_); }
  test::ChildExit wait(pid_t p, std::chrono::milliseconds timeout) {
    std::erase(live_, p);
    return test::wait_child(p, timeout);
  }
  void kill(pid_t p) {
    std::erase(live_, p);
    test::kill_child(p);
  }

 private:
  std::chrono::milliseconds default_timeout_;
  std::vector<pid_t> live_;
};

inline void check_exit(const test::ChildExit& e, const std::string& what = "child") {
  CHECK_MESSAGE(test::child_ok(e), what << ": exited=" << e.exited << " code=" << e.code << " signaled=" << e.signaled
                                        << " signal=" << e.signal << " timed_out=" << e.timed_out);
}

}  // namespace ipc::test

// CHECK_RETURNED_AFTER(released_ns, returned_ns, what): a call that had to
// wait for another thread or process (a *_for(kForever) on a held / empty /
// full object) returned only after the other side released it: it stamps
// `released_ns` (now_ns()) just before releasing, the waiter stamps
// `returned_ns` when the call returns.
#define CHECK_RETURNED_AFTER(released_ns, returned_ns, what)                                       \
  do {                                                                                             \
    const std::int64_t ipc_test_released_ = (released_ns);                                         \
    CHECK_MESSAGE(ipc_test_released_ != 0, what << " returned before the other side released it"); \
    CHECK(ipc_test_released_ <= (returned_ns));                                                    \
  } while (0)

// CHECK_PROMPT(ms, bound): the measured figure `ms` (milliseconds) is printed
// (MESSAGE) and must be below `bound` (test::kPromptMs or test::kHangMs):
// "eventually, within a generous bound", never a speed criterion.
#define CHECK_PROMPT(ms, bound)                                                   \
  do {                                                                            \
    const double ipc_test_ms_ = (ms);                                             \
    MESSAGE(#ms " = " << ipc_test_ms_ << " ms (must be < " << (bound) << " ms)"); \
    CHECK(ipc_test_ms_ < (bound));                                                \
  } while (0)
