#include "controlplane/core/store.h"

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace eldric::controlplane {
namespace {

constexpr Scopes kInference = static_cast<Scopes>(Scope::Inference);
constexpr Scopes kAdmin = static_cast<Scopes>(Scope::Admin);
constexpr Scopes kWorker = static_cast<Scopes>(Scope::Worker);

// A fresh directory under TEST_TMPDIR (Bazel cleans it), or /tmp when run
// by hand.
std::string freshDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/store_test.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  EXPECT_NE(mkdtemp(buf.data()), nullptr);
  return std::string(buf.data());
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::unique_ptr<Store> openOrDie(const std::string& dir) {
  std::string error;
  std::unique_ptr<Store> store = Store::open(dir, &error);
  EXPECT_NE(store, nullptr) << error;
  return store;
}

IssuedKey registerOrDie(Store* store, const std::string& name, Scopes scopes = kInference) {
  IssuedKey issued;
  std::string error;
  bool conflict = false;
  EXPECT_TRUE(store->registerClient(name, "test client", scopes, ClientLimits{}, 0, &issued, &error,
                                    &conflict))
      << error;
  return issued;
}

bool isBase62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

TEST(CryptoTest, Sha256StandardVectors) {
  // FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf").
  EXPECT_EQ(crypto::sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(crypto::sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(crypto::sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(crypto::sha256Hex(
                "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
                "qklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(crypto::sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(CryptoTest, Sha256PaddingBoundaries) {
  // Lengths around the one-or-two padding blocks split (55/56 bytes) and
  // block boundaries; expected values from Python's hashlib.
  struct {
    size_t n;
    const char* hex;
  } cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
  };
  for (const auto& c : cases) EXPECT_EQ(crypto::sha256Hex(std::string(c.n, 'a')), c.hex) << c.n;

  unsigned char raw[32];
  crypto::sha256("abc", 3, raw);
  EXPECT_EQ(raw[0], 0xba);
  EXPECT_EQ(raw[31], 0xad);
}

TEST(CryptoTest, ApiKeysAreBase62AndUnique) {
  std::set<std::string> seen;
  std::set<char> alphabet_used;
  for (int i = 0; i < 1000; ++i) {
    std::string key = crypto::generateApiKey();
    ASSERT_EQ(key.size(), 51u) << key;
    ASSERT_EQ(key.substr(0, 3), "sk-");
    for (size_t j = 3; j < key.size(); ++j) {
      ASSERT_TRUE(isBase62(key[j])) << key;
      alphabet_used.insert(key[j]);
    }
    EXPECT_TRUE(seen.insert(key).second) << "duplicate key";
    EXPECT_EQ(crypto::keyPrefix(key), key.substr(0, 10));
  }
  // 48,000 draws over 62 symbols: each is expected ~774 times, so a missing
  // one would mean a broken mapping, not bad luck.
  EXPECT_EQ(alphabet_used.size(), 62u);
}

TEST(CryptoTest, ConstantTimeEquals) {
  EXPECT_TRUE(crypto::constantTimeEquals("", ""));
  EXPECT_TRUE(crypto::constantTimeEquals("sk-abc", "sk-abc"));
  EXPECT_FALSE(crypto::constantTimeEquals("sk-abc", "sk-abd"));
  EXPECT_FALSE(crypto::constantTimeEquals("sk-abc", "sk-ab"));
  EXPECT_FALSE(crypto::constantTimeEquals("sk-ab", "sk-abc"));
  EXPECT_FALSE(crypto::constantTimeEquals("", "x"));
  EXPECT_FALSE(crypto::constantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
  // A shorter string padded with NULs must not compare equal.
  EXPECT_FALSE(crypto::constantTimeEquals("ab", std::string("ab\0", 3)));
}

TEST(ScopesTest, ParseAndFormat) {
  Scopes s = 0;
  ASSERT_TRUE(parseScopes("inference", &s));
  EXPECT_EQ(s, kInference);
  ASSERT_TRUE(parseScopes("admin, worker", &s));
  EXPECT_EQ(s, kAdmin | kWorker);
  EXPECT_EQ(scopesToString(kInference | kAdmin), "inference,admin");
  EXPECT_EQ(scopesToString(kInference | kAdmin | kWorker), "inference,admin,worker");
  EXPECT_FALSE(parseScopes("", &s));
  EXPECT_FALSE(parseScopes("inference,,admin", &s));
  EXPECT_FALSE(parseScopes("root", &s));
  EXPECT_FALSE(parseScopes("Admin", &s));
}

TEST(StoreTest, OpenCreatesPrivateDirectory) {
  std::string dir = freshDir() + "/a/b";
  auto store = openOrDie(dir);
  ASSERT_NE(store, nullptr);
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat((dir + "/edge.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
  EXPECT_EQ(store->version(), 0u);
}

TEST(StoreTest, OpenErrorsNameThePath) {
  std::string dir = freshDir();
  std::string file = dir + "/not-a-dir";
  std::ofstream(file) << "x";
  std::string error;
  EXPECT_EQ(Store::open(file, &error), nullptr);
  EXPECT_NE(error.find(file), std::string::npos) << error;

  // A file that is not a SQLite database.
  std::string bad = dir + "/bad";
  ASSERT_EQ(mkdir(bad.c_str(), 0700), 0);
  std::ofstream(bad + "/edge.db") << std::string(4096, 'z');
  error.clear();
  EXPECT_EQ(Store::open(bad, &error), nullptr);
  EXPECT_NE(error.find(bad + "/edge.db"), std::string::npos) << error;
}

TEST(StoreTest, RegisterListGet) {
  auto store = openOrDie(freshDir());
  ClientLimits limits;
  limits.rpm = 60;
  limits.tpm = 100000;
  limits.max_concurrent = 4;
  limits.allowed_models = {"llama-3-8b", "qwen2:7b"};
  limits.tools = {"weather", "clock__now"};
  int64_t before = std::time(nullptr);
  IssuedKey issued;
  std::string error;
  bool conflict = true;
  ASSERT_TRUE(store->registerClient("team-a.prod_1", "Team A", kInference | kAdmin, limits, 0,
                                    &issued, &error, &conflict))
      << error;
  EXPECT_FALSE(conflict);
  EXPECT_EQ(issued.key.size(), 51u);
  const ClientRecord& c = issued.client;
  EXPECT_EQ(c.id.size(), 19u);
  EXPECT_EQ(c.id.substr(0, 3), "cl_");
  EXPECT_EQ(c.name, "team-a.prod_1");
  EXPECT_EQ(c.description, "Team A");
  EXPECT_EQ(c.scopes, kInference | kAdmin);
  EXPECT_EQ(c.limits.rpm, 60u);
  EXPECT_EQ(c.limits.tpm, 100000u);
  EXPECT_EQ(c.limits.max_concurrent, 4u);
  EXPECT_EQ(c.limits.allowed_models, limits.allowed_models);
  EXPECT_EQ(c.limits.tools, limits.tools);
  EXPECT_EQ(c.source, "api");
  EXPECT_GE(c.created_at, before);
  EXPECT_EQ(c.expires_at, 0);
  EXPECT_EQ(c.revoked_at, 0);
  ASSERT_EQ(c.keys.size(), 1u);
  EXPECT_EQ(c.keys[0].sha256_hex, crypto::sha256Hex(issued.key));
  EXPECT_EQ(c.keys[0].prefix, crypto::keyPrefix(issued.key));
  EXPECT_EQ(c.keys[0].expires_at, 0);
  EXPECT_EQ(c.keys[0].revoked_at, 0);
  EXPECT_EQ(store->version(), 1u);

  IssuedKey second = registerOrDie(store.get(), "b");
  EXPECT_NE(second.client.id, c.id);
  EXPECT_NE(second.key, issued.key);
  EXPECT_EQ(store->version(), 2u);

  std::vector<ClientRecord> all = store->listClients();
  ASSERT_EQ(all.size(), 2u);
  std::set<std::string> names = {all[0].name, all[1].name};
  EXPECT_EQ(names, (std::set<std::string>{"team-a.prod_1", "b"}));
  for (const auto& r : all) EXPECT_EQ(r.keys.size(), 1u);

  auto by_id = store->getClient(c.id);
  ASSERT_TRUE(by_id.has_value());
  EXPECT_EQ(by_id->name, "team-a.prod_1");
  auto by_name = store->getClient("team-a.prod_1");
  ASSERT_TRUE(by_name.has_value());
  EXPECT_EQ(by_name->id, c.id);
  EXPECT_EQ(by_name->keys.size(), 1u);
  EXPECT_FALSE(store->getClient("nobody").has_value());

  // An expiry in the future is kept.
  IssuedKey expiring;
  int64_t later = std::time(nullptr) + 3600;
  ASSERT_TRUE(store->registerClient("exp", "", kInference, ClientLimits{}, later, &expiring, &error,
                                    &conflict))
      << error;
  EXPECT_EQ(expiring.client.expires_at, later);
}

TEST(StoreTest, DuplicateNameIsAConflict) {
  auto store = openOrDie(freshDir());
  registerOrDie(store.get(), "alice");
  uint64_t v = store->version();
  IssuedKey issued;
  std::string error;
  bool conflict = false;
  EXPECT_FALSE(store->registerClient("alice", "", kInference, ClientLimits{}, 0, &issued, &error,
                                     &conflict));
  EXPECT_TRUE(conflict);
  EXPECT_EQ(error, "a client named \"alice\" already exists");
  EXPECT_EQ(store->version(), v);
  EXPECT_EQ(store->listClients().size(), 1u);

  // Names are case-sensitive.
  registerOrDie(store.get(), "Alice");
  EXPECT_EQ(store->listClients().size(), 2u);
}

TEST(StoreTest, ValidationErrors) {
  auto store = openOrDie(freshDir());
  auto attempt = [&](const std::string& name, const std::string& desc, Scopes scopes,
                     const ClientLimits& limits, int64_t expires_at) {
    IssuedKey issued;
    std::string error;
    bool conflict = true;
    bool ok =
        store->registerClient(name, desc, scopes, limits, expires_at, &issued, &error, &conflict);
    EXPECT_FALSE(ok) << name;
    EXPECT_FALSE(conflict) << name;
    EXPECT_FALSE(error.empty());
    return error;
  };
  const std::string kRule = "name must be 1-64 characters of letters, digits, '.', '_' or '-'";
  EXPECT_EQ(attempt("", "", kInference, {}, 0), kRule);
  EXPECT_EQ(attempt(std::string(65, 'a'), "", kInference, {}, 0), kRule);
  EXPECT_EQ(attempt("has space", "", kInference, {}, 0), kRule);
  EXPECT_EQ(attempt("slash/", "", kInference, {}, 0), kRule);
  EXPECT_EQ(attempt("caf\xc3\xa9", "", kInference, {}, 0), kRule);
  EXPECT_NE(attempt("cl_0123456789abcdef", "", kInference, {}, 0).find("client id"),
            std::string::npos);
  EXPECT_NE(attempt("ok", std::string(501, 'd'), kInference, {}, 0).find("description"),
            std::string::npos);
  EXPECT_NE(attempt("ok", "bad \xff utf-8", kInference, {}, 0).find("description"),
            std::string::npos);
  EXPECT_NE(attempt("ok", "", 0, {}, 0).find("scopes"), std::string::npos);
  EXPECT_NE(attempt("ok", "", 16, {}, 0).find("scopes"), std::string::npos);
  EXPECT_NE(attempt("ok", "", kInference, {}, std::time(nullptr) - 10).find("expires_at"),
            std::string::npos);
  ClientLimits bad_models;
  bad_models.allowed_models = {"a\nb"};
  EXPECT_NE(attempt("ok", "", kInference, bad_models, 0).find("model"), std::string::npos);
  ClientLimits bad_tools;
  bad_tools.tools = {"weather lookup"};
  EXPECT_NE(attempt("ok", "", kInference, bad_tools, 0).find("tools"), std::string::npos);
  EXPECT_EQ(store->version(), 0u);
  EXPECT_TRUE(store->listClients().empty());

  // The limits themselves are fine: 64 characters, and 500 characters of
  // description counted as characters, not bytes.
  IssuedKey issued;
  std::string error;
  bool conflict;
  std::string desc;
  for (int i = 0; i < 500; ++i) desc += "\xc3\xa9";  // é, two bytes each
  EXPECT_TRUE(store->registerClient(std::string(64, 'n'), desc, kInference, {}, 0, &issued, &error,
                                    &conflict))
      << error;
}

TEST(StoreTest, RevokeClient) {
  auto store = openOrDie(freshDir());
  IssuedKey a = registerOrDie(store.get(), "a");
  IssuedKey b = registerOrDie(store.get(), "b");
  std::string error;
  ASSERT_TRUE(store->rotateKey("a", 60, &a, &error)) << error;
  uint64_t v = store->version();

  ASSERT_TRUE(store->revokeClient("a", &error)) << error;
  EXPECT_EQ(store->version(), v + 1);
  auto rec = store->getClient("a");
  ASSERT_TRUE(rec.has_value());
  EXPECT_NE(rec->revoked_at, 0);
  ASSERT_EQ(rec->keys.size(), 2u);
  for (const auto& k : rec->keys) EXPECT_NE(k.revoked_at, 0);
  // Other clients are untouched.
  EXPECT_EQ(store->getClient("b")->revoked_at, 0);
  EXPECT_EQ(store->getClient("b")->keys[0].revoked_at, 0);

  // Revoking again (here by id) is a success that changes nothing.
  ASSERT_TRUE(store->revokeClient(rec->id, &error)) << error;
  EXPECT_EQ(store->version(), v + 1);

  EXPECT_FALSE(store->revokeClient("nobody", &error));
  EXPECT_EQ(error, "no client \"nobody\"");
}

TEST(StoreTest, RotateKey) {
  auto store = openOrDie(freshDir());
  IssuedKey first = registerOrDie(store.get(), "svc");
  uint64_t v = store->version();
  std::string error;

  int64_t before = std::time(nullptr);
  IssuedKey second;
  ASSERT_TRUE(store->rotateKey("svc", 3600, &second, &error)) << error;
  int64_t after = std::time(nullptr);
  EXPECT_EQ(store->version(), v + 1);
  EXPECT_NE(second.key, first.key);
  EXPECT_EQ(second.key.substr(0, 3), "sk-");
  ASSERT_EQ(second.client.keys.size(), 2u);
  const KeyRecord& old_key = second.client.keys[0];
  const KeyRecord& new_key = second.client.keys[1];
  EXPECT_EQ(old_key.sha256_hex, crypto::sha256Hex(first.key));
  EXPECT_GE(old_key.expires_at, before + 3600);
  EXPECT_LE(old_key.expires_at, after + 3600);
  EXPECT_EQ(new_key.sha256_hex, crypto::sha256Hex(second.key));
  EXPECT_EQ(new_key.expires_at, 0);

  // A second rotation with a longer overlap does not extend the first key.
  IssuedKey third;
  ASSERT_TRUE(store->rotateKey(second.client.id, 7200, &third, &error)) << error;
  ASSERT_EQ(third.client.keys.size(), 3u);
  EXPECT_EQ(third.client.keys[0].expires_at, old_key.expires_at);
  EXPECT_GE(third.client.keys[1].expires_at, before + 7200);
  EXPECT_EQ(third.client.keys[2].expires_at, 0);

  // A shorter one does shorten it.
  IssuedKey fourth;
  ASSERT_TRUE(store->rotateKey("svc", 0, &fourth, &error)) << error;
  int64_t now = std::time(nullptr);
  for (size_t i = 0; i + 1 < fourth.client.keys.size(); ++i) {
    EXPECT_LE(fourth.client.keys[i].expires_at, now);
    EXPECT_NE(fourth.client.keys[i].expires_at, 0);
  }
  EXPECT_EQ(fourth.client.keys.back().expires_at, 0);

  EXPECT_FALSE(store->rotateKey("svc", -1, &fourth, &error));
  EXPECT_FALSE(store->rotateKey("nobody", 60, &fourth, &error));
  EXPECT_EQ(error, "no client \"nobody\"");
  ASSERT_TRUE(store->revokeClient("svc", &error));
  uint64_t revoked_v = store->version();
  EXPECT_FALSE(store->rotateKey("svc", 60, &fourth, &error));
  EXPECT_EQ(error, "client \"svc\" is revoked");
  EXPECT_EQ(store->version(), revoked_v);
  EXPECT_EQ(store->getClient("svc")->keys.size(), 4u);
}

TEST(StoreTest, KeyNeverAppearsInTheDatabaseFiles) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  IssuedKey issued = registerOrDie(store.get(), "secretive");
  IssuedKey rotated;
  std::string error;
  ASSERT_TRUE(store->rotateKey("secretive", 60, &rotated, &error)) << error;
  const std::string config_key = "operator-chosen-key-0123456789";
  ASSERT_TRUE(store->upsertConfigClient("from-config", config_key, kInference, &error)) << error;
  const std::string short_key = "tiny-key";
  ASSERT_TRUE(store->upsertConfigClient("short", short_key, kInference, &error)) << error;

  auto check = [&](const std::string& bytes, bool expect_hashes) {
    for (const std::string& key : {issued.key, rotated.key, config_key, short_key}) {
      EXPECT_EQ(bytes.find(key), std::string::npos) << "key found in database files";
      // Not even the random part alone.
      if (key.size() > 12) {
        EXPECT_EQ(bytes.find(key.substr(10)), std::string::npos);
      }
      if (expect_hashes) {
        EXPECT_NE(bytes.find(crypto::sha256Hex(key)), std::string::npos);
      }
    }
  };
  // While open, recent commits live in the WAL.
  std::string live =
      readFile(dir + "/edge.db") + readFile(dir + "/edge.db-wal") + readFile(dir + "/edge.db-shm");
  check(live, true);
  // After close SQLite checkpoints the WAL into the main file.
  store.reset();
  std::string closed = readFile(dir + "/edge.db") + readFile(dir + "/edge.db-wal");
  check(closed, true);

  // The prefix kept for a short config key is no more than a quarter of it.
  store = openOrDie(dir);
  auto rec = store->getClient("short");
  ASSERT_TRUE(rec.has_value());
  ASSERT_EQ(rec->keys.size(), 1u);
  EXPECT_LE(rec->keys[0].prefix.size(), short_key.size() / 4);
}

TEST(StoreTest, ReopenKeepsEverything) {
  std::string dir = freshDir();
  IssuedKey a, rotated;
  uint64_t v;
  {
    auto store = openOrDie(dir);
    a = registerOrDie(store.get(), "a", kInference | kWorker);
    registerOrDie(store.get(), "b");
    std::string error;
    ASSERT_TRUE(store->rotateKey("a", 120, &rotated, &error)) << error;
    ASSERT_TRUE(store->revokeClient("b", &error)) << error;
    ASSERT_TRUE(store->upsertConfigClient("cfg", "cfg-key-abcdefghijkl", kAdmin, &error)) << error;
    v = store->version();
    EXPECT_EQ(v, 5u);
  }
  auto store = openOrDie(dir);
  EXPECT_EQ(store->version(), v);
  auto recs = store->listClients();
  ASSERT_EQ(recs.size(), 3u);
  auto ra = store->getClient("a");
  ASSERT_TRUE(ra.has_value());
  EXPECT_EQ(ra->id, a.client.id);
  EXPECT_EQ(ra->scopes, kInference | kWorker);
  ASSERT_EQ(ra->keys.size(), 2u);
  EXPECT_EQ(ra->keys[0].sha256_hex, crypto::sha256Hex(a.key));
  EXPECT_EQ(ra->keys[0].expires_at, rotated.client.keys[0].expires_at);
  EXPECT_EQ(ra->keys[1].sha256_hex, crypto::sha256Hex(rotated.key));
  EXPECT_NE(store->getClient("b")->revoked_at, 0);
  EXPECT_EQ(store->getClient("cfg")->source, "config");

  // And it keeps counting from there.
  registerOrDie(store.get(), "c");
  EXPECT_EQ(store->version(), v + 1);
}

TEST(StoreTest, UpsertConfigClient) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  std::string error;
  const std::string key1 = "config-key-number-one-xyz";
  ASSERT_TRUE(store->upsertConfigClient("ops", key1, kInference | kAdmin, &error)) << error;
  EXPECT_EQ(store->version(), 1u);
  auto rec = store->getClient("ops");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->source, "config");
  EXPECT_EQ(rec->scopes, kInference | kAdmin);
  ASSERT_EQ(rec->keys.size(), 1u);
  EXPECT_EQ(rec->keys[0].sha256_hex, crypto::sha256Hex(key1));

  // Every start calls it again: no change, no version bump, also after a
  // reopen.
  ASSERT_TRUE(store->upsertConfigClient("ops", key1, kInference | kAdmin, &error)) << error;
  EXPECT_EQ(store->version(), 1u);
  store = openOrDie(dir);
  ASSERT_TRUE(store->upsertConfigClient("ops", key1, kInference | kAdmin, &error)) << error;
  EXPECT_EQ(store->version(), 1u);
  EXPECT_EQ(store->getClient("ops")->id, rec->id);

  // New scopes from the config are applied.
  ASSERT_TRUE(store->upsertConfigClient("ops", key1, kInference, &error)) << error;
  EXPECT_EQ(store->version(), 2u);
  EXPECT_EQ(store->getClient("ops")->scopes, kInference);

  // A new key replaces the old config key, which is revoked.
  const std::string key2 = "config-key-number-two-xyz";
  ASSERT_TRUE(store->upsertConfigClient("ops", key2, kInference, &error)) << error;
  EXPECT_EQ(store->version(), 3u);
  rec = store->getClient("ops");
  ASSERT_EQ(rec->keys.size(), 2u);
  EXPECT_EQ(rec->keys[0].sha256_hex, crypto::sha256Hex(key1));
  EXPECT_NE(rec->keys[0].revoked_at, 0);
  EXPECT_EQ(rec->keys[1].sha256_hex, crypto::sha256Hex(key2));
  EXPECT_EQ(rec->keys[1].revoked_at, 0);
  ASSERT_TRUE(store->upsertConfigClient("ops", key2, kInference, &error)) << error;
  EXPECT_EQ(store->version(), 3u);

  // While the config lists it, a config client is active again after a
  // revocation.
  ASSERT_TRUE(store->revokeClient("ops", &error)) << error;
  EXPECT_EQ(store->version(), 4u);
  ASSERT_TRUE(store->upsertConfigClient("ops", key2, kInference, &error)) << error;
  EXPECT_EQ(store->version(), 5u);
  rec = store->getClient("ops");
  EXPECT_EQ(rec->revoked_at, 0);
  EXPECT_EQ(rec->keys[1].revoked_at, 0);
  EXPECT_NE(rec->keys[0].revoked_at, 0);

  // The name of an API client is not taken over.
  registerOrDie(store.get(), "api-client");
  uint64_t v = store->version();
  EXPECT_FALSE(store->upsertConfigClient("api-client", "another-key-123456", kInference, &error));
  EXPECT_NE(error.find("registered through the API"), std::string::npos) << error;
  // One key cannot belong to two clients; the message does not repeat it.
  EXPECT_FALSE(store->upsertConfigClient("ops2", key2, kInference, &error));
  EXPECT_NE(error.find("already in use"), std::string::npos) << error;
  EXPECT_EQ(error.find(key2), std::string::npos);
  EXPECT_FALSE(store->getClient("ops2").has_value());
  // Bad input.
  EXPECT_FALSE(store->upsertConfigClient("ops", "", kInference, &error));
  EXPECT_FALSE(store->upsertConfigClient("ops", "with-newline\n", kInference, &error));
  EXPECT_EQ(error.find("with-newline"), std::string::npos);
  EXPECT_FALSE(store->upsertConfigClient("bad name", key2, kInference, &error));
  EXPECT_FALSE(store->upsertConfigClient("ops", key2, 0, &error));
  EXPECT_EQ(store->version(), v);
}

// A child registers clients in a loop and reports each name on a pipe only
// after registerClient returned true. The parent SIGKILLs it at a random
// moment, then every reported name must be in the reopened store. This
// checks that success is reported only after COMMIT and that WAL recovery
// keeps committed transactions; kill -9 leaves the page cache intact, so it
// does not simulate power loss (that rests on synchronous=FULL).
TEST(StoreTest, KillNineKeepsAcknowledgedRegistrations) {
  std::string dir = freshDir();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::fflush(nullptr);  // nothing buffered may be written twice
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest from here on, and _exit so no parent state is flushed.
    close(fds[0]);
    std::string error;
    std::unique_ptr<Store> store = Store::open(dir, &error);
    if (!store) _exit(2);
    for (int i = 0; i < 1000000; ++i) {
      std::string name = "k" + std::to_string(i);
      IssuedKey issued;
      bool conflict;
      if (!store->registerClient(name, "", kInference, ClientLimits{}, 0, &issued, &error,
                                 &conflict)) {
        _exit(3);
      }
      name.push_back('\n');
      if (write(fds[1], name.data(), name.size()) != static_cast<ssize_t>(name.size())) _exit(4);
    }
    _exit(0);
  }
  close(fds[1]);

  std::random_device rd;
  unsigned seed = rd();
  std::mt19937 rng(seed);
  int delay_ms = std::uniform_int_distribution<int>(20, 400)(rng);
  SCOPED_TRACE("seed " + std::to_string(seed) + ", kill after " + std::to_string(delay_ms) +
               " ms past the first acknowledgement");

  // Read acknowledgements as they come (so the child never blocks on a full
  // pipe); start the kill timer at the first one so the child is known to
  // be inside its loop, and give up waiting for it after 1.5 s.
  std::string received;
  auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point kill_at{};
  bool killed = false;
  char buf[4096];
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (!killed) {
      bool first_seen = received.find('\n') != std::string::npos;
      if (first_seen && kill_at == std::chrono::steady_clock::time_point{}) {
        kill_at = now + std::chrono::milliseconds(delay_ms);
      }
      if ((first_seen && now >= kill_at) || now - start > std::chrono::milliseconds(1500)) {
        kill(pid, SIGKILL);
        killed = true;
      }
    }
    struct pollfd p = {fds[0], POLLIN, 0};
    int r = poll(&p, 1, 5);
    if (r < 0) continue;
    if (r == 0) continue;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n > 0) {
      received.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;  // the child is gone and everything it wrote has been read
    }
  }
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child did not die by SIGKILL; status " << status;

  // Only complete lines count: a partial one was never fully acknowledged.
  std::vector<std::string> acked;
  std::istringstream lines(received);
  std::string line;
  while (std::getline(lines, line)) {
    if (!lines.eof()) acked.push_back(line);
  }
  ASSERT_FALSE(acked.empty()) << "the child acknowledged nothing";

  auto store = openOrDie(dir);
  ASSERT_NE(store, nullptr);
  for (const std::string& name : acked) {
    EXPECT_TRUE(store->getClient(name).has_value()) << name << " was acknowledged but is missing";
  }
  // At most one more: a commit may have finished just before the kill with
  // its acknowledgement not yet written.
  size_t present = store->listClients().size();
  std::printf("killed after %d ms: %zu acknowledged, %zu present\n", delay_ms, acked.size(),
              present);
  EXPECT_GE(present, acked.size());
  EXPECT_LE(present, acked.size() + 1);
  EXPECT_EQ(store->version(), present);
}

TEST(StoreTest, PluginsRoundTrip) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  std::string error;
  bool not_found = false;
  EXPECT_TRUE(store->listPlugins().empty());
  uint64_t v0 = store->version();

  PluginRecord p;
  p.id = "pii-redactor";
  p.type = "filter";
  p.valves_json = "{ \"mask\" : \"*\", \"n\": [1, 2] }";
  ASSERT_TRUE(store->upsertPlugin(p, &error)) << error;
  EXPECT_EQ(store->version(), v0 + 1);
  // The same again changes nothing.
  ASSERT_TRUE(store->upsertPlugin(p, &error)) << error;
  EXPECT_EQ(store->version(), v0 + 1);

  auto got = store->getPlugin("pii-redactor");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->name, "pii-redactor");  // defaults to the id
  EXPECT_EQ(got->type, "filter");
  EXPECT_FALSE(got->enabled);
  EXPECT_EQ(got->valves_json, "{\"mask\":\"*\",\"n\":[1,2]}");  // stored compact

  PluginRecord out;
  ASSERT_TRUE(store->setPluginEnabled("pii-redactor", true, &out, &error, &not_found)) << error;
  EXPECT_TRUE(out.enabled);
  EXPECT_EQ(store->version(), v0 + 2);
  // Enabling an enabled plugin is not a change.
  ASSERT_TRUE(store->setPluginEnabled("pii-redactor", true, &out, &error, &not_found)) << error;
  EXPECT_EQ(store->version(), v0 + 2);

  ASSERT_TRUE(store->setPluginValves("pii-redactor", "{\"mask\":\"#\"}", &out, &error, &not_found))
      << error;
  EXPECT_EQ(out.valves_json, "{\"mask\":\"#\"}");
  EXPECT_TRUE(out.enabled);
  EXPECT_EQ(store->version(), v0 + 3);

  // Errors: unknown plugin, not an object, not JSON, trailing garbage.
  EXPECT_FALSE(store->setPluginEnabled("nope", true, &out, &error, &not_found));
  EXPECT_TRUE(not_found);
  EXPECT_NE(error.find("nope"), std::string::npos);
  EXPECT_FALSE(store->setPluginValves("nope", "{}", &out, &error, &not_found));
  EXPECT_TRUE(not_found);
  for (const char* bad : {"[1]", "\"x\"", "{", "{} {}", "", "{\"a\":1,}"}) {
    not_found = true;
    EXPECT_FALSE(store->setPluginValves("pii-redactor", bad, &out, &error, &not_found)) << bad;
    EXPECT_FALSE(not_found) << bad;
  }
  EXPECT_EQ(store->version(), v0 + 3);

  PluginRecord bad_id;
  bad_id.id = "has space";
  bad_id.type = "filter";
  EXPECT_FALSE(store->upsertPlugin(bad_id, &error));
  bad_id.id = "ui";  // GET /api/v1/plugins/ui is the chat's list
  EXPECT_FALSE(store->upsertPlugin(bad_id, &error));
  EXPECT_NE(error.find("reserved"), std::string::npos) << error;
  PluginRecord bad_type;
  bad_type.id = "x";
  EXPECT_FALSE(store->upsertPlugin(bad_type, &error));

  // Everything is still there after a reopen.
  store.reset();
  store = openOrDie(dir);
  auto all = store->listPlugins();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(all[0].enabled);
  EXPECT_EQ(all[0].valves_json, "{\"mask\":\"#\"}");
  EXPECT_EQ(store->version(), v0 + 3);
}

TEST(StoreTest, MigratesASchemaOneDatabase) {
  std::string dir = freshDir();
  {
    auto store = openOrDie(dir);
    registerOrDie(store.get(), "kept");
  }
  // Turn it back into what release 1 wrote: no plugins or logouts table,
  // no clients.tools, schema 1.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir + "/edge.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DROP TABLE plugins; DROP TABLE logged_out_sessions; ALTER TABLE "
                           "clients DROP COLUMN tools; UPDATE meta SET value = 1 WHERE key = "
                           "'schema_version';",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = openOrDie(dir);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->getClient("kept").has_value());
  EXPECT_TRUE(store->getClient("kept")->limits.tools.empty());
  EXPECT_EQ(store->version(), 1u);
  PluginRecord p;
  p.id = "after-migration";
  p.type = "pipe";
  std::string error;
  EXPECT_TRUE(store->upsertPlugin(p, &error)) << error;
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir + "/edge.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &st,
                                 nullptr),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(st, 0), 4);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
}

TEST(StoreTest, ListClientsCheckedReportsSuccess) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  registerOrDie(store.get(), "a");
  std::vector<ClientRecord> out;
  std::string error;
  ASSERT_TRUE(store->listClientsChecked(&out, &error)) << error;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].keys.size(), 1u);
}

std::string hexDigest(char fill) { return std::string(64, fill); }

TEST(StoreTest, LoggedOutSessionsAreKeptUntilTheyExpire) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  const int64_t now = 1'800'000'000;
  uint64_t v0 = store->version();
  size_t added = 0;
  std::string error;
  ASSERT_TRUE(store->addLoggedOutSessions(
      {{hexDigest('a'), now + 100},
       {hexDigest('b'), now + 50},
       {hexDigest('a'), now + 100},                             // again: kept once
       {hexDigest('c'), now},                                   // already expired
       {hexDigest('d'), now + kMaxSessionLifetimeSeconds + 1},  // longer than any session
       {"not-hex", now + 100},
       {std::string(64, 'G'), now + 100}},
      now, &added, &error))
      << error;
  EXPECT_EQ(added, 2u);
  EXPECT_EQ(store->version(), v0 + 1);
  std::vector<LoggedOutSession> out;
  ASSERT_TRUE(store->listLoggedOutSessions(now, &out, &error)) << error;
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].token_sha256_hex, hexDigest('b'));  // soonest expiry first
  EXPECT_EQ(out[1].token_sha256_hex, hexDigest('a'));

  // Nothing new: no version bump (and no snapshot rebuild for it).
  ASSERT_TRUE(store->addLoggedOutSessions({{hexDigest('a'), now + 100}}, now, &added, &error));
  EXPECT_EQ(added, 0u);
  EXPECT_EQ(store->version(), v0 + 1);

  // A reopened store has them; past its expiry one is no longer listed.
  store.reset();
  store = openOrDie(dir);
  ASSERT_TRUE(store->listLoggedOutSessions(now + 60, &out, &error)) << error;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].token_sha256_hex, hexDigest('a'));
}

TEST(StoreTest, LoggedOutSessionsAreBounded) {
  std::string dir = freshDir();
  auto store = openOrDie(dir);
  const int64_t now = 1'800'000'000;
  std::vector<LoggedOutSession> many;
  char buf[65];
  for (size_t i = 0; i < kMaxLoggedOutSessions; ++i) {
    snprintf(buf, sizeof buf, "%064zx", i);
    many.push_back({buf, now + 1000 + static_cast<int64_t>(i)});
  }
  size_t added = 0;
  std::string error;
  ASSERT_TRUE(store->addLoggedOutSessions(many, now, &added, &error)) << error;
  EXPECT_EQ(added, kMaxLoggedOutSessions);
  uint64_t v = store->version();
  // Full: one expiring sooner than every kept one is not taken...
  ASSERT_TRUE(store->addLoggedOutSessions({{hexDigest('e'), now + 10}}, now, &added, &error));
  EXPECT_EQ(added, 0u);
  EXPECT_EQ(store->version(), v);
  // ...one expiring later takes the place of the soonest.
  ASSERT_TRUE(store->addLoggedOutSessions({{hexDigest('f'), now + 2000000}}, now, &added, &error));
  EXPECT_EQ(added, 1u);
  std::vector<LoggedOutSession> out;
  ASSERT_TRUE(store->listLoggedOutSessions(now, &out, &error)) << error;
  ASSERT_EQ(out.size(), kMaxLoggedOutSessions);
  EXPECT_EQ(out.front().expires_at, now + 1001);
  EXPECT_EQ(out.back().token_sha256_hex, hexDigest('f'));
}

}  // namespace
}  // namespace eldric::controlplane
