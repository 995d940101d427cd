// embed: turns the web chat's files into a C++ source file that defines
// eldric::webchat::find() (webchat/assets.h), so eldric-edge serves them
// from its own binary. Run by the genrule in webchat/BUILD.bazel.
//
//   embed --out FILE.cc
//         [--asset=NAME:FILE[,FILE...]]...   served at /chat/assets/NAME
//         [--page=PATH:FILE]...              served at PATH ("/chat", "/login")
//
// An asset made of several files is their concatenation (the bundle), with
// source-map comments removed (the maps are not shipped). Each asset is
// served twice from the same bytes: at /chat/assets/NAME (revalidated by
// ETag) and at a content-hashed name /chat/assets/STEM.HASH.EXT that may be
// cached for a year (immutable). Assets and pages are processed in the order
// given; a reference "/chat/assets/NAME" in a later one is rewritten to the
// hashed name, so pages always load the bundle they were built with.
//
// Every body is also gzipped at level 9; the gzip is kept only if smaller.
// The output depends only on the inputs (no time stamps), so the build is
// reproducible.

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/crypto.h"

namespace {

// SHA-256 for ETags and hashed names comes from the store's own (no TLS
// library): common/crypto.h.

// ---------------------------------------------------------------------------

[[noreturn]] void die(const std::string& message) {
  std::cerr << "embed: " << message << "\n";
  std::exit(1);
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string extension(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? "" : name.substr(dot + 1);
}

std::string contentType(const std::string& name) {
  std::string ext = extension(name);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "json") return "application/json";
  if (ext == "txt") return "text/plain; charset=utf-8";
  die("no content type known for " + name);
}

bool isText(const std::string& name) {
  std::string ext = extension(name);
  return ext == "html" || ext == "js" || ext == "css" || ext == "svg" || ext == "json" ||
         ext == "txt";
}

// Drops "//# sourceMappingURL=..." and "/*# sourceMappingURL=... */" lines:
// the maps are not shipped, and a reference to a missing one only makes a
// browser's developer tools ask for it.
std::string stripSourceMaps(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    size_t next = end == std::string::npos ? text.size() : end + 1;
    std::string line = text.substr(pos, next - pos);
    size_t first = line.find_first_not_of(" \t");
    bool map =
        first != std::string::npos && (line.compare(first, 21, "//# sourceMappingURL=") == 0 ||
                                       line.compare(first, 21, "/*# sourceMappingURL=") == 0);
    if (!map) out += line;
    pos = next;
  }
  return out;
}

std::string gzip(const std::string& data) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  // 15 + 16: a gzip wrapper (with a zero mtime, so the output is stable).
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    die("deflateInit2 failed");
  std::string out(deflateBound(&zs, data.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) die("deflate did not finish");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '/';
}

// Replaces every whole occurrence of `from` (not followed by more of a path)
// with `to`.
std::string replaceRefs(const std::string& text, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    size_t at = text.find(from, pos);
    if (at == std::string::npos) break;
    size_t after = at + from.size();
    bool whole = after >= text.size() || !isNameChar(text[after]);
    out.append(text, pos, at - pos);
    out += whole ? to : from;
    pos = after;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

// A C++ string literal for arbitrary bytes: octal escapes (never more than
// three digits, so no following character can extend them), '?' escaped so
// no trigraph can form, split into lines.
void writeLiteral(std::ostream& os, const std::string& bytes) {
  if (bytes.empty()) {
    os << "\"\"";
    return;
  }
  std::string line;
  size_t width = 0;
  auto flush = [&]() {
    os << "    \"" << line << "\"\n";
    line.clear();
    width = 0;
  };
  for (unsigned char c : bytes) {
    if (c == '\\') {
      line += "\\\\";
    } else if (c == '"') {
      line += "\\\"";
    } else if (c == '?') {
      line += "\\?";
    } else if (c == '\n') {
      line += "\\n";
      width = 1000;  // end the line here: keeps the source readable
    } else if (c >= 0x20 && c < 0x7f) {
      line += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\%03o", c);
      line += buf;
    }
    width = std::max(width, line.size());
    if (width >= 100) flush();
  }
  if (!line.empty()) flush();
}

std::string cppString(const std::string& s) {
  std::ostringstream os;
  os << '"';
  for (char c : s) {
    if (c == '"' || c == '\\') os << '\\';
    os << c;
  }
  os << '"';
  return os.str();
}

struct Entry {
  std::string path;
  std::string type;
  int data;  // index into bodies
  std::string etag;
  bool immutable;
};

struct Body {
  std::string raw;
  std::string gz;  // empty when gzip is not smaller
};

}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  // In the order given: {kind, name or path, files}.
  struct Input {
    bool page;
    std::string name;
    std::vector<std::string> files;
  };
  std::vector<Input> inputs;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (a.rfind("--out=", 0) == 0) {
      out_path = a.substr(6);
    } else if (a.rfind("--asset=", 0) == 0 || a.rfind("--page=", 0) == 0) {
      bool page = a[2] == 'p';
      std::string spec = a.substr(page ? 7 : 8);
      size_t colon = spec.find(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size())
        die("bad argument " + a);
      Input in{page, spec.substr(0, colon), {}};
      std::string files = spec.substr(colon + 1);
      size_t pos = 0;
      for (;;) {
        size_t comma = files.find(',', pos);
        in.files.push_back(
            files.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
      if (page && (in.name.empty() || in.name[0] != '/'))
        die("a page path must start with /: " + a);
      if (!page && in.name.find('/') != std::string::npos) die("an asset name has no /: " + a);
      if (page && in.files.size() != 1) die("a page is one file: " + a);
      inputs.push_back(std::move(in));
    } else {
      die("unknown argument " + a +
          "\nusage: embed --out FILE.cc [--asset=NAME:FILE[,FILE...]]... [--page=PATH:FILE]...");
    }
  }
  if (out_path.empty()) die("--out is required");

  std::vector<Body> bodies;
  std::vector<Entry> entries;
  std::vector<std::pair<std::string, std::string>> renames;  // plain path -> hashed path
  for (const Input& in : inputs) {
    std::string body;
    std::string type_name = in.page ? "page.html" : in.name;
    bool text = isText(type_name);
    bool js = extension(type_name) == "js";
    for (size_t i = 0; i < in.files.size(); i++) {
      std::string part = readFile(in.files[i]);
      if (text) part = stripSourceMaps(part);
      if (i > 0 && js)
        body += ";\n";  // a file that forgot its last semicolon cannot merge into the next
      body += part;
      if (text && !body.empty() && body.back() != '\n') body += '\n';
    }
    if (text) {
      for (const auto& r : renames) body = replaceRefs(body, r.first, r.second);
    }
    std::string hash = eldric::crypto::sha256Hex(body);
    Body b{body, gzip(body)};
    if (b.gz.size() >= b.raw.size()) b.gz.clear();
    bodies.push_back(std::move(b));
    int data = static_cast<int>(bodies.size() - 1);
    std::string etag = "\"" + hash.substr(0, 16) + "\"";
    std::string type = contentType(type_name);
    if (in.page) {
      entries.push_back({in.name, type, data, etag, false});
      continue;
    }
    std::string plain = "/chat/assets/" + in.name;
    size_t dot = in.name.rfind('.');
    std::string hashed =
        "/chat/assets/" + (dot == std::string::npos ? in.name + "." + hash.substr(0, 12)
                                                    : in.name.substr(0, dot) + "." +
                                                          hash.substr(0, 12) + in.name.substr(dot));
    entries.push_back({plain, type, data, etag, false});
    entries.push_back({hashed, type, data, etag, true});
    renames.emplace_back(plain, hashed);
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.path < b.path; });
  for (size_t i = 1; i < entries.size(); i++) {
    if (entries[i].path == entries[i - 1].path) die("two assets at " + entries[i].path);
  }

  std::ostringstream os;
  os << "// Generated by webchat/embed/embed.cc from the web chat's files. Do not edit.\n"
     << "#include <algorithm>\n#include <iterator>\n\n#include \"webchat/assets.h\"\n\n"
     << "namespace eldric::webchat {\nnamespace {\n\n";
  for (size_t i = 0; i < bodies.size(); i++) {
    os << "// " << bodies[i].raw.size() << " bytes\n";
    os << "constexpr char kBody" << i << "[] =\n";
    writeLiteral(os, bodies[i].raw);
    os << ";\n";
    os << "// " << bodies[i].gz.size() << " bytes of gzip\n";
    os << "constexpr char kGzip" << i << "[] =\n";
    writeLiteral(os, bodies[i].gz);
    os << ";\n\n";
  }
  os << "// Sorted by path, for find().\nconstexpr Asset kAssets[] = {\n";
  for (const Entry& e : entries) {
    const Body& b = bodies[e.data];
    os << "    {" << cppString(e.path) << ", " << cppString(e.type) << ", std::string_view(kBody"
       << e.data << ", " << b.raw.size() << "), std::string_view(kGzip" << e.data << ", "
       << b.gz.size() << "), " << cppString(e.etag) << ", " << (e.immutable ? "true" : "false")
       << "},\n";
  }
  os << "};\n\n}  // namespace\n\n"
     << "const Asset* find(std::string_view path) {\n"
     << "  const Asset* end = std::end(kAssets);\n"
     << "  const Asset* it = std::lower_bound(std::begin(kAssets), end, path,\n"
     << "                                     [](const Asset& a, std::string_view p) { return "
        "a.path < p; });\n"
     << "  return it != end && it->path == path ? it : nullptr;\n"
     << "}\n\n}  // namespace eldric::webchat\n";

  std::ofstream out(out_path, std::ios::binary);
  out << os.str();
  out.close();
  if (!out) die("cannot write " + out_path);
  return 0;
}
