#pragma once

// The application log: one JSON object per line on stderr. Never pass a
// secret (an API key, a cookie, a private key) as a field.

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace eldric::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void setLevel(Level level);
bool parseLevel(std::string_view name, Level* out);
bool enabled(Level level);

// A field value already rendered as JSON (use str() for strings).
struct Field {
  std::string_view key;
  std::string json;
};
std::string str(std::string_view s);
inline std::string num(long long v) { return std::to_string(v); }

void write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::Debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::Info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::Warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::Error, m, f);
}

// Appends `s` to `out` as a JSON string literal (with quotes).
void appendJsonString(std::string& out, std::string_view s);

}  // namespace eldric::log
