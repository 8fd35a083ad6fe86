// ipc/segment.hpp — named shared-memory segments and the object directory in them.
//
// Types: `Segment` (a mapping of one named segment), `SegmentOptions`,
// `OpenOptions`, `ObjectType`, `ObjectInfo`, `Object`, `SegmentInfo`.
//
// Naming: a segment `jobs` in domain `prod` is the POSIX shm object
// `/ipc.prod.jobs`, i.e. the tmpfs file /dev/shm/ipc.prod.jobs. The domain
// keeps independent installations apart; it is SegmentOptions::domain, else
// the environment variable IPC_DOMAIN, else "default". Segment and domain
// names: 1..kMaxNameLength characters of [A-Za-z0-9_-].
//
// Memory layout (all positions are byte offsets from the segment start;
// nothing in shared memory is a raw pointer, so every process may map the
// segment at a different address):
//
//   [0, 4096)              SegmentHeader
//                            immutable identity: magic "IPCSEGM1", layout
//                            version, header size, total size, flags,
//                            creation time, creator pid, generation (random,
//                            differs for a re-created segment of the same
//                            name), PID-namespace inode, directory and heap
//                            offsets, then a 64-bit FNV-1a checksum over all
//                            of the above;
//                            mutable, each on its own cache line: the
//                            directory lock (robust ipc::Mutex), the directory
//                            version (seqlock), the object generation counter.
//   [4096, heap_offset)    directory: directory_capacity × 128-byte entries
//                            {state, type, offset, size, generation, created,
//                            creator pid, name}. state 0 = free, so zeroed
//                            memory is an empty directory.
//   [heap_offset, size)    object storage, 64-byte aligned.
//
// Object storage allocator: our own, not Boost.Interprocess's segment manager,
// because BI 1.74 guards its manager with a non-robust mutex (a process killed
// inside allocate() wedges every other process) and keeps free-list state that
// a crash can leave half-updated. Ours keeps *no* allocator state: the free
// space is derived from the directory entries themselves (first fit in the gaps
// between live entries, under the directory lock). Objects are created rarely
// (setup time) and the directory is small, so the O(n log n) scan is cheap, and
// there is nothing to repair after a crash but the entries.
//
// Creating a segment (no other process can ever see a half-built one):
//   1. open(/dev/shm, O_TMPFILE): an unnamed tmpfs file; fchmod/fchown to the
//      requested mode and group.
//   2. posix_fallocate the full size (a full tmpfs fails here with ENOSPC and
//      a clear error, instead of SIGBUS on first touch later).
//   3. mmap, write the header and checksum, initialise the directory lock.
//   4. linkat() the file to its name: atomic, fails if the name exists.
//   Death before 4 leaves nothing: the kernel frees the unnamed file.
//
// Creating an object (directory lock held throughout):
//   1. lock; on owner_died run repair (below).
//   2. look up the name: READY → `create_object` fails with already_exists,
//      `find_or_create_object` returns it if type and size match.
//   3. pick a free entry and a storage gap; write the entry, state RESERVED.
//   4. zero the storage, run the caller's init on it.
//   5. version++ (odd); state = READY (release); version++ (even).
//   6. unlock.
//   A creator dying in 3–5 leaves a RESERVED entry (invisible to readers)
//   and maybe an odd version; the next locker gets owner_died and repairs:
//   RESERVED entries are freed, the version made even, then mark_consistent.
//   Losers of a concurrent create wait on the lock and then find the winner's
//   READY object (step 2), or, if the winner died, create it themselves.
// Removing: lock; version++ (odd); entry zeroed; version++ (even); unlock.
// Readers (find/list) take no lock: they copy entries under the seqlock and
// retry while the version is odd or changed, for at most kReadRetryTime; this
// lets `ipcctl` read a segment mapped read-only.
//
// Open verifies before it maps: regular file, size ≥ header, header read with
// pread (not through a mapping, so a truncated file cannot SIGBUS), magic,
// layout version, checksum, total size == file size, directory bounds, PID
// namespace. Each failure is an ipc::Error naming the segment. What no check
// can prevent: another process truncating the file *after* we mapped it
// (named tmpfs files cannot be sealed) — give write access only to the
// broker's group (SegmentOptions::mode/group).
//
// Concurrency: a Segment object may be used from several threads; all
// methods are thread-safe. Any number of processes may map one segment.
// Object removal frees storage for reuse: remove only objects nobody uses.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ipc/error.hpp"

namespace ipc {

inline constexpr std::size_t kMaxNameLength = 100;       // segment and domain names
inline constexpr std::size_t kMaxObjectNameLength = 79;  // object names in the directory
inline constexpr std::uint32_t kSegmentLayoutVersion = 1;

// Type tags stored in the directory. Values are part of the segment format.
namespace detail {
std::string object_label(const void* address, std::string_view kind);  // for log lines; libipc/src/labels.hpp
}  // namespace detail

// Type tags of directory entries, in reserved ranges so that a new kind of
// object never needs an edit here:
//   1 … 0x0fff            libipc's own objects (the enumerators below)
//   0x1000 … 0xffff       the broker's objects (ipcd: registry, sessions, …)
//   0x10000 … 0xffffffff  user objects: user_object_type(n)
// A directory may hold tags this build does not know (a newer libipc, the
// broker, a user): they are listed and opened by their own tag, never
// treated as corruption.
enum class ObjectType : std::uint32_t {
  raw = 1,  // plain bytes owned by the user
  mutex = 2,
  shared_mutex = 3,
  condvar = 4,
  barrier = 5,
  semaphore = 6,
  event = 7,
  pool = 8,
  channel = 9,
  broadcast = 10,
  priority_queue = 11,
  hash_map = 12,
};
inline constexpr std::uint32_t kLibraryObjectTypeLast = 0x0fff;
inline constexpr std::uint32_t kBrokerObjectTypeFirst = 0x1000;
inline constexpr std::uint32_t kUserObjectTypeFirst = 0x10000;
// The broker's n-th object type (n < 0xf000) and a user's n-th.
constexpr ObjectType broker_object_type(std::uint32_t n) noexcept { return ObjectType(kBrokerObjectTypeFirst + n); }
constexpr ObjectType user_object_type(std::uint32_t n) noexcept { return ObjectType(kUserObjectTypeFirst + n); }
// The name of a library type; "broker object", "user object" or "unknown
// library object" for tags outside the enumerators.
const char* to_string(ObjectType type) noexcept;

// The directory tag of a library type that lives directly in a directory
// entry (the typed helpers below check it); ObjectType::raw for every other
// C++ type, whose tag the caller chooses (a user struct that embeds an Event
// may be tagged event).
class Mutex;
class SharedMutex;
class CondVar;
class Barrier;
class Semaphore;
class Event;
template <typename T>
inline constexpr ObjectType kObjectTypeOf = ObjectType::raw;
template <>
inline constexpr ObjectType kObjectTypeOf<Mutex> = ObjectType::mutex;
template <>
inline constexpr ObjectType kObjectTypeOf<SharedMutex> = ObjectType::shared_mutex;
template <>
inline constexpr ObjectType kObjectTypeOf<CondVar> = ObjectType::condvar;
template <>
inline constexpr ObjectType kObjectTypeOf<Barrier> = ObjectType::barrier;
template <>
inline constexpr ObjectType kObjectTypeOf<Semaphore> = ObjectType::semaphore;
template <>
inline constexpr ObjectType kObjectTypeOf<Event> = ObjectType::event;

struct ObjectInfo {
  std::string name;
  ObjectType type = ObjectType::raw;
  std::uint64_t offset = 0;      // from the segment start
  std::uint64_t size = 0;        // bytes
  std::uint64_t generation = 0;  // unique per creation within the segment
  std::uint32_t creator_pid = 0;
  std::uint64_t created_realtime_ns = 0;
};

// A live object in this process's mapping. `data` is valid while the Segment
// that returned it stays open (and nobody removes the object).
struct Object {
  void* data = nullptr;
  ObjectInfo info;
};

struct SegmentOptions {
  std::size_t size = 16u << 20;            // total bytes, header and directory included
  mode_t mode = 0600;                      // permission bits of the shm file
  std::optional<gid_t> group{};            // chown the file to this group
  std::uint32_t directory_capacity = 256;  // max objects in the segment
  std::string domain{};                    // empty: $IPC_DOMAIN, else "default"
};

struct OpenOptions {
  bool read_only = false;  // map PROT_READ (ipcctl); create/remove then throw
  std::string domain{};    // empty: $IPC_DOMAIN, else "default"
};

struct SegmentInfo {
  std::string name;
  std::string domain;
  std::string path;  // /dev/shm/ipc.<domain>.<name>
  std::uint64_t size = 0;
  std::uint32_t layout_version = 0;
  std::uint64_t flags = 0;
  std::uint64_t generation = 0;
  std::uint32_t creator_pid = 0;
  std::uint64_t created_realtime_ns = 0;
  std::uint32_t directory_capacity = 0;
  std::uint64_t heap_offset = 0;
  std::uint64_t heap_used = 0;  // bytes held by objects
  std::uint32_t object_count = 0;
};

class Segment {
 public:
  // How long a lock-free directory reader retries while a writer is mid-change.
  static constexpr std::chrono::milliseconds kReadRetryTime{200};

  // Creates a new segment. Throws already_exists if the name is taken,
  // no_space if /dev/shm cannot hold `size` bytes, invalid_argument for bad
  // names or sizes.
  static Segment create(std::string_view name, const SegmentOptions& options = {});
  // Maps an existing segment after verifying it (see the header comment).
  static Segment open(std::string_view name, const OpenOptions& options = {});
  // Removes the name; existing mappings stay valid until closed. Returns false
  // if there was no such segment.
  static bool unlink(std::string_view name, std::string_view domain = {});
  // Names of the segments of a domain (from /dev/shm), sorted.
  static std::vector<std::string> list(std::string_view domain = {});
  // The effective domain: `domain`, else $IPC_DOMAIN, else "default" (validated).
  static std::string resolve_domain(std::string_view domain);
  // "/ipc.<domain>.<name>" after validating both names.
  static std::string shm_name(std::string_view name, std::string_view domain = {});

  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();  // unmaps; never unlinks

  const std::string& name() const noexcept { return name_; }
  const std::string& domain() const noexcept { return domain_; }
  std::size_t size() const noexcept { return size_; }
  bool read_only() const noexcept { return read_only_; }
  std::uint64_t generation() const noexcept;
  SegmentInfo info() const;

  // Position-independent addressing inside this mapping.
  std::byte* base() const noexcept { return base_; }
  // Pointer for an offset; nullptr if the range [offset, offset+len) is not inside the segment.
  void* at(std::uint64_t offset, std::size_t len = 1) const noexcept;
  // Offset of a pointer into this mapping; throws invalid_argument if it is not inside.
  std::uint64_t offset_of(const void* p) const;

  // Called on zeroed storage with the directory lock held; must not call
  // directory methods of this segment. If it throws, the object is not
  // created and the exception propagates.
  using InitFn = std::function<void(void* data, std::size_t size)>;

  // Creates an object; throws already_exists if the name is taken, no_space
  // if no gap of `size` bytes is left or the directory is full.
  Object create_object(std::string_view name, ObjectType type, std::size_t size, const InitFn& init = {});
  // Returns the existing object of that name (another type: type_mismatch;
  // the same type with another size: already_exists), or creates it. Safe against concurrent callers in any
  // number of processes: exactly one creates, all get the same object.
  Object find_or_create_object(std::string_view name, ObjectType type, std::size_t size, const InitFn& init = {});
  // Lock-free lookup; nullopt if absent.
  std::optional<Object> find_object(std::string_view name) const;
  // Lookup that throws not_found, or type_mismatch for another type, naming both.
  Object open_object(std::string_view name, ObjectType type) const;
  // Frees the object's directory entry and storage. Returns false if absent.
  bool remove_object(std::string_view name);
  // All READY objects, sorted by name. Lock-free.
  std::vector<ObjectInfo> objects() const;

  // Typed helpers: T is placement-constructed with `args` by the creator. A
  // library type with another tag than its own (find_or_create<CondVar>
  // tagged mutex) throws type_mismatch naming both, before anything is made.
  template <typename T, typename... Args>
  T& find_or_create(std::string_view name, ObjectType type, Args&&... args) {
    check_tag(kObjectTypeOf<std::remove_cv_t<T>>, type, name);
    Object obj = find_or_create_object(name, type, sizeof(T),
                                       [&](void* p, std::size_t) { new (p) T(std::forward<Args>(args)...); });
    return *static_cast<T*>(obj.data);
  }
  template <typename T>
  T& open(std::string_view name, ObjectType type) const {
    check_tag(kObjectTypeOf<std::remove_cv_t<T>>, type, name);
    Object obj = open_object(name, type);
    if (obj.info.size < sizeof(T))
      throw Error(ErrorCode::corrupted,
                  "object '" + std::string(name) + "' in segment '" + name_ + "' is smaller than its type requires");
    return *static_cast<T*>(obj.data);
  }

 private:
  friend std::string detail::object_label(const void* address, std::string_view kind);
  // Throws type_mismatch when `own` (a library type's tag) is not raw and differs from `tag`.
  void check_tag(ObjectType own, ObjectType tag, std::string_view name) const;
  Segment() = default;
  struct Header;
  struct DirectoryLock;
  Header* header() const noexcept;
  void close() noexcept;
  std::string describe() const;  // "segment 'x' (/dev/shm/ipc.d.x)"
  std::vector<ObjectInfo> snapshot() const;
  void lock_directory();
  void unlock_directory() noexcept;
  void repair_directory() noexcept;
  Object create_locked(std::string_view name, ObjectType type, std::size_t size, const InitFn& init);
  Object make_object(const ObjectInfo& info) const;

  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  bool read_only_ = false;
  std::string name_;
  std::string domain_;
};

}  // namespace ipc
