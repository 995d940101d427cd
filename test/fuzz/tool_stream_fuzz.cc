// What the tools filter (filters/tools/tools_filter.h) does with a model's
// streamed answer, which is untrusted: the body cut into reads and split
// into SSE events (http::SseSplitter, a small max_event_bytes), each
// event's data given to the tool-call assembler and, as the filter does at
// the stream's end, rewritten for the client (rewriteChunk: the Edge's
// calls left out, the rest renumbered, the id and the usage of earlier
// rounds). Also functionName on two pieces of the input.
//
// Input: [cut seed][cut seed][map][flags][name cut][stream...]
//   the two cut seeds: where the stream is cut into reads (the first one
//     also caps a read's length), and which reads are two slices
//   map: bit i set = call i is the Edge's (index_map -1), the others are
//     renumbered 0, 1, ... in order, as ToolsFilter::onStreamEnd does
//   flags & 1: index_map of (flags >> 4) entries rather than one per call
//     the assembler saw (entries whose index lies outside the map)
//   name cut: where the stream is cut in two for functionName
//
// Checked: an event handed out ends with its (first) blank line and is at
// most max_event_bytes plus that blank line; the events and what is
// pending are the bytes fed, in order; a rewritten chunk serializes to one
// line of JSON that json::parse accepts; tool_calls keep exactly the
// entries remapToolCalls keeps (and, untouched but for their index, in
// order), and, when the stream is one the filter rewrites (the assembler
// took every chunk and the calls are complete), exactly the entries of
// the calls index_map keeps; the id and usage are rewritten as asked;
// functionName gives at most 64 bytes of [A-Za-z0-9_-].

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "dataplane/common/buffer.h"
#include "dataplane/http/sse.h"
#include "filters/tools/tool_calls.h"
#include "filters/tools/tools_filter.h"
#include "test/fuzz/fuzz_util.h"

namespace eldric::fuzz {
namespace {

constexpr size_t kMaxEventBytes = 512;
constexpr size_t kMaxCalls = 8;  // one bit of the map byte each
constexpr uint64_t kPromptTokens = 7;
constexpr uint64_t kCompletionTokens = 11;
const char kId[] = "chatcmpl-eldric-fuzz";

const rapidjson::Value* member(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(name);
  return it == v.MemberEnd() ? nullptr : &it->value;
}

// choices[0].delta, or null (as the filter finds it).
const rapidjson::Value* firstDelta(const rapidjson::Value& doc) {
  const rapidjson::Value* choices = member(doc, "choices");
  if (!choices || !choices->IsArray() || choices->Empty() || !(*choices)[0].IsObject())
    return nullptr;
  const rapidjson::Value* delta = member((*choices)[0], "delta");
  return delta && delta->IsObject() ? delta : nullptr;
}

// Where the first blank line ("\n\n" or "\n\r\n") of `s` ends, or npos.
size_t blankLineEnd(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\n') continue;
    if (i + 1 < s.size() && s[i + 1] == '\n') return i + 2;
    if (i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

// An event as the splitter hands it out: ends with its first blank line,
// and at most kMaxEventBytes besides it.
void checkEvent(std::string_view ev, size_t read_bytes) {
  size_t end = blankLineEnd(ev);
  if (end != ev.size()) abort();  // no blank line, or not at the end
  size_t blank = ev.size() >= 3 && ev.substr(ev.size() - 3) == "\n\r\n" ? 3 : 2;
  // Bounded whatever the reads were (corpus/tool_stream_fuzz/
  // crash-event-past-limit: an event whole in one read once was not).
  (void)read_bytes;
  if (ev.size() - blank > kMaxEventBytes) abort();
}

std::string serialize(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  if (!v.Accept(w)) abort();  // a value parsed from JSON that cannot be written
  return std::string(sb.GetString(), sb.GetSize());
}

// remapToolCalls's rule (tools_filter.cc) for one streamed entry: the
// call it is part of as the assembler reads it (an integer index names
// it, none or null is the next call; `*seen` is the count so far), then
// its new index, or -1 to leave it out. An entry of a call outside the
// map, or with an index of another type, is kept as it is (`*as_is`).
int remapped(const rapidjson::Value& entry, const std::vector<int>& index_map, size_t* seen,
             bool* as_is) {
  *as_is = true;
  const rapidjson::Value* idx = member(entry, "index");
  uint64_t call = 0;
  if (idx && idx->IsUint64()) {
    call = idx->GetUint64();
  } else if (!idx || idx->IsNull()) {
    call = *seen;
  } else {
    return 0;
  }
  if (call >= *seen) *seen = call + 1;
  if (call >= index_map.size()) return 0;
  *as_is = false;
  return index_map[static_cast<size_t>(call)];
}

// A held event: its payload, and the call the assembler took each of its
// tool_calls entries for (empty when the assembler did not take it).
struct Held {
  std::string payload;
  bool taken = false;
  std::vector<uint64_t> calls;
};

// How the assembler reads one chunk's entries (tool_calls.cc): an integer
// index names its call, none (or null) is the next call.
std::vector<uint64_t> assemblerCalls(const rapidjson::Value& doc, size_t calls_before) {
  std::vector<uint64_t> out;
  const rapidjson::Value* delta = firstDelta(doc);
  const rapidjson::Value* calls = delta ? member(*delta, "tool_calls") : nullptr;
  if (!calls || !calls->IsArray()) return out;
  uint64_t n = calls_before;
  for (const auto& entry : calls->GetArray()) {
    const rapidjson::Value* idx = member(entry, "index");
    uint64_t i = idx && idx->IsUint64() ? idx->GetUint64() : n;
    if (i >= n) n = i + 1;
    out.push_back(i);
  }
  return out;
}

void checkTokens(const rapidjson::Value* before, const rapidjson::Value* after, uint64_t add) {
  if (!after) abort();  // added when missing
  if (!before) {
    if (!after->IsUint64() || after->GetUint64() != add) abort();
  } else if (before->IsUint64()) {
    if (!after->IsUint64() || after->GetUint64() != before->GetUint64() + add) abort();
  } else if (*before != *after) {
    abort();  // not a count: left as it is
  }
}

// `rw` and `seen` go through the held events in order, as the filter's one
// ChunkRewrite does through a round's chunks.
void checkRewrite(const Held& held, filters::tools::ChunkRewrite& rw, size_t* seen,
                  bool filter_shaped) {
  rapidjson::Document doc;
  std::string why;
  if (!json::parse(doc, held.payload, &why)) abort();  // it parsed before
  rapidjson::Document orig;
  orig.CopyFrom(doc, orig.GetAllocator());
  bool kept = filters::tools::rewriteChunk(doc, rw);
  if (member(orig, "error")) {
    // An error event goes as it is.
    if (!kept || !(doc == orig) || rw.calls_seen != *seen) abort();
    return;
  }

  // What goes to the client is "data: " + this + "\n\n": one line, JSON.
  std::string out = serialize(doc);
  if (out.find_first_of("\r\n") != std::string::npos) abort();
  rapidjson::Document again;
  if (!json::parse(again, out, &why)) abort();

  if (const rapidjson::Value* id = member(orig, "id"); id && id->IsString()) {
    const rapidjson::Value* now = member(doc, "id");
    if (!now || !now->IsString() ||
        std::string_view(now->GetString(), now->GetStringLength()) != std::string_view(rw.id))
      abort();
  }
  if (const rapidjson::Value* usage = member(orig, "usage"); usage && usage->IsObject()) {
    const rapidjson::Value& now = *member(doc, "usage");
    checkTokens(member(*usage, "prompt_tokens"), member(now, "prompt_tokens"), rw.prompt_tokens);
    checkTokens(member(*usage, "completion_tokens"), member(now, "completion_tokens"),
                rw.completion_tokens);
    checkTokens(member(*usage, "total_tokens"), member(now, "total_tokens"),
                rw.prompt_tokens + rw.completion_tokens);
  }

  const rapidjson::Value* delta0 = firstDelta(orig);
  const rapidjson::Value* calls0 = delta0 ? member(*delta0, "tool_calls") : nullptr;
  if (!calls0 || !calls0->IsArray()) {
    if (!kept) abort();  // only chunks of left-out calls are dropped
    if (rw.calls_seen != *seen) abort();
    return;
  }
  // The entries remapToolCalls keeps, untouched but for their index.
  rapidjson::Document want;
  want.SetArray();
  for (const auto& entry : calls0->GetArray()) {
    bool as_is = false;
    int mapped = remapped(entry, rw.index_map, seen, &as_is);
    if (!as_is && mapped < 0) continue;
    rapidjson::Value e(entry, want.GetAllocator());
    if (!as_is) {
      auto idx = e.FindMember("index");
      if (idx != e.MemberEnd() && idx->value.IsUint64())
        idx->value.SetUint64(static_cast<uint64_t>(mapped));
    }
    want.PushBack(e, want.GetAllocator());
  }
  if (rw.calls_seen != *seen) abort();  // the filter counts calls as the assembler
  const rapidjson::Value* delta = firstDelta(doc);
  if (!delta) abort();
  const rapidjson::Value* calls = member(*delta, "tool_calls");
  if (want.Empty()) {
    if (calls) abort();  // an emptied array is removed
    const rapidjson::Value* reason = member(doc["choices"][0], "finish_reason");
    bool worth = (reason && !reason->IsNull()) || delta->MemberCount() > 0 || member(doc, "usage");
    if (kept != worth) abort();
  } else {
    if (!kept || !calls || !calls->IsArray() ||
        !(*calls == static_cast<const rapidjson::Value&>(want)))
      abort();
  }

  // The stream as the filter rewrites it: an entry is its call's, as the
  // assembler read it, and is left out exactly when index_map leaves that
  // call out.
  if (!filter_shaped || !held.taken) return;
  // (corpus/tool_stream_fuzz/crash-unindexed-call-dropped: an entry
  // without an index once was left out.)
  size_t expected = 0;
  for (size_t j = 0; j < held.calls.size(); ++j) {
    uint64_t c = held.calls[j];
    if (c >= rw.index_map.size()) abort();  // the map has one entry per call
    expected += rw.index_map[c] >= 0;
  }
  size_t left = calls && calls->IsArray() ? calls->Size() : 0;
  if (left != expected) abort();
}

void checkFunctionName(std::string_view a, std::string_view b) {
  std::string name = filters::tools::functionName(a, b);
  if (name.size() > 64) abort();
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) abort();
  }
}

void fuzzOne(const uint8_t* data, size_t size) {
  InputReader in(data, size);
  uint8_t seed0 = in.byte();
  uint8_t seed1 = in.byte();
  uint8_t map_bits = in.byte();
  uint8_t flags = in.byte();
  uint8_t name_cut = in.byte();
  std::string_view stream = in.rest();

  size_t cut = stream.size() * name_cut / 256;
  checkFunctionName(stream.substr(0, cut), stream.substr(cut));

  // The reads: lengths from a small xorshift seeded by the two bytes, at
  // most 8-512 bytes (the first seed), some of them two slices.
  uint32_t state = (uint32_t{seed0} << 8 | seed1) * 2654435761u | 1;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  };
  size_t max_read = size_t{(seed0 & 63u) + 1} * 8;

  http::SseSplitter splitter(kMaxEventBytes);
  filters::tools::Limits limits;
  limits.max_calls = kMaxCalls;
  limits.max_name_bytes = 64;
  limits.max_arguments_bytes = 1024;
  filters::tools::ToolCallAssembler assembler(limits);
  bool refused = false;
  std::vector<Held> held;
  std::string handed_out;  // every event so far, in order
  size_t at = 0;
  bool spent = false;
  while (at < stream.size() && !spent) {
    size_t n = std::min<size_t>(next() % max_read + 1, stream.size() - at);
    std::string_view read = stream.substr(at, n);
    at += n;
    Buffer buf;
    if (n > 1 && (next() & 1)) {
      size_t half = next() % (n - 1) + 1;
      buf.add(read.substr(0, half));
      Buffer tail;
      tail.add(read.substr(half));
      buf.move(tail);
      if (buf.sliceCount() != 2) abort();
    } else {
      buf.add(read);
    }
    bool ok = splitter.feed(buf, [&](std::string_view ev) {
      checkEvent(ev, n);
      handed_out.append(ev);
      std::string_view payload = http::sseData(ev);
      if (payload.find('\n') != std::string_view::npos) abort();
      // The event as a client reads it (what the plugin filter hands its
      // stream hooks): no line break but the joins of its data lines,
      // none inside its other lines, and one data line reads as sseData.
      http::SseEvent read = http::readSseEvent(ev);
      if (read.data.find('\r') != std::string::npos) abort();
      if (read.other.find('\r') != std::string::npos) abort();
      if (!read.other.empty() && read.other.back() != '\n') abort();
      if (read.other.find("\n\n") != std::string::npos ||
          (!read.other.empty() && read.other[0] == '\n'))
        abort();
      if (!payload.empty() && (!read.has_data || read.data != payload || !read.other.empty()))
        abort();
      if (payload == "[DONE]") return true;
      rapidjson::Document doc;
      std::string why;
      if (payload.empty() || payload[0] != '{' || !json::parse(doc, payload, &why) ||
          !doc.IsObject())
        return true;
      Held h;
      h.payload.assign(payload);
      // The filter gives the assembler every chunk but an error.
      if (!refused && !member(doc, "error")) {
        std::vector<uint64_t> calls = assemblerCalls(doc, assembler.calls().size());
        if (assembler.addChunk(doc, &why)) {
          h.taken = true;
          h.calls = std::move(calls);
          if (assembler.calls().size() > kMaxCalls) abort();
        } else {
          refused = true;
        }
      }
      held.push_back(std::move(h));
      return true;
    });
    if (!ok) {
      spent = true;
      Buffer none;
      if (splitter.feed(none, [](std::string_view) { return true; })) abort();  // stays spent
      break;
    }
    // Nothing lost or repeated: what was handed out and what is pending
    // are the bytes fed.
    if (splitter.pending().size() > kMaxEventBytes) abort();
    if (handed_out.size() + splitter.pending().size() != at) abort();
    if (std::string_view(handed_out) != stream.substr(0, handed_out.size())) abort();
    if (splitter.pending() != stream.substr(handed_out.size(), at - handed_out.size())) abort();
  }

  // The stream's end. An event left incomplete goes on as it is, rewritten
  // if its data is JSON (not given to the assembler), as onStreamEnd does.
  std::string why;
  if (!spent && !splitter.pending().empty()) {
    std::string_view payload = http::sseData(splitter.pending());
    rapidjson::Document doc;
    if (!payload.empty() && payload[0] == '{' && json::parse(doc, payload, &why)) {
      Held h;
      h.payload.assign(payload);
      held.push_back(std::move(h));
    }
  }
  // One index_map entry per call, as onStreamEnd builds it (or, with
  // flags & 1, one of any size).
  bool filter_shaped =
      !(flags & 1) && !refused && !spent && (!assembler.hasCalls() || assembler.complete(&why));
  size_t map_size = (flags & 1) ? (size_t{flags} >> 4) : assembler.calls().size();
  filters::tools::ChunkRewrite rw;
  int renumbered = 0;
  for (size_t i = 0; i < map_size; ++i)
    rw.index_map.push_back((map_bits >> (i % 8)) & 1 ? -1 : renumbered++);
  rw.id = kId;
  rw.prompt_tokens = kPromptTokens;
  rw.completion_tokens = kCompletionTokens;
  size_t seen = 0;
  for (const Held& h : held) checkRewrite(h, rw, &seen, filter_shaped);
}

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { eldric::fuzz::fuzzOne(data, size); });
  return 0;
}
