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
#include "log.hpp"

namespace ipc {
namespace {

enum : std::uint64_t { kSlotFree = 0, kSlotClaimed = 1, kSlotReady = 2 };

std::uint32_t pid_of(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
std::uint64_t state_of(std::uint64_t w) { return w & 3; }
std::uint64_t gen_of(std::uint64_t w) { return (w >> 2) & 0x3fffffff; }
std::uint64_t make_owner(std::uint32_t pid, std::uint64_t gen, std::uint64_t state) {
  return std::uint64_t{pid} << 32 | (gen & 0x3fffffff) << 2 | state;
}

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
  for (const Slot& s : slots_) n += state_of(s.owner.load(std::memory_order_relaxed)) == kSlotReady;
  return n;
}

bool Event::reclaim_if_dead(int i, std::uint64_t observed) noexcept {
  Slot& s = slots_[i];
  std::uint64_t st = state_of(observed);
  if (st == kSlotFree) return false;
  // A claimed slot has no token yet: only a missing process counts as dead.
  std::uint64_t token = st == kSlotReady ? s.token.load(std::memory_order_relaxed) : 0;
  if (detail::process_liveness(static_cast<pid_t>(pid_of(observed)), token) != detail::Liveness::dead) return false;
  if (!s.owner.compare_exchange_strong(observed, make_owner(0, gen_of(observed), kSlotFree), std::memory_order_acq_rel))
    return false;  // re-claimed meanwhile (new generation)
  // The active_ bit stays set (a stale hint costs notifiers one check) until
  // the next owner of the slot sets it anyway. Clearing it here could race
  // with that new owner's fetch_or and make it deaf; only a listener clears
  // its own bit, before it frees its slot.
  return true;
}

void Event::wake_sleepers() noexcept {
  if (waiters_.load(std::memory_order_seq_cst) != 0) detail::futex_wake(&seq_, INT32_MAX);
  std::uint64_t mask = active_.load(std::memory_order_seq_cst);
  while (mask) {  // N3
    int i = __builtin_ctzll(mask);
    mask &= mask - 1;
    Slot& s = slots_[i];
    std::uint32_t armed = s.armed_gen.load(std::memory_order_seq_cst);
    std::uint32_t sent = s.sent_gen.load(std::memory_order_acquire);
    if (armed == sent) continue;  // not armed since the last datagram
    std::uint64_t owner = s.owner.load(std::memory_order_acquire);
    if (state_of(owner) != kSlotReady) continue;
    sockaddr_un addr;
    socklen_t len = make_address(s.address.load(std::memory_order_relaxed), &addr);
    char byte = 1;
    ssize_t rc = ::sendto(sender_fd(), &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
    // EAGAIN: the listener's queue is full, so its fd is readable anyway.
    if (rc == 1 || errno == EAGAIN) {
      s.sent_gen.compare_exchange_strong(sent, armed, std::memory_order_acq_rel);
      continue;
    }
    // Nobody bound at that address: the listener is gone. Free the slot if its process is dead.
    if (errno == ECONNREFUSED || errno == ENOENT) reclaim_if_dead(i, owner);
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
  return wait_impl(seen, detail::deadline_after(timeout));
}

EventWait Event::wait_until(std::uint32_t seen, std::chrono::steady_clock::time_point deadline) noexcept {
  return wait_impl(seen, detail::deadline_ns(deadline));
}

EventListener::EventListener(Event& event) : event_(event) {
  const std::uint32_t pid = detail::self_pid();
  std::uint64_t gen = 0;
  // Claim a free slot; on a full table, reclaim slots of dead processes once.
  for (int pass = 0; pass < 2 && slot_ < 0; ++pass) {
    for (int i = 0; i < Event::kMaxListeners; ++i) {
      Event::Slot& s = event_.slots_[i];
      std::uint64_t w = s.owner.load(std::memory_order_acquire);
      if (state_of(w) != kSlotFree) {
        if (pass == 0 || !event_.reclaim_if_dead(i, w)) continue;
        w = s.owner.load(std::memory_order_acquire);
        if (state_of(w) != kSlotFree) continue;
      }
      gen = gen_of(w) + 1;
      if (s.owner.compare_exchange_strong(w, make_owner(pid, gen, kSlotClaimed), std::memory_order_acq_rel)) {
        slot_ = i;
        break;
      }
    }
  }
  if (slot_ < 0)
    throw Error(ErrorCode::no_space, "event has " + std::to_string(Event::kMaxListeners) +
                                         " listeners in live processes already; close unused EventListeners");
  Event::Slot& s = event_.slots_[slot_];
  auto release_slot = [&] { s.owner.store(make_owner(0, gen, kSlotFree), std::memory_order_release); };
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    int err = errno;
    release_slot();
    throw_errno(err, "cannot create the socket of an event listener");
  }
  for (int attempt = 0;; ++attempt) {
    std::uint64_t id = 0;
    if (::getrandom(&id, sizeof id, 0) != sizeof id) id = detail::monotonic_ns() ^ (std::uint64_t{pid} << 32);
    sockaddr_un addr;
    socklen_t len = make_address(id, &addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      s.address.store(id, std::memory_order_relaxed);
      break;
    }
    if (errno != EADDRINUSE || attempt > 8) {
      int err = errno;
      ::close(fd_);
      release_slot();
      throw_errno(err, "cannot bind the socket of an event listener");
    }
  }
  s.token.store(detail::self_token(), std::memory_order_relaxed);
  s.sent_gen.store(s.armed_gen.load(std::memory_order_relaxed), std::memory_order_relaxed);  // not armed yet
  owner_word_ = make_owner(pid, gen, kSlotReady);
  s.owner.store(owner_word_, std::memory_order_release);
  event_.active_.fetch_or(std::uint64_t{1} << slot_, std::memory_order_seq_cst);
}

EventListener::~EventListener() {
  Event::Slot& s = event_.slots_[slot_];
  event_.active_.fetch_and(~(std::uint64_t{1} << slot_), std::memory_order_relaxed);
  std::uint64_t mine = owner_word_;
  s.owner.compare_exchange_strong(mine, make_owner(0, gen_of(owner_word_), kSlotFree), std::memory_order_acq_rel);
  ::close(fd_);
}

void EventListener::arm() noexcept {
  event_.slots_[slot_].armed_gen.fetch_add(1, std::memory_order_seq_cst);  // L1
  // The caller's re-check (L2) must not be reordered before L1.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

int EventListener::drain() noexcept {
  int n = 0;
  char buf[64];
  while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) ++n;
  return n;
}

}  // namespace ipc
