// Ring slot words (ipc/detail/ring.hpp): make_word / seq_of / state_of /
// pid_of, the signed lap distance across the 2^32 wrap of the position, and
// slot_holder ids. The static_asserts cost nothing at run time; the CHECKs
// run the same arithmetic on values the compiler does not know, around the
// wrap, for a few capacities.
//
// Not labelled "threads": no threads, no processes.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <vector>

#include "ipc/detail/ring.hpp"
#include "support.hpp"

using namespace ipc::ring;

namespace {

constexpr std::uint64_t k2p32 = std::uint64_t{1} << 32;

// Field round trip.
static_assert(seq_of(make_word(5, SlotState::full, 1234)) == 5);
static_assert(state_of(make_word(5, SlotState::full, 1234)) == SlotState::full);
static_assert(pid_of(make_word(5, SlotState::full, 1234)) == 1234);
static_assert(make_word(0, SlotState::empty, 0) == 0);
static_assert(state_of(make_word(7, SlotState::writing, 9)) == SlotState::writing);
static_assert(state_of(make_word(7, SlotState::reading, 9)) == SlotState::reading);
// The word keeps the low 32 bits of the position; the lap above is dropped.
static_assert(seq_of(make_word(k2p32 + 3, SlotState::full, 1)) == 3);
static_assert(make_word(k2p32 + 3, SlotState::full, 1) == make_word(3, SlotState::full, 1));
static_assert(seq_of(make_word(k2p32 - 1, SlotState::empty, 0)) == 0xffffffffu);
// A pid wider than 30 bits is masked: it never leaks into the state bits.
static_assert(pid_of(make_word(0, SlotState::empty, 0xffffffffu)) == kPidMask);
static_assert(state_of(make_word(0, SlotState::empty, 0xffffffffu)) == SlotState::empty);
static_assert(seq_of(make_word(0, SlotState::reading, 0xffffffffu)) == 0);
static_assert(kPidMask == (1u << 30) - 1);
// The fields do not overlap: state and pid never change seq, and so on.
static_assert(make_word(1, SlotState::empty, 0) == std::uint64_t{1} << 32);
static_assert(make_word(0, SlotState::reading, 0) == std::uint64_t{3} << 30);
static_assert(make_word(0, SlotState::empty, kPidMask) == kPidMask);

// Lap distance: seq - pos, signed, modulo 2^32.
static_assert(distance(make_word(10, SlotState::full, 0), 10) == 0);
static_assert(distance(make_word(14, SlotState::empty, 0), 10) == 4);  // the slot serves a later lap
static_assert(distance(make_word(6, SlotState::empty, 0), 10) == -4);  // the slot is a lap behind
// Across the wrap of the 32-bit sequence.
static_assert(distance(make_word(2, SlotState::empty, 0), k2p32 - 2) == 4);
static_assert(distance(make_word(k2p32 - 2, SlotState::empty, 0), 2) == -4);
static_assert(distance(make_word(k2p32 + 2, SlotState::empty, 0), k2p32 - 2) == 4);
// 64-bit positions compare by their low 32 bits.
static_assert(distance(make_word(3, SlotState::full, 0), k2p32 + 3) == 0);
static_assert(distance(make_word(5 * k2p32 + 3, SlotState::full, 0), 3) == 0);
// A full capacity ahead and behind, at the largest capacity, across the wrap.
static_assert(distance(make_word(k2p32 - 1 + kMaxCapacity, SlotState::empty, 0), k2p32 - 1) ==
              static_cast<std::int32_t>(kMaxCapacity));
static_assert(distance(make_word(k2p32 - 1, SlotState::empty, 0), k2p32 - 1 + kMaxCapacity) ==
              -static_cast<std::int32_t>(kMaxCapacity));

// Holder ids: bit 30 | 14-bit tag << 16 | 16-bit slot index.
static_assert(slot_holder(0, 0) == 0x40000000u);
static_assert(slot_holder(0x3fff, 0xffff) == 0x7fffffffu);
static_assert(slot_holder(1, 2) == (0x40000000u | 1u << 16 | 2u));
static_assert(slot_holder(0x4000, 0x10000) == slot_holder(0, 0));  // tag and index are masked
static_assert(slot_holder(5, kMaxCapacity - 1) != slot_holder(5, 0));
static_assert(slot_holder(5, 7) != slot_holder(6, 7));
// Never a pid: process holder ids are pids (< 2^22), slot holders are >= 2^30.
static_assert(slot_holder(0, 0) > (1u << 22));
static_assert((slot_holder(0x3fff, 0xffff) & 0x80000000u) == 0);
// The index field holds every slot of the largest ring.
static_assert(kMaxCapacity == 1u << 16);

}  // namespace

TEST_CASE("slot words: fields round-trip for positions around the 2^32 wrap and every state") {
  const std::vector<std::uint64_t> positions = {0,     1,         k2p32 - 3,         k2p32 - 1,
                                                k2p32, k2p32 + 1, 7 * k2p32 + 12345, (std::uint64_t{1} << 47) - 1};
  const SlotState states[] = {SlotState::empty, SlotState::writing, SlotState::full, SlotState::reading};
  const std::vector<std::uint32_t> pids = {0, 1, 4194303, kPidMask, kPidMask + 1, 0xffffffffu};
  int checked = 0;
  for (std::uint64_t pos : positions)
    for (SlotState st : states)
      for (std::uint32_t pid : pids) {
        const std::uint64_t w = make_word(pos, st, pid);
        CAPTURE(pos);
        CAPTURE(pid);
        CHECK(seq_of(w) == static_cast<std::uint32_t>(pos));
        CHECK(state_of(w) == st);
        CHECK(pid_of(w) == (pid & kPidMask));
        CHECK(distance(w, pos) == 0);
        ++checked;
      }
  CHECK(checked == static_cast<int>(positions.size() * 4 * pids.size()));
}

TEST_CASE("lap distance: a slot one lap ahead, the current lap and one lap behind, across the 2^32 wrap") {
  for (std::uint32_t capacity : {2u, 4u, 1024u, kMaxCapacity}) {
    CAPTURE(capacity);
    // Positions walking through the wrap of the 32-bit sequence, and a second wrap far away.
    for (std::uint64_t base : {k2p32, 3 * k2p32}) {
      for (std::uint64_t pos = base - 2 * capacity; pos < base + 2 * capacity; pos += capacity / 2 + 1) {
        CAPTURE(pos);
        // Slot (pos mod capacity) after the consumer freed it for the next lap: serves pos + capacity.
        const std::uint64_t next_lap = make_word(pos + capacity, SlotState::empty, 0);
        CHECK(distance(next_lap, pos) == static_cast<std::int32_t>(capacity));
        CHECK(distance(next_lap, pos + capacity) == 0);
        // A producer at pos + capacity sees a slot still holding pos: one lap behind.
        const std::uint64_t this_lap = make_word(pos, SlotState::full, 42);
        CHECK(distance(this_lap, pos + capacity) == -static_cast<std::int32_t>(capacity));
        CHECK(distance(this_lap, pos) == 0);
        // The sign tells ahead from behind however close to the wrap.
        CHECK(distance(make_word(pos + 1, SlotState::empty, 0), pos) == 1);
        CHECK(distance(make_word(pos, SlotState::empty, 0), pos + 1) == -1);
      }
    }
  }
}

TEST_CASE("slot holders: one distinct id per (tag, slot) of a ring, none collides with a pid") {
  for (std::uint32_t tag : {0u, 1u, 0x2abcu, 0x3fffu}) {
    CAPTURE(tag);
    std::set<std::uint32_t> ids;
    for (std::uint32_t i = 0; i < kMaxCapacity; ++i) ids.insert(slot_holder(tag, i));
    CHECK(ids.size() == kMaxCapacity);
    CHECK(*ids.begin() == slot_holder(tag, 0));
    CHECK(*ids.begin() >= 0x40000000u);  // above every pid (pid_max <= 2^22)
    CHECK(*ids.rbegin() < 0x80000000u);  // bit 31 stays clear
    CHECK(((*ids.begin() >> 16) & 0x3fffu) == tag);
  }
  CHECK(slot_holder(0x3fff + 1, 3) == slot_holder(0, 3));  // the tag is 14 bits
}
