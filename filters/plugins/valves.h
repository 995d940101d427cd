#pragma once

// Checks valves an operator PUTs against the JSON schema the running
// plugin reported (pydantic's, v1 or v2, or the host's for a plain
// class): the subset that names a wrong field before anything is stored.
// An unknown field, a value of the wrong JSON type, a value outside an
// enum, or a required field left out is refused, naming the field. What
// the schema says beyond that (string formats, ranges, validators) is the
// plugin's own check when the valves reach it. Both inputs are untrusted
// (the schema comes from plugin code), so this never recurses into them
// deeper than a fixed bound.

#include <string>
#include <string_view>

namespace eldric::filters::plugins {

// True if `valves_json` fits `schema_json`, or is not a JSON object (not
// this check's to refuse: the admin API says what is wrong with it). An
// empty or "{}" schema accepts any object. Otherwise false with `*error` (words
// for the client: the field and what was expected, never the value) and
// `*field`.
bool validateValves(std::string_view schema_json, std::string_view valves_json, std::string* error,
                    std::string* field);

}  // namespace eldric::filters::plugins
