"""Repositories for Debian's system packages, so the build runs offline.

Bazel 4.2.3 (Debian's bazel-bootstrap) cannot reach the Bazel Central
Registry here. Each rule below makes a small repository out of files a
Debian package installed, or out of nothing where Bazel only needs a name
to exist.
"""

def _rules_cc_shim_impl(ctx):
    # Debian's bazel-rules-cc is too new for Bazel 4.2.3; @bazel_tools only
    # needs the native rules under rules_cc's names.
    ctx.file("WORKSPACE", "workspace(name = \"rules_cc\")\n")
    ctx.file("BUILD", "")
    ctx.file("cc/BUILD", "")
    ctx.file("cc/defs.bzl", "\n".join([
        "cc_library = native.cc_library",
        "cc_binary = native.cc_binary",
        "cc_test = native.cc_test",
        "cc_toolchain = native.cc_toolchain",
        "cc_toolchain_suite = native.cc_toolchain_suite",
        "cc_import = native.cc_import",
        "cc_proto_library = native.cc_proto_library",
        "",
    ]))

_rules_cc_shim = repository_rule(implementation = _rules_cc_shim_impl)

def _coverage_tools_impl(ctx):
    # `bazel test` asks for these targets even when coverage is off.
    ctx.file("WORKSPACE", "workspace(name = \"remote_coverage_tools\")\n")
    ctx.file("BUILD", "\n".join([
        "package(default_visibility = [\"//visibility:public\"])",
        "filegroup(name = \"coverage_report_generator\", srcs = [])",
        "filegroup(name = \"lcov_merger\", srcs = [])",
        "",
    ]))

_coverage_tools = repository_rule(implementation = _coverage_tools_impl)

def _llhttp_impl(ctx):
    # node-llhttp ships llhttp's generated C sources; compile them ourselves.
    for f in ["api.c", "http.c", "llhttp.c"]:
        ctx.symlink("/usr/share/llhttp/" + f, "src/" + f)
    ctx.symlink("/usr/share/include/llhttp/llhttp.h", "include/llhttp.h")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
cc_library(
    name = "llhttp",
    srcs = glob(["src/*.c"]),
    hdrs = ["include/llhttp.h"],
    includes = ["include"],
    # The strict build of llhttp's state machine: no lenient paths compiled
    # in (the lenient flags stay off at run time as well).
    defines = ["LLHTTP_STRICT_MODE=1"],
    copts = ["-O2", "-w"],
)
""")

_llhttp = repository_rule(implementation = _llhttp_impl, local = True)

_ANDROID_LIB = "/usr/lib/x86_64-linux-gnu/android"

def _boringssl_impl(ctx):
    # android-libboringssl-dev: headers under /usr/include/android, shared
    # libraries under a private directory, hence the rpath.
    ctx.symlink("/usr/include/android/openssl", "include/openssl")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
cc_library(
    name = "ssl",
    hdrs = glob(["include/openssl/*.h"]),
    includes = ["include"],
    linkopts = [
        "{lib}/libssl.so",
        "{lib}/libcrypto.so",
        "-Wl,-rpath,{lib}",
    ],
)
""".format(lib = _ANDROID_LIB))

_boringssl = repository_rule(implementation = _boringssl_impl, local = True)

_SYSTEM_BUILD = """
package(default_visibility = ["//visibility:public"])

# Headers live in /usr/include, which the auto-configured toolchain already
# searches; each target only adds the link flags.
cc_library(name = "uv", linkopts = ["-luv"])
cc_library(name = "protobuf", linkopts = ["-lprotobuf", "-lpthread"])
cc_library(name = "nghttp2", linkopts = ["-lnghttp2"])
cc_library(name = "sqlite3", linkopts = ["-lsqlite3"])
# OpenSSL 3 (libssl-dev) for the control plane only, which has it through
# gRPC anyway; the Edge uses @boringssl. libcurl (libcurl4-openssl-dev) is
# the control plane's ACME client transport.
cc_library(name = "openssl", linkopts = ["-lssl", "-lcrypto"])
cc_library(name = "curl", linkopts = ["-lcurl"])
cc_library(name = "zlib", linkopts = ["-lz"])
cc_library(name = "rapidjson")
# gperftools' tcmalloc (libtcmalloc-minimal4), as Envoy links tcmalloc: the
# request path allocates small objects per request, and glibc's malloc spent
# ~11% of the data plane's user-space instructions on them. The binary calls
# no tcmalloc function, so keep the linker from dropping it as unneeded; the
# runtime package has no unversioned .so, hence -l:.
#
# Sanitizer builds (.bazelrc's asan, ubsan, tsan, fuzz configs) leave it
# out: ASan and TSan replace malloc themselves, and a second allocator
# beside theirs hides the very errors they look for.
config_setting(
    name = "sanitized",
    define_values = {"eldric_sanitizer": "1"},
)
cc_library(
    name = "tcmalloc",
    linkopts = select({
        ":sanitized": [],
        "//conditions:default": [
            "-Wl,--push-state,--no-as-needed",
            "-l:libtcmalloc_minimal.so.4",
            "-Wl,--pop-state",
        ],
    }),
)
cc_library(
    name = "absl",
    linkopts = [
        "-labsl_strings",
        "-labsl_strings_internal",
        "-labsl_str_format_internal",
        "-labsl_int128",
        "-labsl_throw_delegate",
        "-labsl_raw_logging_internal",
        "-labsl_base",
        "-labsl_spinlock_wait",
        "-labsl_hash",
        "-labsl_city",
        "-labsl_low_level_hash",
        "-labsl_raw_hash_set",
        "-labsl_status",
        "-labsl_statusor",
        "-labsl_cord",
        "-labsl_cord_internal",
        "-labsl_cordz_info",
        "-labsl_cordz_handle",
        "-labsl_cordz_functions",
        "-labsl_exponential_biased",
        "-labsl_synchronization",
        "-labsl_graphcycles_internal",
        "-labsl_stacktrace",
        "-labsl_symbolize",
        "-labsl_debugging_internal",
        "-labsl_demangle_internal",
        "-labsl_malloc_internal",
        "-labsl_time",
        "-labsl_time_zone",
        "-labsl_civil_time",
    ],
)
cc_library(name = "grpcpp", linkopts = ["-lgrpc++", "-lgrpc", "-lgpr"])
cc_library(name = "gtest", linkopts = ["-lgtest", "-lpthread"])
cc_library(name = "gtest_main", linkopts = ["-lgtest_main", "-lgtest", "-lpthread"])
cc_library(name = "gmock", linkopts = ["-lgmock", "-lgtest", "-lpthread"])
"""

def _system_impl(ctx):
    ctx.file("WORKSPACE", "workspace(name = \"system\")\n")
    ctx.file("BUILD", _SYSTEM_BUILD)

_system = repository_rule(implementation = _system_impl)

def eldric_system_deps():
    _rules_cc_shim(name = "rules_cc")
    _coverage_tools(name = "remote_coverage_tools")
    _llhttp(name = "llhttp")
    _boringssl(name = "boringssl")
    _system(name = "system")
