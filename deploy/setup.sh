#!/usr/bin/env bash
# Installs everything Eldric Edge needs to build, run its demo and run its
# tests on Debian 12, as root. Idempotent: when every package is already
# present it changes nothing and touches no network.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# Build: Bazel and the system libraries the data plane and control plane use.
build_pkgs=(
  bazel-bootstrap bazel-rules-java bazel-platforms g++ pkg-config
  libuv1-dev node-llhttp android-libboringssl-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libabsl-dev rapidjson-dev libgtest-dev libgmock-dev libnghttp2-dev
  libsqlite3-dev zlib1g-dev libtcmalloc-minimal4
  # The control plane's ACME client: libcurl (OpenSSL flavour, like the
  # libcrypto the control plane already links; never the data plane).
  libcurl4-openssl-dev libssl-dev
  # The sanitizer and fuzzing builds (.bazelrc's asan, ubsan, tsan and
  # fuzz configs; test/fuzz/run, test/sanitize): clang, its sanitizer
  # runtimes and libFuzzer.
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
  # test/format-check: every C++ file as .clang-format says.
  clang-format-14
)
# Demo and tests: real clients and tools the end-to-end tests drive.
test_pkgs=(
  # The plugin runtime: Debian's interpreter and pydantic (what plugins'
  # Valves are written with) and bubblewrap, the sandbox plugins run in.
  python3 python3-pydantic bubblewrap
  curl openssl ca-certificates procps psmisc iproute2 prometheus
  # systemd-analyze verifies the units; dpkg-deb and dpkg-shlibdeps build
  # the package (deploy/package/build-deb.sh).
  systemd dpkg-dev
  # Benchmark peers and load generators (test/bench/run); slowloris and
  # slow POST (test/e2e/slowhttp.test.mjs).
  nginx-light haproxy wrk nghttp2-client slowhttptest
  # TLS as a public scanner sees it (test/e2e/tls-scan.test.mjs).
  testssl.sh sslscan
  # An RFC 8555 CA for the ACME tests (test/e2e/acme.test.mjs) and its
  # DNS test server.
  pebble
  # The web chat's browser tests (playwright-core drives Debian's Chromium;
  # the font makes the screenshots readable).
  chromium fonts-dejavu-core
)
# Node.js with npm: machines of this kind come with a Node.js build that
# bundles npm (and conflicts with Debian's npm package); install Debian's
# only where there is none.
if ! command -v node >/dev/null 2>&1; then test_pkgs+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then test_pkgs+=(npm); fi

missing=()
for p in "${build_pkgs[@]}" "${test_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  # Packages such as nginx or prometheus would start their daemons on
  # install; the tests start their own, so keep the package scripts from
  # starting services for the duration of the install.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages: the official OpenAI SDK and friends for the black-box tests.
# `npm ci` installs exactly what the lockfile pins; skip it when the
# installed tree already matches the lockfile.
npm_install() {
  local dir=$1
  [ -f "$dir/package-lock.json" ] || return 0
  # npm writes node_modules/.package-lock.json after a complete install.
  if [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return 0
  fi
  echo "setup: npm ci in ${dir#$repo/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}
npm_install "$repo/test"
npm_install "$repo/webchat"

echo "setup: ok"
