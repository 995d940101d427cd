#include "dataplane/common/buffer.h"

#include <algorithm>
#include <new>
#include <vector>

namespace eldric {
namespace {

// Per-thread free list of default-size slabs. Bounded so that a burst does
// not pin memory forever.
struct SlabCache {
  std::vector<Slab*> free;
  ~SlabCache() {
    for (Slab* s : free) ::operator delete(s);
  }
};
thread_local SlabCache t_cache;
constexpr size_t kMaxCachedSlabs = 256;

}  // namespace

Slab* Slab::create(size_t min_capacity) {
  if (min_capacity <= kDefaultSize) {
    if (!t_cache.free.empty()) {
      Slab* s = t_cache.free.back();
      t_cache.free.pop_back();
      s->refs_ = 1;
      return s;
    }
    min_capacity = kDefaultSize;
  }
  void* mem = ::operator new(sizeof(Slab) + min_capacity);
  return new (mem) Slab(static_cast<uint32_t>(min_capacity));
}

Slab* Slab::createExact(size_t capacity) {
  if (capacity == kDefaultSize) return create(capacity);
  void* mem = ::operator new(sizeof(Slab) + capacity);
  return new (mem) Slab(static_cast<uint32_t>(capacity));
}

void Slab::release() {
  if (capacity_ == kDefaultSize && t_cache.free.size() < kMaxCachedSlabs) {
    t_cache.free.push_back(this);
    return;
  }
  this->~Slab();
  ::operator delete(this);
}

void Buffer::add(std::string_view bytes) {
  while (!bytes.empty()) {
    if (!slices_.empty()) {
      Slice& last = slices_.back();
      // Only append in place when nobody else can see the slab's tail.
      if (last.slab->exclusive()) {
        size_t end = last.offset + last.length;
        size_t room = last.slab->capacity() - end;
        if (room > 0) {
          size_t n = std::min(room, bytes.size());
          memcpy(last.slab->data() + end, bytes.data(), n);
          last.length += n;
          length_ += n;
          bytes.remove_prefix(n);
          continue;
        }
      }
    }
    Slab* s = Slab::create(bytes.size());
    slices_.push_back(Slice{SlabRef(s), 0, 0});
  }
}

void Buffer::addSlice(SlabRef slab, uint32_t offset, uint32_t length) {
  if (length == 0) return;
  slices_.push_back(Slice{std::move(slab), offset, length});
  length_ += length;
}

void Buffer::move(Buffer& other) {
  if (slices_.empty()) {
    std::swap(slices_, other.slices_);
    std::swap(length_, other.length_);
    return;
  }
  for (auto& s : other.slices_) slices_.push_back(std::move(s));
  length_ += other.length_;
  other.clear();
}

void Buffer::move(Buffer& other, size_t n) {
  if (n >= other.length_) {
    move(other);
    return;
  }
  other.copyRefsTo(*this, n);
  other.drain(n);
}

void Buffer::copyRefsTo(Buffer& out, size_t n) const {
  for (const Slice& s : slices_) {
    if (n == 0) break;
    uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, s.length));
    out.addSlice(s.slab, s.offset, take);
    n -= take;
  }
}

void Buffer::drain(size_t n) {
  n = std::min(n, length_);
  length_ -= n;
  size_t drop = 0;
  while (n > 0) {
    Slice& s = slices_[drop];
    if (n >= s.length) {
      n -= s.length;
      ++drop;
    } else {
      s.offset += n;
      s.length -= n;
      n = 0;
    }
  }
  if (drop > 0) slices_.erase(slices_.begin(), slices_.begin() + drop);
}

void Buffer::copyOut(size_t n, char* out) const {
  for (const Slice& s : slices_) {
    if (n == 0) break;
    size_t take = std::min<size_t>(n, s.length);
    memcpy(out, s.data(), take);
    out += take;
    n -= take;
  }
}

std::string Buffer::toString() const {
  std::string out(length_, '\0');
  copyOut(length_, out.data());
  return out;
}

std::string_view Buffer::linearize(size_t n) {
  n = std::min(n, length_);
  if (n == 0) return {};
  if (slices_[0].length >= n) return {slices_[0].data(), n};
  Slab* s = Slab::create(n);
  copyOut(n, s->data());
  Buffer rest;
  drain(n);
  rest.move(*this);
  clear();
  addSlice(SlabRef(s), 0, static_cast<uint32_t>(n));
  move(rest);
  return {slices_[0].data(), n};
}

}  // namespace eldric
