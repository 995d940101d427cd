"""eldric_fuzz_target: one libFuzzer harness.

Under `--config=fuzz` (clang-14, ASan + UBSan, --define=eldric_fuzz=1) it
links libFuzzer's main; otherwise a small driver (standalone_main.cc) that
runs the harness once over each file or folder named on its command line,
so that the corpus can be replayed by any build, gcc's included. Not
tagged "manual": `bazel build //...` builds every harness, so a change
that breaks one fails the ordinary build (it once went unnoticed for
weeks). They are binaries, not tests: `bazel test //...` runs none; see
test/fuzz/run.
"""

def eldric_fuzz_target(name, srcs, deps = [], **kwargs):
    native.cc_binary(
        name = name,
        srcs = srcs,
        testonly = True,
        copts = ["-Wall", "-Wextra", "-Wno-unused-parameter"],
        deps = deps + ["//test/fuzz:fuzz_util"] + select({
            "//test/fuzz:fuzzing": [],
            "//conditions:default": ["//test/fuzz:standalone_main"],
        }),
        linkopts = select({
            "//test/fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        tags = ["fuzz"],
        **kwargs
    )
