// ipc/object_pool.hpp — typed objects in pool buffers, with factory / reset /
// validate hooks (seed 003's ObjectPool), shared between processes.
//
// Types: `ObjectPool<T>`, `ObjectPool<T>::Hooks`, `ObjectPool<T>::Ref`.
//
// An ObjectPool<T> sits on a BufferPool (give it a pool of its own, with a
// class that fits T). Each buffer holds a small header and then a T:
//
//   [ObjectHeader {magic, type_size, state}] [padding to alignof(T)] [T]
//
// acquire(): allocate a buffer; if the header says "a T that was reset
// lives here" and validate(t) agrees, reuse it; else run factory(memory)
// (default: placement-new T{}), mark it constructed. release(): reset(t),
// mark it "reset", release the buffer. A process dying between those steps
// leaves a header that is not kReset, so the next acquirer re-runs the
// factory: a half-reset object is never handed out.
//
// T must be standard-layout and hold no pointers into process memory
// (another process reads it at another address); this is checked for
// standard layout only — pointers cannot be detected, keep offsets instead.
// ObjectPool is a per-thread handle, like BufferPool.
#pragma once

#include <cstdint>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

#include "ipc/error.hpp"
#include "ipc/pool.hpp"

namespace ipc {

template <typename T>
class ObjectPool {
  static_assert(std::is_standard_layout_v<T>, "ObjectPool<T>: T must be standard-layout to live in shared memory");

 public:
  struct Hooks {
    std::function<void(void* memory)> factory;  // construct a T at memory (default: new (memory) T{})
    std::function<void(T&)> reset;              // on release: make it reusable
    std::function<bool(const T&)> validate;     // on reuse: false → reconstruct with factory
  };

  // A held object; returns it to the pool when destroyed.
  class Ref {
   public:
    Ref() = default;
    Ref(Ref&&) noexcept = default;
    Ref& operator=(Ref&& other) noexcept {
      if (this != &other) {
        reset();
        pool_ = std::exchange(other.pool_, nullptr);
        buffer_ = std::move(other.buffer_);
      }
      return *this;
    }
    ~Ref() { reset(); }
    T* get() const noexcept { return buffer_ ? object_of(buffer_.data()) : nullptr; }
    T& operator*() const noexcept { return *get(); }
    T* operator->() const noexcept { return get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(buffer_); }
    const BufferHandle& handle() const noexcept { return buffer_.handle(); }
    void reset() noexcept {
      if (pool_ && buffer_) pool_->give_back(buffer_);
      pool_ = nullptr;
    }

   private:
    friend class ObjectPool;
    Ref(ObjectPool* pool, Buffer b) noexcept : pool_(pool), buffer_(std::move(b)) {}
    ObjectPool* pool_ = nullptr;
    Buffer buffer_;
  };

  // Bytes a buffer needs to hold one T: use it as the pool's class size.
  static constexpr std::size_t kBufferBytes =
      (sizeof(std::uint64_t) * 2 + alignof(T) - 1) / alignof(T) * alignof(T) + sizeof(T);

  ObjectPool(BufferPool& pool, Hooks hooks = {}) : pool_(pool), hooks_(std::move(hooks)) {
    if (pool.class_size(pool.class_count() - 1) < kBufferBytes)
      throw Error(ErrorCode::invalid_argument, "ObjectPool: pool '" + pool.name() + "' has no class of " +
                                                   std::to_string(kBufferBytes) + " bytes for the object");
  }

  // Hot path; never throws unless a hook throws. status says why on failure.
  Ref acquire(AllocStatus* status = nullptr) {
    Allocation a = pool_.allocate(kBufferBytes);
    if (status) *status = a.status;
    if (!a) return {};
    auto* h = header_of(a.buffer.data());
    T* obj = object_of(a.buffer.data());
    bool reuse = h->magic == kMagic && h->type_size == sizeof(T) && h->state == kReset &&
                 (!hooks_.validate || hooks_.validate(*obj));
    if (!reuse) {
      h->state = kConstructing;  // a death from here on forces a rebuild
      h->magic = kMagic;
      h->type_size = sizeof(T);
      if (hooks_.factory)
        hooks_.factory(obj);
      else
        new (obj) T{};
    }
    h->state = kInUse;
    return Ref(this, std::move(a.buffer));
  }

 private:
  static constexpr std::uint32_t kMagic = 0x314a424f;  // "OBJ1"
  static constexpr std::uint32_t kConstructing = 1, kInUse = 2, kReset = 3;
  struct ObjectHeader {
    std::uint32_t magic;
    std::uint32_t type_size;
    std::uint32_t state;
    std::uint32_t pad;
  };
  static ObjectHeader* header_of(std::byte* p) noexcept { return reinterpret_cast<ObjectHeader*>(p); }
  static T* object_of(std::byte* p) noexcept {
    constexpr std::size_t off = (sizeof(ObjectHeader) + alignof(T) - 1) / alignof(T) * alignof(T);
    return reinterpret_cast<T*>(p + off);
  }
  void give_back(Buffer& b) noexcept {
    auto* h = header_of(b.data());
    h->state = kConstructing;  // mid-reset: never reused as-is if we die here
    bool ok = true;
    if (hooks_.reset) {
      try {
        hooks_.reset(*object_of(b.data()));
      } catch (...) {
        ok = false;  // keeps kConstructing: rebuilt by the next acquirer
      }
    }
    if (ok) h->state = kReset;
    b.reset();
  }

  BufferPool& pool_;
  Hooks hooks_;
};

}  // namespace ipc
