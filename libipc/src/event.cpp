#include "ipc/event.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ipc/detail/futex.hpp"
#include "ipc/detail/process.hpp"
#include "ipc/error.hpp"
#include "ipc/log.hpp"

namespace ipc {
namespace {

enum : std::uint32_t { kSlotFree = 0, kSlotClaimed = 1, kSlotReady = 2 };

socklen_t make_address(std::uint64_t id, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  // Abstract namespace: sun_path[0] == '\0', the name is the bytes after it.
  int n = std::snprintf(addr->sun_path + 1, sizeof addr->sun_path - 1, "ipc.ev.%016llx",
                        static_cast<unsigned long long>(id));
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

// One unbound datagram socket per process for sending; created on first use
// (a notify that finds an armed listener). Inherited by fork children, which
// is harmless for an unbound sender.
int sender_fd() {
  static const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return fd;
}

}  // namespace

int Event::listeners() const noexcept {
  int n = 0;
  for (const Slot& s : slots_) n += s.state.load(std::memory_order_relaxed) == kSlotReady;
  return n;
}

void Event::wake_sleepers() noexcept {
  if (waiters_.load(std::memory_order_seq_cst) != 0) detail::futex_wake(&seq_, INT32_MAX);
  if (armed_.load(std::memory_order_seq_cst) == 0) return;  // N3
  std::uint64_t mask = armed_.exchange(0, std::memory_order_seq_cst);
  while (mask) {
    int i = __builtin_ctzll(mask);
    mask &= mask - 1;
    Slot& s = slots_[i];
    if (s.state.load(std::memory_order_acquire) != kSlotReady) continue;
    sockaddr_un addr;
    socklen_t len = make_address(s.address, &addr);
    char byte = 1;
    if (::sendto(sender_fd(), &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len) == 1)
      continue;
    // EAGAIN: the listener's queue is full, so its fd is readable anyway.
    if (errno != ECONNREFUSED && errno != ENOENT) continue;
    // Nobody bound at that address: the listener is gone. Free the slot if its process is dead.
    if (detail::process_liveness(static_cast<pid_t>(s.pid), s.token) == detail::Liveness::dead) {
      std::uint32_t ready = kSlotReady;
      s.state.compare_exchange_strong(ready, kSlotFree, std::memory_order_acq_rel);
    }
  }
}

EventWait Event::wait_impl(std::uint32_t seen, std::uint64_t deadline_ns) noexcept {
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  EventWait out = EventWait::changed;
  while (seq_.load(std::memory_order_seq_cst) == seen) {
    if (detail::futex_wait(&seq_, seen, deadline_ns) == detail::WaitResult::timed_out) {
      if (seq_.load(std::memory_order_seq_cst) == seen) out = EventWait::timed_out;
      break;
    }
  }
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return out;
}

EventWait Event::wait(std::uint32_t seen) noexcept { return wait_impl(seen, detail::kNoDeadline); }

EventWait Event::wait_for(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept {
  return wait_until(seen, std::chrono::steady_clock::now() + timeout);
}

EventWait Event::wait_until(std::uint32_t seen, std::chrono::steady_clock::time_point deadline) noexcept {
  return wait_impl(seen, detail::deadline_ns(deadline));
}

EventListener::EventListener(Event& event) : event_(event) {
  const std::uint32_t pid = detail::self_pid();
  // Claim a free slot; on a full table, reclaim slots of dead processes once.
  for (int pass = 0; pass < 2 && slot_ < 0; ++pass) {
    for (int i = 0; i < Event::kMaxListeners; ++i) {
      Event::Slot& s = event_.slots_[i];
      std::uint32_t st = s.state.load(std::memory_order_acquire);
      if (pass == 1 && st == kSlotReady &&
          detail::process_liveness(static_cast<pid_t>(s.pid), s.token) == detail::Liveness::dead)
        s.state.compare_exchange_strong(st, kSlotFree, std::memory_order_acq_rel);
      std::uint32_t expected = kSlotFree;
      if (s.state.compare_exchange_strong(expected, kSlotClaimed, std::memory_order_acq_rel)) {
        slot_ = i;
        break;
      }
    }
  }
  if (slot_ < 0)
    throw Error(ErrorCode::no_space, "event has " + std::to_string(Event::kMaxListeners) +
                                         " listeners in live processes already; close unused EventListeners");
  Event::Slot& s = event_.slots_[slot_];
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    int err = errno;
    s.state.store(kSlotFree, std::memory_order_release);
    throw_errno(err, "cannot create the socket of an event listener");
  }
  for (int attempt = 0;; ++attempt) {
    std::uint64_t id = 0;
    if (::getrandom(&id, sizeof id, 0) != sizeof id) id = detail::monotonic_ns() ^ (std::uint64_t{pid} << 32);
    sockaddr_un addr;
    socklen_t len = make_address(id, &addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      s.address = id;
      break;
    }
    if (errno != EADDRINUSE || attempt > 8) {
      int err = errno;
      ::close(fd_);
      s.state.store(kSlotFree, std::memory_order_release);
      throw_errno(err, "cannot bind the socket of an event listener");
    }
  }
  s.pid = pid;
  s.token = detail::self_token();
  s.state.store(kSlotReady, std::memory_order_release);
}

EventListener::~EventListener() {
  event_.armed_.fetch_and(~(std::uint64_t{1} << slot_), std::memory_order_relaxed);
  event_.slots_[slot_].state.store(kSlotFree, std::memory_order_release);
  ::close(fd_);
}

void EventListener::arm() noexcept {
  event_.armed_.fetch_or(std::uint64_t{1} << slot_, std::memory_order_seq_cst);  // L1
}

int EventListener::drain() noexcept {
  int n = 0;
  char buf[64];
  while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) ++n;
  return n;
}

}  // namespace ipc
