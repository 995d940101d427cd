#pragma once

// The Python plugin host (python/eldric_plugin_host.py), embedded.

namespace eldric::filters::plugins {

extern const char kHostScript[];

}  // namespace eldric::filters::plugins
