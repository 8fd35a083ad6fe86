// ipc/detail/cpu.hpp — the spin-wait hint, for every busy-poll loop.
//
// Platform layer. x86 PAUSE (about 40–140 cycles depending on the core) keeps
// a spinning hyperthread from starving its sibling and avoids the memory-order
// machine clear when the awaited line changes; aarch64 YIELD is the same hint.
// Elsewhere it compiles to nothing (the loop still works, only less kindly).
#pragma once

namespace ipc::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace ipc::detail
