#include "dataplane/http/route.h"

namespace eldric::http {

std::string Route::allowedMethods() const {
  std::string out;
  for (const auto& m : methods) {
    if (!out.empty()) out += ", ";
    out += m;
  }
  return out;
}

bool Route::allows(std::string_view method) const {
  if (methods.empty()) return true;
  for (const auto& m : methods) {
    if (m == method) return true;
  }
  return false;
}

}  // namespace eldric::http
