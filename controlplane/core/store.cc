// The Store's facade: scopes as text, and Store::open (on SQLite, see
// sqlite_store.cc). See store.h for the contract.

#include "controlplane/core/store.h"

#include <memory>
#include <string>

#include "controlplane/core/sqlite_store.h"

namespace eldric::controlplane {

std::string scopesToString(Scopes s) {
  std::string out;
  auto add = [&](Scope bit, const char* name) {
    if (s & static_cast<Scopes>(bit)) {
      if (!out.empty()) out.push_back(',');
      out += name;
    }
  };
  add(Scope::Inference, "inference");
  add(Scope::Admin, "admin");
  add(Scope::Worker, "worker");
  add(Scope::Router, "router");
  return out;
}

bool parseScopes(const std::string& text, Scopes* out) {
  Scopes result = 0;
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string token =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    // Spaces around names are allowed ("inference, admin"); empty names are
    // not, so "" and "inference,," are errors rather than silently nothing.
    size_t b = token.find_first_not_of(" \t");
    size_t e = token.find_last_not_of(" \t");
    token = b == std::string::npos ? "" : token.substr(b, e - b + 1);
    if (token == "inference") {
      result |= static_cast<Scopes>(Scope::Inference);
    } else if (token == "admin") {
      result |= static_cast<Scopes>(Scope::Admin);
    } else if (token == "worker") {
      result |= static_cast<Scopes>(Scope::Worker);
    } else if (token == "router") {
      result |= static_cast<Scopes>(Scope::Router);
    } else {
      return false;
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  *out = result;
  return true;
}

std::unique_ptr<Store> Store::open(const std::string& data_dir, std::string* error) {
  return internal::openSqliteStore(data_dir, error);
}

}  // namespace eldric::controlplane
