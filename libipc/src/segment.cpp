#include "ipc/segment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>

#include "ipc/detail/process.hpp"
#include "ipc/mutex.hpp"
#include "labels.hpp"
#include "log.hpp"

namespace ipc {
namespace {

constexpr const char* kShmDir = "/dev/shm";
constexpr std::uint64_t kSegmentMagic = 0x314d474553435049ull;  // "IPCSEGM1" little-endian
constexpr std::size_t kHeaderBytes = 4096;
constexpr std::size_t kAlign = 64;
constexpr std::size_t kMinSegmentSize = 64u << 10;
constexpr std::size_t kMaxSegmentSize = std::size_t{1} << 40;
constexpr std::uint32_t kMaxDirectoryCapacity = 65536;

enum EntryState : std::uint32_t { kFree = 0, kReserved = 1, kReady = 2 };

struct DirectoryEntry {
  std::atomic<std::uint32_t> state;
  std::uint32_t type;
  std::uint64_t offset;
  std::uint64_t size;
  std::uint64_t generation;
  std::uint64_t created_realtime_ns;
  std::uint32_t creator_pid;
  std::uint32_t name_length;
  char name[kMaxObjectNameLength + 1];
};
static_assert(sizeof(DirectoryEntry) == 128, "directory entries are part of the segment format");

std::uint64_t fnv1a(const void* data, std::size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < len; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

bool valid_name_char(char c, bool object) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-') return true;
  return object && (c == '.' || c == ':' || c == '/');
}

void validate_name(std::string_view name, std::string_view what, std::size_t max, bool object) {
  if (name.empty() || name.size() > max)
    throw Error(ErrorCode::invalid_argument, std::string(what) + " name '" + std::string(name) + "' must be 1.." +
                                                 std::to_string(max) + " characters long");
  for (char c : name)
    if (!valid_name_char(c, object))
      throw Error(ErrorCode::invalid_argument, std::string(what) + " name '" + std::string(name) + "' contains '" +
                                                   std::string(1, c) + "'; allowed are letters, digits, '_' and '-'" +
                                                   (object ? ", '.', ':' and '/'" : ""));
}

std::string mib(std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The segments this process has mapped, for object_label(). Per-process
// bookkeeping, not shared state: a fork child inherits it together with the
// mappings it describes. The atfork handlers keep the lock usable in a child
// forked while another thread held it.
struct Mapped {
  const std::byte* base;
  std::size_t size;
  std::string name;
};
struct MappedTable {
  std::mutex lock;
  std::vector<Mapped> entries;
};
MappedTable& mapped() {
  static MappedTable* table = [] {
    auto* t = new MappedTable;  // never destroyed: log lines may come from static destructors
    ::pthread_atfork([] { mapped().lock.lock(); }, [] { mapped().lock.unlock(); }, [] { mapped().lock.unlock(); });
    return t;
  }();
  return *table;
}
void note_mapped(const std::byte* base, std::size_t size, const std::string& name) {
  MappedTable& t = mapped();
  std::lock_guard<std::mutex> g(t.lock);
  t.entries.push_back({base, size, name});
}
void note_unmapped(const std::byte* base) noexcept {
  MappedTable& t = mapped();
  std::lock_guard<std::mutex> g(t.lock);
  std::erase_if(t.entries, [&](const Mapped& m) { return m.base == base; });
}

}  // namespace

struct Segment::Header {
  // Immutable after creation; covered by checksum.
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t header_size;
  std::uint64_t total_size;
  std::uint64_t flags;
  std::uint64_t created_realtime_ns;
  std::uint64_t generation;
  std::uint64_t pid_namespace;
  std::uint32_t creator_pid;
  std::uint32_t directory_capacity;
  std::uint64_t directory_offset;
  std::uint64_t heap_offset;
  std::uint64_t checksum;  // FNV-1a of every byte above
  // Mutable, under the directory lock.
  alignas(64) Mutex directory_lock;
  alignas(64) std::atomic<std::uint32_t> directory_version;  // seqlock: odd while changing
  std::uint32_t reserved0;
  std::uint64_t next_object_generation;

  std::uint64_t compute_checksum() const { return fnv1a(this, offsetof(Header, checksum)); }
  DirectoryEntry* entries(std::byte* base) const { return reinterpret_cast<DirectoryEntry*>(base + directory_offset); }
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

const char* to_string(ObjectType type) noexcept {
  switch (type) {
    case ObjectType::raw: return "raw";
    case ObjectType::mutex: return "mutex";
    case ObjectType::shared_mutex: return "shared_mutex";
    case ObjectType::condvar: return "condvar";
    case ObjectType::barrier: return "barrier";
    case ObjectType::semaphore: return "semaphore";
    case ObjectType::event: return "event";
    case ObjectType::pool: return "pool";
    case ObjectType::channel: return "channel";
    case ObjectType::broadcast: return "broadcast";
    case ObjectType::priority_queue: return "priority_queue";
    case ObjectType::hash_map: return "hash_map";
  }
  const auto tag = static_cast<std::uint32_t>(type);
  if (tag >= kUserObjectTypeFirst) return "user object";
  if (tag >= kBrokerObjectTypeFirst) return "broker object";
  return "unknown library object";
}

// ---- names ---------------------------------------------------------------

std::string Segment::resolve_domain(std::string_view domain) {
  std::string d(domain);
  if (d.empty()) {
    const char* env = std::getenv("IPC_DOMAIN");
    d = env && *env ? env : "default";
  }
  validate_name(d, "domain", kMaxNameLength, false);
  return d;
}

std::string Segment::shm_name(std::string_view name, std::string_view domain) {
  validate_name(name, "segment", kMaxNameLength, false);
  return "/ipc." + resolve_domain(domain) + "." + std::string(name);
}

std::vector<std::string> Segment::list(std::string_view domain) {
  std::string prefix = "ipc." + resolve_domain(domain) + ".";
  std::vector<std::string> out;
  DIR* dir = ::opendir(kShmDir);
  if (!dir) throw_errno(errno, std::string("cannot list ") + kShmDir);
  while (dirent* e = ::readdir(dir)) {
    std::string_view n(e->d_name);
    if (n.size() > prefix.size() && n.substr(0, prefix.size()) == prefix) out.emplace_back(n.substr(prefix.size()));
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

bool Segment::unlink(std::string_view name, std::string_view domain) {
  std::string path = std::string(kShmDir) + shm_name(name, domain);
  if (::unlink(path.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno(errno, "cannot unlink segment '" + std::string(name) + "' (" + path + ")");
}

// ---- lifetime --------------------------------------------------------------

Segment::Segment(Segment&& other) noexcept { *this = std::move(other); }

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    close();
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    read_only_ = other.read_only_;
    name_ = std::move(other.name_);
    domain_ = std::move(other.domain_);
  }
  return *this;
}

Segment::~Segment() { close(); }

void Segment::close() noexcept {
  if (base_) {
    note_unmapped(base_);
    ::munmap(base_, size_);
  }
  base_ = nullptr;
  size_ = 0;
}

// Holds the directory lock for a scope (lock_directory() repairs on owner_died).
struct Segment::DirectoryLock {
  explicit DirectoryLock(Segment* s) : segment(s) { segment->lock_directory(); }
  ~DirectoryLock() { segment->unlock_directory(); }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  Segment* segment;
};

Segment::Header* Segment::header() const noexcept {
  static_assert(sizeof(Header) <= kHeaderBytes, "the header must fit its page");
  static_assert(std::is_standard_layout_v<Header>, "the header is plain shared data");
  return reinterpret_cast<Header*>(base_);
}

std::string Segment::describe() const {
  return "segment '" + name_ + "' (" + kShmDir + "/ipc." + domain_ + "." + name_ + ")";
}

std::uint64_t Segment::generation() const noexcept { return header()->generation; }

Segment Segment::create(std::string_view name, const SegmentOptions& options) {
  Segment seg;
  seg.domain_ = resolve_domain(options.domain);
  std::string path = std::string(kShmDir) + shm_name(name, seg.domain_);
  seg.name_ = std::string(name);
  const std::string what = seg.describe();

  if (options.size < kMinSegmentSize || options.size > kMaxSegmentSize)
    throw Error(ErrorCode::invalid_argument, "cannot create " + what + ": size " + std::to_string(options.size) +
                                                 " is outside " + std::to_string(kMinSegmentSize) + ".." +
                                                 std::to_string(kMaxSegmentSize) + " bytes");
  if (options.directory_capacity == 0 || options.directory_capacity > kMaxDirectoryCapacity)
    throw Error(ErrorCode::invalid_argument,
                "cannot create " + what + ": directory_capacity must be 1.." + std::to_string(kMaxDirectoryCapacity));
  if (options.mode & ~07777u)
    throw Error(ErrorCode::invalid_argument, "cannot create " + what + ": mode has bits outside 07777");
  const std::size_t size = align_up(options.size, 4096);
  const std::size_t dir_bytes = std::size_t{options.directory_capacity} * sizeof(DirectoryEntry);
  const std::size_t heap_offset = align_up(kHeaderBytes + dir_bytes, 4096);
  if (heap_offset >= size)
    throw Error(ErrorCode::invalid_argument, "cannot create " + what + ": a directory of " +
                                                 std::to_string(options.directory_capacity) +
                                                 " entries leaves no room for objects; make size larger");

  struct statvfs vfs {};
  if (::statvfs(kShmDir, &vfs) == 0) {
    std::uint64_t free_bytes = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
    if (free_bytes < size)
      throw Error(ErrorCode::no_space, "cannot create " + what + ": it needs " + mib(size) + ", " + kShmDir + " has " +
                                           mib(free_bytes) +
                                           " free; free space there, or enlarge it (in Docker use --shm-size)");
  }

  // Step 1: an unnamed file; nobody can open it before step 4.
  int fd = ::open(kShmDir, O_TMPFILE | O_RDWR | O_CLOEXEC, options.mode);
  if (fd < 0) throw_errno(errno, "cannot create " + what + ": open(" + std::string(kShmDir) + ", O_TMPFILE)");
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  if (::fchmod(fd, options.mode) != 0) throw_errno(errno, "cannot set mode of " + what);
  if (options.group && ::fchown(fd, static_cast<uid_t>(-1), *options.group) != 0)
    throw_errno(errno, "cannot set group " + std::to_string(*options.group) + " on " + what);

  // Step 2: reserve every page now; ENOSPC here instead of SIGBUS later.
  int rc;
  do rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  while (rc == EINTR);
  if (rc == ENOSPC)
    throw Error(ErrorCode::no_space,
                "cannot create " + what + ": it needs " + mib(size) + " and " + kShmDir +
                    " ran out of space; free space there, or enlarge it (in Docker use --shm-size)");
  if (rc != 0) throw_errno(rc, "cannot allocate " + mib(size) + " for " + what);

  // Step 3: build the header.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno(errno, "cannot map " + what);
  seg.base_ = static_cast<std::byte*>(p);
  seg.size_ = size;
  note_mapped(seg.base_, seg.size_, seg.name_);
  auto* h = new (p) Header{};
  h->magic = kSegmentMagic;
  h->layout_version = kSegmentLayoutVersion;
  h->header_size = static_cast<std::uint32_t>(sizeof(Header));
  h->total_size = size;
  h->flags = 0;
  h->created_realtime_ns = detail::realtime_ns();
  if (::getrandom(&h->generation, sizeof h->generation, 0) != sizeof h->generation)
    h->generation = detail::monotonic_ns() ^ (std::uint64_t{detail::self_pid()} << 40);
  h->pid_namespace = detail::pid_namespace_id();
  h->creator_pid = detail::self_pid();
  h->directory_capacity = options.directory_capacity;
  h->directory_offset = kHeaderBytes;
  h->heap_offset = heap_offset;
  h->checksum = h->compute_checksum();
  h->next_object_generation = 1;

  // Step 4: publish under the name, atomically, failing if it exists.
  std::string proc_fd = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, proc_fd.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    int err = errno;
    if (err == EEXIST)
      throw Error(ErrorCode::already_exists, "cannot create " + what +
                                                 ": it already exists; open it instead, or remove it first "
                                                 "(Segment::unlink, or remove " +
                                                 path + " if it is a leftover)");
    throw_errno(err, "cannot publish " + what);
  }
  log::debug("created {} ({} bytes)", what, size);
  return seg;
}

Segment Segment::open(std::string_view name, const OpenOptions& options) {
  Segment seg;
  seg.domain_ = resolve_domain(options.domain);
  std::string path = std::string(kShmDir) + shm_name(name, seg.domain_);
  seg.name_ = std::string(name);
  seg.read_only_ = options.read_only;
  const std::string what = seg.describe();

  int fd = ::open(path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT)
      throw Error(ErrorCode::not_found,
                  "cannot open " + what + ": it does not exist; create it first (Segment::create)");
    if (err == EACCES || err == EPERM) {
      struct stat st {};
      std::string detail =
          ::stat(path.c_str(), &st) == 0
              ? " (owner uid " + std::to_string(st.st_uid) + ", group " + std::to_string(st.st_gid) + ", mode 0" +
                    std::to_string((st.st_mode >> 6 & 7) * 100 + (st.st_mode >> 3 & 7) * 10 + (st.st_mode & 7)) + ")"
              : "";
      throw Error(ErrorCode::permission_denied, "cannot open " + what + ": permission denied" + detail +
                                                    "; run as its owner or a member of its group");
    }
    throw_errno(err, "cannot open " + what);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, "cannot stat " + what);
  if (!S_ISREG(st.st_mode)) throw Error(ErrorCode::bad_magic, "cannot open " + what + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) < sizeof(Header))
    throw Error(ErrorCode::truncated, "cannot open " + what + ": the file is " + std::to_string(st.st_size) +
                                          " bytes, smaller than a segment header; it is truncated or not a "
                                          "libipc segment — remove it");

  // Read with pread into plain bytes: never through a mapping of a file that may be short.
  alignas(Header) unsigned char raw[sizeof(Header)];
  ssize_t n = ::pread(fd, raw, sizeof raw, 0);
  if (n != static_cast<ssize_t>(sizeof raw)) throw_errno(n < 0 ? errno : EIO, "cannot read the header of " + what);
  const Header& h = *reinterpret_cast<const Header*>(raw);
  if (h.magic != kSegmentMagic)
    throw Error(ErrorCode::bad_magic, "cannot open " + what + ": bad magic number; it is not a libipc segment");
  if (h.layout_version != kSegmentLayoutVersion)
    throw Error(ErrorCode::version_mismatch, "cannot open " + what + ": it has layout version " +
                                                 std::to_string(h.layout_version) + ", this libipc reads version " +
                                                 std::to_string(kSegmentLayoutVersion) +
                                                 "; use the libipc that created it, or re-create the segment");
  if (h.checksum != h.compute_checksum())
    throw Error(ErrorCode::corrupted, "cannot open " + what +
                                          ": header checksum mismatch; the segment is corrupted — "
                                          "remove it (Segment::unlink) and re-create it");
  if (h.total_size != static_cast<std::uint64_t>(st.st_size))
    throw Error(h.total_size > static_cast<std::uint64_t>(st.st_size) ? ErrorCode::truncated : ErrorCode::corrupted,
                "cannot open " + what + ": its header says " + std::to_string(h.total_size) +
                    " bytes but the file has " + std::to_string(st.st_size) +
                    "; it was resized after creation — remove and re-create it");
  if (h.header_size != sizeof(Header) || h.directory_offset != kHeaderBytes || h.directory_capacity == 0 ||
      h.directory_capacity > kMaxDirectoryCapacity ||
      h.heap_offset < h.directory_offset + std::uint64_t{h.directory_capacity} * sizeof(DirectoryEntry) ||
      h.heap_offset >= h.total_size)
    throw Error(ErrorCode::corrupted, "cannot open " + what +
                                          ": header fields are inconsistent; the segment is "
                                          "corrupted — remove it and re-create it");
  std::uint64_t ns = detail::pid_namespace_id();
  // Liveness verdicts hold across PID namespaces (detail/process.hpp), but
  // pool client slots, shared-mutex reader slots and the mutex owner's tid
  // are still keyed by pid/tid, and two namespaces reuse the same numbers
  // (every container's first process is pid 1): a process of another
  // namespace could be taken for one of ours. Refused until those records
  // carry identities (docs/architecture.md "Liveness").
  if (h.pid_namespace != 0 && ns != 0 && h.pid_namespace != ns)
    throw Error(ErrorCode::namespace_mismatch,
                "cannot open " + what +
                    ": it was created in another PID namespace; every process of a libipc domain must share "
                    "one for now (Docker: --pid=host or --pid=container:<id>; Kubernetes: "
                    "shareProcessNamespace: true)");

  int prot = options.read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  void* p = ::mmap(nullptr, h.total_size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno(errno, "cannot map " + what);
  seg.base_ = static_cast<std::byte*>(p);
  seg.size_ = h.total_size;
  note_mapped(seg.base_, seg.size_, seg.name_);
  return seg;
}

// ---- addressing -------------------------------------------------------------

void* Segment::at(std::uint64_t offset, std::size_t len) const noexcept {
  if (offset > size_ || len > size_ - offset) return nullptr;
  return base_ + offset;
}

std::uint64_t Segment::offset_of(const void* p) const {
  auto* b = static_cast<const std::byte*>(p);
  if (b < base_ || b >= base_ + size_) throw Error(ErrorCode::invalid_argument, "pointer is not inside " + describe());
  return static_cast<std::uint64_t>(b - base_);
}

// ---- directory ----------------------------------------------------------------

void Segment::lock_directory() {
  if (read_only_)
    throw Error(ErrorCode::permission_denied, describe() + " is mapped read-only; open it writable to change objects");
  Mutex& m = header()->directory_lock;
  switch (m.lock()) {
    case LockResult::acquired: return;
    case LockResult::owner_died:
      repair_directory();
      m.mark_consistent();
      return;
    case LockResult::not_recoverable:
      throw Error(ErrorCode::not_recoverable,
                  "directory lock of " + describe() + " is not recoverable; re-create the segment");
    default: throw Error(ErrorCode::system, "directory lock of " + describe() + " failed (relocked by its owner?)");
  }
}

void Segment::unlock_directory() noexcept { header()->directory_lock.unlock(); }

void Segment::repair_directory() noexcept {
  Header* h = header();
  DirectoryEntry* e = h->entries(base_);
  std::uint32_t rolled_back = 0;
  for (std::uint32_t i = 0; i < h->directory_capacity; ++i) {
    if (e[i].state.load(std::memory_order_relaxed) == kReserved) {
      std::memset(static_cast<void*>(&e[i]), 0, sizeof e[i]);
      ++rolled_back;
    }
  }
  std::uint32_t v = h->directory_version.load(std::memory_order_relaxed);
  if (v & 1) h->directory_version.store(v + 1, std::memory_order_release);
  log::warn("{}: a process died while changing the directory; rolled back {} unfinished object(s)", describe(),
            rolled_back);
}

std::vector<ObjectInfo> Segment::snapshot() const {
  const Header* h = header();
  const DirectoryEntry* e = h->entries(base_);
  std::vector<ObjectInfo> out;
  const std::uint64_t give_up =
      detail::monotonic_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(kReadRetryTime).count();
  for (unsigned attempt = 0;; ++attempt) {
    out.clear();
    std::uint32_t v1 = h->directory_version.load(std::memory_order_acquire);  // A
    if ((v1 & 1) == 0) {
      for (std::uint32_t i = 0; i < h->directory_capacity; ++i) {
        if (e[i].state.load(std::memory_order_acquire) != kReady) continue;
        ObjectInfo info;
        std::uint32_t len = std::min<std::uint32_t>(e[i].name_length, kMaxObjectNameLength);
        info.name.assign(e[i].name, len);
        info.type = static_cast<ObjectType>(e[i].type);
        info.offset = e[i].offset;
        info.size = e[i].size;
        info.generation = e[i].generation;
        info.creator_pid = e[i].creator_pid;
        info.created_realtime_ns = e[i].created_realtime_ns;
        out.push_back(std::move(info));
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      if (h->directory_version.load(std::memory_order_relaxed) == v1) break;  // B: no writer ran between A and B
    }
    if (detail::monotonic_ns() > give_up)
      throw Error(ErrorCode::corrupted, "directory of " + describe() +
                                            " stays mid-change (its writer may have died); open it writable to "
                                            "repair it, or remove and re-create the segment");
    if (attempt > 16) std::this_thread::yield();
  }
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

std::vector<ObjectInfo> Segment::objects() const { return snapshot(); }

Object Segment::make_object(const ObjectInfo& info) const {
  void* data = at(info.offset, info.size);
  std::uint64_t heap = header()->heap_offset;
  if (!data || info.offset < heap || info.offset % kAlign != 0)
    throw Error(ErrorCode::corrupted, "object '" + info.name + "' in " + describe() +
                                          " points outside the segment's object area; the segment is corrupted");
  return Object{data, info};
}

std::optional<Object> Segment::find_object(std::string_view name) const {
  validate_name(name, "object", kMaxObjectNameLength, true);
  for (const ObjectInfo& info : snapshot())
    if (info.name == name) return make_object(info);
  return std::nullopt;
}

void Segment::check_tag(ObjectType own, ObjectType tag, std::string_view name) const {
  if (own == ObjectType::raw || own == tag) return;
  throw Error(ErrorCode::type_mismatch, "object '" + std::string(name) + "' in " + describe() + ": the C++ type is a " +
                                            to_string(own) + " but the tag given is " + to_string(tag) +
                                            "; pass ObjectType::" + to_string(own));
}

Object Segment::open_object(std::string_view name, ObjectType type) const {
  std::optional<Object> obj = find_object(name);
  if (!obj)
    throw Error(ErrorCode::not_found, "object '" + std::string(name) + "' not found in " + describe() +
                                          "; check the name (Segment::objects() lists them)");
  if (obj->info.type != type)
    throw Error(ErrorCode::type_mismatch, "object '" + std::string(name) + "' in " + describe() + " is a " +
                                              to_string(obj->info.type) + ", not a " + to_string(type) +
                                              "; open it as a " + to_string(obj->info.type) + " or use another name");
  return *obj;
}

Object Segment::create_locked(std::string_view name, ObjectType type, std::size_t size, const InitFn& init) {
  Header* h = header();
  DirectoryEntry* e = h->entries(base_);
  const std::string what = "object '" + std::string(name) + "' in " + describe();

  // Step 3: a free entry and a gap (first fit between live entries).
  DirectoryEntry* slot = nullptr;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> used;  // (offset, end)
  for (std::uint32_t i = 0; i < h->directory_capacity; ++i) {
    std::uint32_t s = e[i].state.load(std::memory_order_relaxed);
    if (s == kFree) {
      if (!slot) slot = &e[i];
    } else {
      used.emplace_back(e[i].offset, e[i].offset + align_up(e[i].size, kAlign));
    }
  }
  if (!slot)
    throw Error(ErrorCode::no_space, "cannot create " + what + ": the directory is full (" +
                                         std::to_string(h->directory_capacity) +
                                         " objects); create the segment with a larger directory_capacity");
  std::sort(used.begin(), used.end());
  const std::uint64_t need = align_up(size, kAlign);
  std::uint64_t cursor = h->heap_offset, largest = 0, found = 0;
  bool fits = false;
  for (auto [off, end] : used) {
    if (off > cursor) {
      largest = std::max(largest, off - cursor);
      if (!fits && off - cursor >= need) {
        found = cursor;
        fits = true;
      }
    }
    cursor = std::max(cursor, end);
  }
  if (h->total_size > cursor) {
    largest = std::max(largest, h->total_size - cursor);
    if (!fits && h->total_size - cursor >= need) {
      found = cursor;
      fits = true;
    }
  }
  if (!fits)
    throw Error(ErrorCode::no_space, "cannot create " + what + ": it needs " + std::to_string(size) +
                                         " bytes, the largest free gap is " + std::to_string(largest) +
                                         " bytes; create the segment larger (SegmentOptions::size)");

  slot->type = static_cast<std::uint32_t>(type);
  slot->offset = found;
  slot->size = size;
  slot->generation = h->next_object_generation++;
  slot->created_realtime_ns = detail::realtime_ns();
  slot->creator_pid = detail::self_pid();
  slot->name_length = static_cast<std::uint32_t>(name.size());
  std::memset(slot->name, 0, sizeof slot->name);
  std::memcpy(slot->name, name.data(), name.size());
  slot->state.store(kReserved, std::memory_order_release);

  // Step 4: zeroed storage, the caller's init.
  void* data = base_ + found;
  std::memset(data, 0, size);
  try {
    if (init) init(data, size);
  } catch (...) {
    std::memset(static_cast<void*>(slot), 0, sizeof *slot);
    throw;
  }

  // Step 5: publish.
  std::uint32_t v = h->directory_version.load(std::memory_order_relaxed);
  h->directory_version.store(v + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  slot->state.store(kReady, std::memory_order_release);
  h->directory_version.store(v + 2, std::memory_order_release);

  ObjectInfo info{std::string(name), type, found, size, slot->generation, slot->creator_pid, slot->created_realtime_ns};
  return Object{data, std::move(info)};
}

Object Segment::create_object(std::string_view name, ObjectType type, std::size_t size, const InitFn& init) {
  validate_name(name, "object", kMaxObjectNameLength, true);
  if (size == 0) throw Error(ErrorCode::invalid_argument, "object '" + std::string(name) + "': size must be > 0");
  DirectoryLock locked(this);
  for (const ObjectInfo& info : snapshot())
    if (info.name == name)
      throw Error(ErrorCode::already_exists, "cannot create object '" + std::string(name) + "' in " + describe() +
                                                 ": it already exists (a " + to_string(info.type) +
                                                 "); use find_or_create_object or remove it first");
  return create_locked(name, type, size, init);
}

Object Segment::find_or_create_object(std::string_view name, ObjectType type, std::size_t size, const InitFn& init) {
  validate_name(name, "object", kMaxObjectNameLength, true);
  if (size == 0) throw Error(ErrorCode::invalid_argument, "object '" + std::string(name) + "': size must be > 0");
  DirectoryLock locked(this);
  for (const ObjectInfo& info : snapshot()) {
    if (info.name != name) continue;
    if (info.type != type)
      throw Error(ErrorCode::type_mismatch, "object '" + std::string(name) + "' in " + describe() + " is a " +
                                                to_string(info.type) + ", not a " + to_string(type) +
                                                "; open it as a " + to_string(info.type) + " or use another name");
    if (info.size != size)
      throw Error(ErrorCode::already_exists, "object '" + std::string(name) + "' in " + describe() + " exists as a " +
                                                 to_string(info.type) + " of " + std::to_string(info.size) +
                                                 " bytes, not a " + to_string(type) + " of " + std::to_string(size) +
                                                 " bytes");
    return make_object(info);
  }
  return create_locked(name, type, size, init);
}

bool Segment::remove_object(std::string_view name) {
  validate_name(name, "object", kMaxObjectNameLength, true);
  DirectoryLock locked(this);
  Header* h = header();
  DirectoryEntry* e = h->entries(base_);
  for (std::uint32_t i = 0; i < h->directory_capacity; ++i) {
    if (e[i].state.load(std::memory_order_relaxed) != kReady) continue;
    if (std::string_view(e[i].name, std::min<std::uint32_t>(e[i].name_length, kMaxObjectNameLength)) != name) continue;
    std::uint32_t v = h->directory_version.load(std::memory_order_relaxed);
    h->directory_version.store(v + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    std::memset(static_cast<void*>(&e[i]), 0, sizeof e[i]);
    h->directory_version.store(v + 2, std::memory_order_release);
    return true;
  }
  return false;
}

SegmentInfo Segment::info() const {
  const Header* h = header();
  SegmentInfo out;
  out.name = name_;
  out.domain = domain_;
  out.path = std::string(kShmDir) + "/ipc." + domain_ + "." + name_;
  out.size = h->total_size;
  out.layout_version = h->layout_version;
  out.flags = h->flags;
  out.generation = h->generation;
  out.creator_pid = h->creator_pid;
  out.created_realtime_ns = h->created_realtime_ns;
  out.directory_capacity = h->directory_capacity;
  out.heap_offset = h->heap_offset;
  for (const ObjectInfo& o : snapshot()) {
    out.heap_used += align_up(o.size, kAlign);
    ++out.object_count;
  }
  return out;
}

namespace detail {

std::string object_label(const void* address, std::string_view kind) {
  const auto* p = static_cast<const std::byte*>(address);
  std::string out(kind);
  MappedTable& t = mapped();
  std::unique_lock<std::mutex> g(t.lock, std::try_to_lock);  // never block a logging thread
  if (g.owns_lock())
    for (const Mapped& m : t.entries) {
      if (p < m.base || p >= m.base + m.size) continue;
      const std::uint64_t at = static_cast<std::uint64_t>(p - m.base);
      const auto* h = reinterpret_cast<const Segment::Header*>(m.base);
      const DirectoryEntry* e = h->entries(const_cast<std::byte*>(m.base));
      const std::uint32_t entries = std::min<std::uint32_t>(h->directory_capacity, kMaxDirectoryCapacity);
      for (std::uint32_t i = 0; i < entries; ++i) {
        if (e[i].state.load(std::memory_order_acquire) != kReady) continue;
        if (at < e[i].offset || at - e[i].offset >= e[i].size) continue;
        // A racy read of a live entry, for a log line: the name is bounded, never trusted further.
        const std::string name(e[i].name, std::min<std::uint32_t>(e[i].name_length, kMaxObjectNameLength));
        const auto type = static_cast<ObjectType>(e[i].type);
        if (at == e[i].offset && kind == to_string(type))
          out += " '" + name + "'";
        else
          out += std::string(" in ") + to_string(type) + " '" + name + "' (+" + std::to_string(at - e[i].offset) + ")";
        return out + " in segment '" + m.name + "'";
      }
      return out + " at +" + std::to_string(at) + " in segment '" + m.name + "'";
    }
  char buf[32];
  std::snprintf(buf, sizeof buf, " at %p", address);
  return out + buf;
}

}  // namespace detail
}  // namespace ipc
