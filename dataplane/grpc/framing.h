#pragma once

// gRPC's length-prefixed messages: a 1-byte flags field (bit 0: compressed),
// a 4-byte big-endian length, then the message. HTTP/2 DATA frames carry
// them without regard to message boundaries: a message may span frames and
// a frame may hold several.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace eldric::grpc {

constexpr size_t kFrameHeaderSize = 5;

// The 5-byte prefix for a message of `length` bytes (never compressed: the
// client sends no grpc-encoding and no grpc-accept-encoding).
std::string framePrefix(uint32_t length);

class Deframer {
 public:
  enum class Result { Ok, TooLarge, Compressed };

  explicit Deframer(size_t max_message_bytes) : max_(max_message_bytes) {}

  // Feeds bytes; calls `on_message(std::string&&)` for each complete
  // message, which returns false to stop early (the caller cancelled).
  // Stops at the first error; `declaredLength()` then tells the size.
  template <typename OnMessage>
  Result feed(const uint8_t* data, size_t len, OnMessage&& on_message);

  // Bytes of an unfinished message are buffered (a stream that ends now
  // was truncated).
  bool midMessage() const { return header_have_ > 0 || in_body_; }
  uint32_t declaredLength() const { return length_; }

 private:
  size_t max_;
  uint8_t header_[kFrameHeaderSize] = {0};
  size_t header_have_ = 0;
  bool in_body_ = false;
  uint32_t length_ = 0;
  std::string body_;
};

template <typename OnMessage>
Deframer::Result Deframer::feed(const uint8_t* data, size_t len, OnMessage&& on_message) {
  while (len > 0) {
    if (!in_body_) {
      size_t take = std::min(kFrameHeaderSize - header_have_, len);
      for (size_t i = 0; i < take; ++i) header_[header_have_ + i] = data[i];
      header_have_ += take;
      data += take;
      len -= take;
      if (header_have_ < kFrameHeaderSize) break;
      header_have_ = 0;
      length_ = (uint32_t{header_[1]} << 24) | (uint32_t{header_[2]} << 16) |
                (uint32_t{header_[3]} << 8) | uint32_t{header_[4]};
      // Compression is never negotiated, so a compressed message cannot be
      // decoded.
      if (header_[0] & 1) return Result::Compressed;
      // Refused before buffering any of it.
      if (length_ > max_) return Result::TooLarge;
      in_body_ = true;
      body_.clear();
      // Grows with what arrives; a large declared length alone does not
      // allocate it all up front.
      body_.reserve(std::min<size_t>(length_, 1 << 20));
    }
    size_t take = std::min<size_t>(length_ - body_.size(), len);
    body_.append(reinterpret_cast<const char*>(data), take);
    data += take;
    len -= take;
    if (body_.size() < length_) break;
    in_body_ = false;
    std::string message;
    message.swap(body_);
    if (!on_message(std::move(message))) return Result::Ok;
  }
  return Result::Ok;
}

}  // namespace eldric::grpc
