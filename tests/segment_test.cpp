// Segments: create/open across real processes, the object directory,
// corruption detection, unlink semantics, permissions, crash repair.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#include "ipc/condvar.hpp"
#include "ipc/event.hpp"
#include "ipc/mutex.hpp"
#include "ipc/segment.hpp"
#include "support.hpp"

using namespace ipc;
using ipc::test::opts;
using ipc::test::TestDomain;

namespace {

std::string path_of(const TestDomain& d, const std::string& name) { return "/dev/shm/ipc." + d.name() + "." + name; }

// Writes raw bytes into the segment file, as a corrupting process would.
void poke(const std::string& path, off_t offset, const void* bytes, std::size_t len) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes, len, offset) == static_cast<ssize_t>(len));
  ::close(fd);
}

ErrorCode open_error(const TestDomain& d, const std::string& name, std::string* message = nullptr) {
  try {
    Segment::open(name, {.domain = d.name()});
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  FAIL("open succeeded but should have failed");
  return ErrorCode::system;
}

}  // namespace

TEST_CASE("create in one process, open and read the directory in a forked child") {
  TestDomain d;
  Segment seg = Segment::create("demo", opts(d));
  Object a = seg.create_object("config", ObjectType::raw, 100,
                               [](void* p, std::size_t) { std::strcpy(static_cast<char*>(p), "hello"); });
  seg.create_object("jobs/queue", ObjectType::channel, 4096);
  CHECK(a.info.offset % 64 == 0);

  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("demo", {.domain = d.name()});
    auto objs = s.objects();
    if (objs.size() != 2) return 1;
    if (objs[0].name != "config" || objs[0].type != ObjectType::raw || objs[0].size != 100) return 2;
    if (objs[1].name != "jobs/queue" || objs[1].type != ObjectType::channel) return 3;
    Object cfg = s.open_object("config", ObjectType::raw);
    if (std::strcmp(static_cast<const char*>(cfg.data), "hello") != 0) return 4;
    if (s.generation() != 0 && s.info().creator_pid == static_cast<std::uint32_t>(::getpid())) return 5;
    // Write back through the child's own mapping (another address).
    std::strcpy(static_cast<char*>(cfg.data), "from child");
    return 0;
  });
  CHECK(test::child_ok(test::wait_child(child)));
  CHECK(std::strcmp(static_cast<const char*>(a.data), "from child") == 0);

  SegmentInfo info = seg.info();
  CHECK(info.object_count == 2);
  CHECK(info.creator_pid == static_cast<std::uint32_t>(::getpid()));
  CHECK(info.layout_version == kSegmentLayoutVersion);
  CHECK(info.size == 1u << 20);
  CHECK(Segment::list(d.name()) == std::vector<std::string>{"demo"});
}

TEST_CASE("concurrent find_or_create of one name from 4 processes yields one object") {
  TestDomain d;
  Segment seg = Segment::create("race", opts(d));
  constexpr int kProcs = 4, kRounds = 25;
  struct Board {
    std::atomic<int> go;
    std::atomic<int> inits[kRounds];
    std::atomic<std::uint64_t> offsets[kRounds][kProcs];
  };
  auto* board = static_cast<Board*>(seg.create_object("board", ObjectType::raw, sizeof(Board)).data);

  pid_t kids[kProcs];
  for (int k = 0; k < kProcs; ++k) {
    kids[k] = test::fork_child([&, k] {
      Segment s = Segment::open("race", {.domain = d.name()});
      auto* b = static_cast<Board*>(s.open_object("board", ObjectType::raw).data);
      while (b->go.load() == 0) std::this_thread::yield();
      for (int r = 0; r < kRounds; ++r) {
        Object o = s.find_or_create_object("obj" + std::to_string(r), ObjectType::raw, 256,
                                           [&](void*, std::size_t) { b->inits[r].fetch_add(1); });
        b->offsets[r][k].store(o.info.offset);
      }
      return 0;
    });
  }
  board->go.store(1);
  for (pid_t k : kids) CHECK(test::child_ok(test::wait_child(k)));
  for (int r = 0; r < kRounds; ++r) {
    CHECK(board->inits[r].load() == 1);
    for (int k = 1; k < kProcs; ++k) CHECK(board->offsets[r][k].load() == board->offsets[r][0].load());
  }
  CHECK(seg.objects().size() == kRounds + 1);
}

TEST_CASE("a creator killed inside object init leaves a directory the next process repairs") {
  TestDomain d;
  Segment seg = Segment::create("crash", opts(d));
  auto* flag = static_cast<std::atomic<int>*>(seg.create_object("flag", ObjectType::raw, 64).data);
  pid_t child = test::fork_child([&] {
    Segment s = Segment::open("crash", {.domain = d.name()});
    s.create_object("half", ObjectType::raw, 1000, [&](void*, std::size_t) {
      flag->store(1);
      for (;;) ::pause();  // killed here, holding the directory lock
    });
    return 1;
  });
  while (flag->load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  test::kill_child(child);

  // The next directory user gets owner_died, rolls back "half", goes on.
  Object other = seg.create_object("after", ObjectType::raw, 64);
  CHECK(other.data != nullptr);
  CHECK_FALSE(seg.find_object("half").has_value());
  Object half = seg.find_or_create_object("half", ObjectType::raw, 1000);
  CHECK(half.info.size == 1000);
  CHECK(seg.objects().size() == 3);
}

TEST_CASE("object lifecycle: remove frees space for reuse and errors name the object") {
  TestDomain d;
  SegmentOptions o = opts(d, 128u << 10);
  o.directory_capacity = 4;
  Segment seg = Segment::create("life", o);
  std::size_t heap = seg.size() - seg.info().heap_offset;

  Object big = seg.create_object("big", ObjectType::raw, heap);
  CHECK(big.info.size == heap);
  try {
    seg.create_object("more", ObjectType::raw, 64);
    FAIL("expected no_space");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::no_space);
    CHECK(std::string(e.what()).find("'more'") != std::string::npos);
  }
  CHECK(seg.remove_object("big"));
  CHECK_FALSE(seg.remove_object("big"));
  CHECK_FALSE(seg.find_object("big").has_value());
  for (int i = 0; i < 4; ++i) seg.create_object("o" + std::to_string(i), ObjectType::raw, 64);
  try {
    seg.create_object("o4", ObjectType::raw, 64);
    FAIL("expected full directory");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::no_space);
    CHECK(std::string(e.what()).find("directory is full") != std::string::npos);
  }
  // A duplicate name and a type mismatch.
  CHECK_THROWS_AS(seg.create_object("o1", ObjectType::raw, 64), Error);
  try {
    seg.open_object("o1", ObjectType::mutex);
    FAIL("expected type mismatch");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::type_mismatch);
    CHECK(std::string(e.what()).find("is a raw, not a mutex") != std::string::npos);
  }
  try {
    seg.find_or_create_object("o1", ObjectType::mutex, 64);
    FAIL("expected type mismatch");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::type_mismatch);
    CHECK(std::string(e.what()).find("is a raw, not a mutex") != std::string::npos);
  }
  try {
    seg.find_or_create_object("o1", ObjectType::raw, 128);
    FAIL("expected size mismatch");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::already_exists);
  }
  CHECK_THROWS_AS(seg.open_object("nope", ObjectType::raw), Error);
  CHECK_THROWS_AS(seg.create_object("zero", ObjectType::raw, 0), Error);
  CHECK_THROWS_AS(seg.create_object("bad name", ObjectType::raw, 8), Error);
  CHECK_THROWS_AS(seg.create_object(std::string(kMaxObjectNameLength + 1, 'x'), ObjectType::raw, 8), Error);
  // Gaps are reused: removing o1 and o2 lets a 128-byte object fit.
  CHECK(seg.remove_object("o1"));
  CHECK(seg.remove_object("o2"));
  Object fit = seg.create_object("fit", ObjectType::raw, 128);
  CHECK(fit.info.offset < seg.find_object("o3")->info.offset);
}

TEST_CASE("names with a NUL or invalid UTF-8 are shown escaped in the error, whole") {
  TestDomain d;
  const std::string with_nul("jo\0bs", 5);
  const std::string bad_utf8 = "caf\xc3(x";  // a lead byte without its continuation
  for (const std::string& name : {with_nul, bad_utf8}) {
    try {
      Segment::create(name, opts(d));
      FAIL("created a segment with a bad name");
    } catch (const Error& e) {
      const std::string what = e.what();
      MESSAGE(what);
      CHECK(e.code() == ErrorCode::invalid_argument);
      CHECK(std::strlen(e.what()) == what.size());  // no NUL inside what()
      CHECK(what.find(name == with_nul ? "jo\\x00bs" : "caf\\xc3(x") != std::string::npos);
    }
  }
  CHECK(printable("plain ascii, caf\xc3\xa9 and tab\t") == "plain ascii, caf\xc3\xa9 and tab\\x09");
}

TEST_CASE("a library type with another type's tag is refused by the typed helpers, naming both") {
  TestDomain d;
  Segment seg = Segment::create("tags", opts(d));
  for (int k = 0; k < 2; ++k) {
    try {
      if (k == 0)
        seg.find_or_create<CondVar>("cv", ObjectType::mutex);
      else
        (void)seg.open<Mutex>("cv", ObjectType::condvar);
      FAIL("a CondVar tagged mutex (or a Mutex tagged condvar) was accepted");
    } catch (const Error& e) {
      const std::string what = e.what();
      MESSAGE(what);
      CHECK(e.code() == ErrorCode::type_mismatch);
      CHECK(what.find("condvar") != std::string::npos);
      CHECK(what.find("mutex") != std::string::npos);
    }
  }
  CHECK_FALSE(seg.find_object("cv").has_value());  // refused before anything was made
  // The right tag works, and a user struct chooses its own tag.
  CHECK_NOTHROW(seg.find_or_create<CondVar>("cv", ObjectType::condvar));
  struct WithEvent {
    Event e;
    int extra;
  };
  CHECK_NOTHROW(seg.find_or_create<WithEvent>("ev", ObjectType::event));
}

TEST_CASE("bad names and options are refused with clear errors") {
  TestDomain d;
  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::system;
  };
  CHECK(code_of([&] { Segment::create("", opts(d)); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { Segment::create("a/b", opts(d)); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { Segment::create("a.b", opts(d)); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { Segment::create(std::string(kMaxNameLength + 1, 'n'), opts(d)); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { Segment::create("tiny", opts(d, 100)); }) == ErrorCode::invalid_argument);
  SegmentOptions bad_dir = opts(d);
  bad_dir.directory_capacity = 0;
  CHECK(code_of([&] { Segment::create("dir0", bad_dir); }) == ErrorCode::invalid_argument);
  SegmentOptions bad_domain = opts(d);
  bad_domain.domain = "bad domain";
  CHECK(code_of([&] { Segment::create("x", bad_domain); }) == ErrorCode::invalid_argument);
  std::string msg;
  CHECK(open_error(d, "missing", &msg) == ErrorCode::not_found);
  CHECK(msg.find("'missing'") != std::string::npos);
  CHECK(d.leftover_files() == 0);
}

TEST_CASE("not enough space in /dev/shm is a clear error naming both sizes") {
  TestDomain d;
  try {
    Segment::create("huge", opts(d, std::size_t{1} << 40));
    FAIL("a 1 TiB segment should not fit");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::no_space);
    std::string m = e.what();
    CHECK(m.find("'huge'") != std::string::npos);
    CHECK(m.find("needs 1048576 MiB") != std::string::npos);
    CHECK(m.find("--shm-size") != std::string::npos);
  }
  CHECK(d.leftover_files() == 0);
}

TEST_CASE("corrupted segments are refused with the right error, never a crash") {
  TestDomain d;
  auto fresh = [&](const std::string& name) {
    Segment s = Segment::create(name, opts(d));
    s.create_object("x", ObjectType::raw, 64);
    return path_of(d, name);
  };

  SUBCASE("bad magic") {
    std::string p = fresh("magic");
    std::uint64_t junk = 0x1122334455667788ull;
    poke(p, 0, &junk, sizeof junk);
    CHECK(open_error(d, "magic") == ErrorCode::bad_magic);
  }
  SUBCASE("other layout version") {
    std::string p = fresh("version");
    std::uint32_t v = kSegmentLayoutVersion + 7;
    poke(p, 8, &v, sizeof v);
    std::string msg;
    CHECK(open_error(d, "version", &msg) == ErrorCode::version_mismatch);
    CHECK(msg.find("version 8") != std::string::npos);
  }
  SUBCASE("bad checksum") {
    std::string p = fresh("checksum");
    std::uint64_t t = 42;  // created_realtime_ns, covered by the checksum
    poke(p, 24, &t, sizeof t);
    CHECK(open_error(d, "checksum") == ErrorCode::corrupted);
  }
  SUBCASE("truncated file") {
    std::string p = fresh("short");
    REQUIRE(::truncate(p.c_str(), 8192) == 0);
    std::string msg;
    CHECK(open_error(d, "short", &msg) == ErrorCode::truncated);
    CHECK(msg.find("'short'") != std::string::npos);
    REQUIRE(::truncate(p.c_str(), 10) == 0);
    CHECK(open_error(d, "short") == ErrorCode::truncated);
  }
  SUBCASE("grown file") {
    std::string p = fresh("long");
    REQUIRE(::truncate(p.c_str(), 2u << 20) == 0);
    CHECK(open_error(d, "long") == ErrorCode::corrupted);
  }
  SUBCASE("empty and foreign files") {
    std::string p = path_of(d, "empty");
    int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
    CHECK(open_error(d, "empty") == ErrorCode::truncated);
    std::string q = path_of(d, "foreign");
    fd = ::open(q.c_str(), O_CREAT | O_RDWR, 0600);
    std::string text(8192, 'z');
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    ::close(fd);
    CHECK(open_error(d, "foreign") == ErrorCode::bad_magic);
  }
  SUBCASE("directory entry pointing outside the segment") {
    std::string p = fresh("entry");
    std::uint64_t far = std::uint64_t{1} << 40;
    poke(p, 4096 + 8, &far, sizeof far);  // entry 0 .offset
    Segment s = Segment::open("entry", {.domain = d.name()});
    try {
      s.open_object("x", ObjectType::raw);
      FAIL("expected corrupted");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::corrupted);
    }
  }
}

TEST_CASE("unlink: existing mappings stay valid, the name is gone, re-create is a new generation") {
  TestDomain d;
  Segment a = Segment::create("u", opts(d));
  auto* word = static_cast<int*>(a.create_object("w", ObjectType::raw, 64).data);
  *word = 7;
  Segment b = Segment::open("u", {.domain = d.name()});
  std::uint64_t gen = a.generation();
  CHECK(Segment::unlink("u", d.name()));
  CHECK_FALSE(Segment::unlink("u", d.name()));
  CHECK(open_error(d, "u") == ErrorCode::not_found);
  CHECK(*static_cast<int*>(b.open_object("w", ObjectType::raw).data) == 7);
  Segment c = Segment::create("u", opts(d));
  CHECK(c.generation() != gen);
  CHECK(c.objects().empty());
  CHECK_THROWS_AS(Segment::create("u", opts(d)), Error);
}

TEST_CASE("a 0600 segment is refused to another uid") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to switch uid");
    return;
  }
  TestDomain d;
  SegmentOptions o = opts(d);
  o.mode = 0600;
  Segment seg = Segment::create("private", o);
  pid_t child = test::fork_child([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    try {
      Segment::open("private", {.domain = d.name()});
    } catch (const Error& e) {
      if (e.code() != ErrorCode::permission_denied) return 2;
      if (std::string(e.what()).find("'private'") == std::string::npos) return 3;
      return 0;
    }
    return 1;
  });
  CHECK(test::wait_child(child).code == 0);
  // Mode 0644 lets the other uid map it read-only, but not change objects.
  SegmentOptions r = opts(d);
  r.mode = 0644;
  Segment shared = Segment::create("readable", r);
  shared.create_object("x", ObjectType::raw, 64);
  child = test::fork_child([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    Segment s = Segment::open("readable", {.read_only = true, .domain = d.name()});
    if (s.objects().size() != 1) return 1;
    try {
      s.create_object("y", ObjectType::raw, 64);
    } catch (const Error& e) {
      return e.code() == ErrorCode::permission_denied ? 0 : 2;
    }
    return 3;
  });
  CHECK(test::wait_child(child).code == 0);
}

TEST_CASE("mode and group are applied on creation") {
  TestDomain d;
  SegmentOptions o = opts(d);
  o.mode = 0640;
  o.group = ::getegid();
  Segment seg = Segment::create("modes", o);
  struct stat st {};
  REQUIRE(::stat(path_of(d, "modes").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_gid == ::getegid());
}
