// The embedded web chat: find() answers the pages and every asset they load,
// with the right types, ETags and a gzip that inflates back to the body.

#include "webchat/assets.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace eldric::webchat {
namespace {

std::string gunzip(std::string_view gz) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  std::string out;
  char buf[16384];
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc != Z_STREAM_END);
  EXPECT_EQ(rc, Z_STREAM_END);
  EXPECT_EQ(zs.avail_in, 0u) << "bytes after the gzip member";
  inflateEnd(&zs);
  return out;
}

// Every "/chat/assets/..." a page references.
std::vector<std::string> references(std::string_view html) {
  std::vector<std::string> refs;
  std::string s(html);
  std::regex re("(?:src|href)=\"(/chat/assets/[^\"]+)\"");
  for (auto it = std::sregex_iterator(s.begin(), s.end(), re); it != std::sregex_iterator(); ++it) {
    refs.push_back((*it)[1]);
  }
  return refs;
}

void checkAsset(const Asset& a) {
  SCOPED_TRACE(std::string(a.path));
  EXPECT_FALSE(a.body.empty());
  EXPECT_TRUE(std::regex_match(std::string(a.etag), std::regex("\"[0-9a-f]{16}\"")));
  if (!a.gzip_body.empty()) {
    EXPECT_LT(a.gzip_body.size(), a.body.size());
    EXPECT_EQ(gunzip(a.gzip_body), a.body);
  }
}

TEST(AssetsTest, PagesAreHtml) {
  for (const char* path : {"/chat", "/login"}) {
    const Asset* a = find(path);
    ASSERT_NE(a, nullptr) << path;
    EXPECT_EQ(a->content_type, "text/html; charset=utf-8");
    EXPECT_FALSE(a->immutable);
    EXPECT_NE(a->body.find("<!doctype html>"), std::string_view::npos);
    EXPECT_FALSE(a->gzip_body.empty()) << "HTML compresses";
    checkAsset(*a);
  }
}

TEST(AssetsTest, UnknownPathsAreNull) {
  for (const char* path :
       {"", "/", "/chat/", "/chat/assets/", "/chat/assets/app.j", "/chat/assets/app.jsx", "/login/",
        "/chat/assets/nope.js", "/v1/models", "/Chat"}) {
    EXPECT_EQ(find(path), nullptr) << path;
  }
}

TEST(AssetsTest, PlainNamesHaveTheirTypes) {
  struct Want {
    const char* path;
    const char* type;
  };
  for (const Want& w : {Want{"/chat/assets/app.js", "text/javascript; charset=utf-8"},
                        Want{"/chat/assets/login.js", "text/javascript; charset=utf-8"},
                        Want{"/chat/assets/style.css", "text/css; charset=utf-8"},
                        Want{"/chat/assets/favicon.svg", "image/svg+xml"}}) {
    const Asset* a = find(w.path);
    ASSERT_NE(a, nullptr) << w.path;
    EXPECT_EQ(a->content_type, w.type);
    EXPECT_FALSE(a->immutable) << "a plain name changes content between builds";
    checkAsset(*a);
  }
}

TEST(AssetsTest, PagesLoadHashedImmutableAssetsWithTheSameBytes) {
  std::set<std::string> seen;
  for (const char* page : {"/chat", "/login"}) {
    const Asset* html = find(page);
    ASSERT_NE(html, nullptr);
    std::vector<std::string> refs = references(html->body);
    EXPECT_GE(refs.size(), 3u) << page;
    for (const std::string& ref : refs) {
      SCOPED_TRACE(ref);
      const Asset* a = find(ref);
      ASSERT_NE(a, nullptr) << "a page references a missing asset";
      EXPECT_TRUE(a->immutable);
      // /chat/assets/app.0123456789ab.js is the same file as /chat/assets/app.js.
      std::smatch m;
      ASSERT_TRUE(
          std::regex_match(ref, m, std::regex("(/chat/assets/[a-z]+)\\.[0-9a-f]{12}(\\.[a-z]+)")));
      const Asset* plain = find(m[1].str() + m[2].str());
      ASSERT_NE(plain, nullptr);
      EXPECT_EQ(plain->body, a->body);
      EXPECT_EQ(plain->etag, a->etag);
      EXPECT_EQ(plain->content_type, a->content_type);
      seen.insert(m[1].str() + m[2].str());
      checkAsset(*a);
    }
  }
  for (const char* want : {"/chat/assets/app.js", "/chat/assets/login.js", "/chat/assets/style.css",
                           "/chat/assets/favicon.svg"}) {
    EXPECT_EQ(seen.count(want), 1u) << want << " is loaded by a page";
  }
}

TEST(AssetsTest, BundleHoldsTheLibrariesAndNoSourceMaps) {
  const Asset* app = find("/chat/assets/app.js");
  ASSERT_NE(app, nullptr);
  for (const char* needle : {"marked", "DOMPurify", "hljs", "eldric.webchat.v1"}) {
    EXPECT_NE(app->body.find(needle), std::string_view::npos) << needle;
  }
  EXPECT_EQ(app->body.find("sourceMappingURL"), std::string_view::npos);
  const Asset* css = find("/chat/assets/style.css");
  ASSERT_NE(css, nullptr);
  EXPECT_NE(css->body.find(".hljs-keyword"), std::string_view::npos)
      << "the highlight theme is bundled";
  // The bundles are large and text: they must compress well.
  ASSERT_FALSE(app->gzip_body.empty());
  EXPECT_LT(app->gzip_body.size() * 2, app->body.size());
}

// The Edge's Content-Security-Policy allows no inline script or style: the
// pages must not need any.
TEST(AssetsTest, PagesHaveNoInlineScriptOrStyle) {
  std::regex inline_script("<script(?![^>]*\\bsrc=)[^>]*>", std::regex::icase);
  std::regex handler("\\son[a-z]+\\s*=", std::regex::icase);
  std::regex style_attr("\\sstyle\\s*=", std::regex::icase);
  for (const char* page : {"/chat", "/login"}) {
    const Asset* a = find(page);
    ASSERT_NE(a, nullptr);
    std::string body(a->body);
    EXPECT_FALSE(std::regex_search(body, handler)) << page;
    EXPECT_FALSE(std::regex_search(body, style_attr)) << page;
    EXPECT_EQ(body.find("<style"), std::string::npos) << page;
    EXPECT_FALSE(std::regex_search(body, inline_script)) << page;
    EXPECT_EQ(body.find("javascript:"), std::string::npos) << page;
  }
}

}  // namespace
}  // namespace eldric::webchat
