#pragma once

// Walks a command line of `--flag value` and `--flag=value` arguments: one
// mechanism for every binary (eldric-edge, eldric-controlplane), so they
// treat flags alike.

#include <string>
#include <vector>

namespace eldric::config {

class FlagParser {
 public:
  FlagParser(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // Moves to the next argument; `*name` is the flag without any "=value".
  bool next(std::string* name) {
    if (++i_ >= argc_) return false;
    name_ = argv_[i_];
    has_inline_ = false;
    if (size_t eq = name_.find('='); name_.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value_ = name_.substr(eq + 1);
      name_.resize(eq);
      has_inline_ = true;
    }
    *name = name_;
    return true;
  }

  // Every argument after the current one (what follows "--"); the walk
  // ends there.
  std::vector<std::string> rest() {
    std::vector<std::string> out;
    while (++i_ < argc_) out.emplace_back(argv_[i_]);
    return out;
  }

  // The current flag's value: after '=' or the next argument. False with
  // `*error` naming the flag when there is none or it is empty.
  bool value(std::string* out, std::string* error) {
    if (has_inline_) {
      *out = inline_value_;
    } else if (i_ + 1 < argc_) {
      *out = argv_[++i_];
    } else {
      *error = "flag " + name_ + " needs a value";
      return false;
    }
    if (out->empty()) {
      *error = "flag " + name_ + " needs a non-empty value";
      return false;
    }
    return true;
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string name_;
  std::string inline_value_;
  bool has_inline_ = false;
};

}  // namespace eldric::config
