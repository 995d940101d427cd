#pragma once

#include <string>
#include <string_view>

namespace eldric {

// Writes `bytes` to `path` so that a reader (or a crash) sees the old
// content or the new, never a part: a temporary file beside it with
// `mode`, fsync, rename. False with `*error` (naming the path and errno).
bool writeFileAtomically(const std::string& path, std::string_view bytes, unsigned mode,
                         std::string* error);

// Reads the whole of `path` into `*out`. False with `*error` ("<path>:
// <errno text>", or a read error) when it cannot.
bool readWholeFile(const std::string& path, std::string* out, std::string* error);

}  // namespace eldric
