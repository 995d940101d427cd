#pragma once

// A chain of reference-counted slabs. Bytes read from a socket land in a
// slab once; parsers hand out slices of it, and a proxied body is written
// to the other side by reference, not copied. Buffers never cross threads
// (each worker owns its connections), so reference counts are plain ints.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"

namespace eldric {

class Slab {
 public:
  // A slab of at least `min_capacity` bytes. Slabs of the default size are
  // recycled through a per-thread free list.
  static Slab* create(size_t min_capacity);
  // A slab of exactly `capacity` bytes, never from the free list: for a
  // few bytes held a long time (a ClientHello waiting its turn), where a
  // default slab would keep 16 KB.
  static Slab* createExact(size_t capacity);
  static constexpr size_t kDefaultSize = 16 * 1024;

  void ref() { ++refs_; }
  void unref() {
    if (--refs_ == 0) release();
  }
  bool exclusive() const { return refs_ == 1; }
  char* data() { return reinterpret_cast<char*>(this + 1); }
  size_t capacity() const { return capacity_; }

 private:
  Slab(size_t capacity) : capacity_(capacity) {}
  void release();
  uint32_t refs_ = 1;
  uint32_t capacity_;
};

class SlabRef {
 public:
  SlabRef() = default;
  explicit SlabRef(Slab* adopted) : slab_(adopted) {}
  SlabRef(const SlabRef& o) : slab_(o.slab_) {
    if (slab_) slab_->ref();
  }
  SlabRef(SlabRef&& o) noexcept : slab_(o.slab_) { o.slab_ = nullptr; }
  SlabRef& operator=(SlabRef o) noexcept {
    std::swap(slab_, o.slab_);
    return *this;
  }
  ~SlabRef() {
    if (slab_) slab_->unref();
  }
  Slab* get() const { return slab_; }
  Slab* operator->() const { return slab_; }
  explicit operator bool() const { return slab_ != nullptr; }

 private:
  Slab* slab_ = nullptr;
};

struct Slice {
  SlabRef slab;
  uint32_t offset = 0;
  uint32_t length = 0;
  const char* data() const { return slab->data() + offset; }
  std::string_view view() const { return {data(), length}; }
};

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&&) = default;
  Buffer& operator=(Buffer&&) = default;

  size_t length() const { return length_; }
  bool empty() const { return length_ == 0; }
  size_t sliceCount() const { return slices_.size(); }
  const Slice& slice(size_t i) const { return slices_[i]; }

  // Copies bytes in, filling the last slab when this buffer owns it alone.
  void add(std::string_view bytes);
  void add(const char* p, size_t n) { add(std::string_view(p, n)); }
  // Appends a slice by reference (no copy).
  void addSlice(SlabRef slab, uint32_t offset, uint32_t length);
  // Moves every slice of `other` to the end of this buffer.
  void move(Buffer& other);
  // Moves the first `n` bytes of `other` here.
  void move(Buffer& other, size_t n);
  // Shares (by reference) the first `n` bytes of this buffer into `out`.
  void copyRefsTo(Buffer& out, size_t n) const;
  void drain(size_t n);
  void clear() {
    slices_.clear();
    length_ = 0;
  }
  // Copies out the first `n` bytes (n <= length()).
  void copyOut(size_t n, char* out) const;
  std::string toString() const;
  // Makes the first min(n, length()) bytes contiguous and returns them.
  std::string_view linearize(size_t n);

 private:
  absl::InlinedVector<Slice, 4> slices_;
  size_t length_ = 0;
};

}  // namespace eldric
