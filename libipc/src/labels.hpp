// labels.hpp (private to libipc/src) — names for shared objects in log lines.
//
// A log line about a lock says "mutex 'counter.lock' in segment 'main'", not
// "mutex 0x7f3a…": object_label() finds the segment this process mapped that
// contains the address, and the directory entry that contains it. For a part
// of a larger object (the lock inside a priority queue) it names the object
// and the offset: "mutex in priority_queue 'jobs' (+64) in segment 'main'".
// An address in no mapped segment (a Mutex in private memory) keeps its
// address. Implemented in segment.cpp, which keeps the per-process table of
// mappings (a registry touched when a segment is mapped or unmapped and when
// a line is logged, never on a hot path).
#pragma once

#include <string>
#include <string_view>

namespace ipc::detail {

std::string object_label(const void* address, std::string_view kind);

}  // namespace ipc::detail
