#!/usr/bin/env bash
# Builds eldric-edge_<version>_amd64.deb with dpkg-deb from the Bazel
# outputs: eldric-edge, eldric-controlplane, eldricctl and eldric-tunnel in /usr/bin, the
# systemd units, the example config as /etc/eldric/edge.json (a conffile),
# the Prometheus alert rules, and maintainer scripts that create the
# `eldric` system user and a self-signed certificate for a first start.
#
#   bash deploy/package/build-deb.sh [--bin-dir DIR] [--out DIR] [--version V]
#
# --bin-dir: the bazel-bin tree to take the binaries from (default: the
# repo's bazel-bin; they must be built: bazel build //dataplane:eldric-edge
# //controlplane:eldric-controlplane //controlplane:eldricctl
# //dataplane/tunnel_agent:eldric-tunnel). --out: where
# the .deb goes (default: the repo's dist/). Prints the .deb's path last.
# Depends: is computed with dpkg-shlibdeps from the binaries' libraries.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=$repo/bazel-bin
out=$repo/dist
version=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --bin-dir=*) bin_dir=${1#*=}; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --version) version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -z "$version" ]; then
  # 0~git<commit time>.<hash>: orders by commit time and stays below any
  # future release 0.x or 1.x.
  if git -C "$repo" rev-parse HEAD >/dev/null 2>&1; then
    version="0~git$(git -C "$repo" log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$(git -C "$repo" rev-parse --short=8 HEAD)"
  else
    version="0~dev"
  fi
fi
arch=$(dpkg --print-architecture)
pkg=eldric-edge

bins=(dataplane/eldric-edge controlplane/eldric-controlplane controlplane/eldricctl dataplane/tunnel_agent/eldric-tunnel)
for b in "${bins[@]}"; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "build-deb: $bin_dir/$b is missing: bazel build //dataplane:eldric-edge //controlplane:eldric-controlplane //controlplane:eldricctl //dataplane/tunnel_agent:eldric-tunnel" >&2
    exit 1
  fi
done

work=$(mktemp -d /tmp/eldric-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/eldric" \
  "$root/usr/share/doc/$pkg" "$root/usr/share/$pkg/prometheus"

for b in "${bins[@]}"; do
  install -m 0755 "$bin_dir/$b" "$root/usr/bin/$(basename "$b")"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$(basename "$b")"
done
install -m 0644 "$repo/deploy/systemd/eldric-edge.service" "$repo/deploy/systemd/eldric-controlplane.service" \
  "$repo/deploy/systemd/eldric-tunnel.service" \
  "$root/lib/systemd/system/"

# The example config, made to start as it is on a single host: the
# certificate postinst makes (replace it with a real one and `systemctl
# reload eldric-edge`), a router on this host (the example's router1/router2
# and controller do not resolve here, and an unresolvable router is a
# config error at start), and none of the example's well-known keys (an
# admin key anyone can read must not open a fresh install).
sed -e 's|"cert_file": "/etc/ssl/cert.pem"|"cert_file": "/etc/eldric/tls/cert.pem"|' \
    -e 's|"key_file": "/etc/ssl/key.pem"|"key_file": "/etc/eldric/tls/key.pem"|' \
    -e 's|^\(\s*\)"http://router1:8881",\s*$|\1"http://127.0.0.1:8881"      // an Eldric router on this host; list yours|' \
    -e '/^\s*"http:\/\/router2:8881"\s*$/d' \
    -e '/^\s*"controller_url": /d' \
    -e '/^\s*"sk-[a-z-]*-key[a-z-]*": /d' \
    "$repo/deploy/edge.example.json" >"$root/etc/eldric/edge.json"
if ! grep -q '"cert_file": "/etc/eldric/tls/cert.pem"' "$root/etc/eldric/edge.json" ||
   ! grep -q '"http://127.0.0.1:8881"' "$root/etc/eldric/edge.json" ||
   grep -qE '"sk-|router1|"controller_url"' "$root/etc/eldric/edge.json"; then
  echo "build-deb: deploy/edge.example.json changed shape; update the rewrite in $0" >&2
  exit 1
fi
chmod 0640 "$root/etc/eldric/edge.json"
install -m 0644 "$repo/deploy/prometheus/eldric-alerts.yml" "$root/usr/share/$pkg/prometheus/"
install -m 0644 "$repo/README.md" "$root/usr/share/doc/$pkg/README.md"
cat >"$root/usr/share/doc/$pkg/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: eldric-edge
Comment: Built from the Eldric Edge repository with deploy/package/build-deb.sh.

Files: *
Copyright: 2026 Eldric Edge authors
License: proprietary
 Not for redistribution outside the Eldric project.
COPY
# lintian: what is deliberate.
install -d -m 0755 "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/$pkg" <<'OVR'
# BoringSSL is Debian's android-libboringssl, whose libraries live in
# /usr/lib/x86_64-linux-gnu/android (not on the loader's path): the rpath
# is how the Edge finds them beside OpenSSL 3.
eldric-edge: custom-library-search-path RUNPATH /usr/lib/x86_64-linux-gnu/android [usr/bin/eldric-edge]
# The config holds API keys: root and the eldric group only.
eldric-edge: non-standard-file-perm 0640 != 0644 [etc/eldric/edge.json]
OVR
chmod 0644 "$root/usr/share/lintian/overrides/$pkg"
printf '%s (%s) unstable; urgency=medium\n\n  * Built from the repository (deploy/package/build-deb.sh).\n\n -- Eldric Edge authors <edge@eldric.invalid>  %s\n' \
  "$pkg" "$version" "$(date -R -u -d "@$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)")" |
  gzip -9n >"$root/usr/share/doc/$pkg/changelog.gz"

# Depends: from the libraries the binaries link (BoringSSL is Debian's
# android-libboringssl, found through the binaries' rpath).
mkdir -p "$work/shl/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/shl/debian/control"
shlibs=$(cd "$work/shl" && dpkg-shlibdeps -O -l/usr/lib/x86_64-linux-gnu/android \
  "$root/usr/bin/eldric-edge" "$root/usr/bin/eldric-controlplane" "$root/usr/bin/eldricctl" \
  "$root/usr/bin/eldric-tunnel" 2>"$work/shlibdeps.log" |
  sed -n 's/^shlibs:Depends=//p')
if [ -z "$shlibs" ]; then
  echo "build-deb: dpkg-shlibdeps found no dependencies:" >&2; cat "$work/shlibdeps.log" >&2; exit 1
fi
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<CTRL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: Eldric Edge authors <edge@eldric.invalid>
Installed-Size: $size
Depends: $shlibs, adduser, openssl
Recommends: python3, python3-pydantic, bubblewrap
Section: net
Priority: optional
Homepage: https://eldric.invalid/edge
Description: TLS front door of an Eldric LLM cluster
 eldric-edge terminates TLS and streams OpenAI-compatible traffic
 (/v1/chat/completions, /v1/models, SSE) to the cluster's routers,
 balancing and health-checking them, with API keys, rate limits and a
 web chat. eldric-controlplane and eldricctl run a farm of Edges;
 eldric-tunnel serves a model server behind NAT through an Edge.
 .
 Ships systemd units (eldric-edge.service, enabled and started on
 install; eldric-controlplane.service and eldric-tunnel.service,
 installed disabled), the example
 configuration as /etc/eldric/edge.json and Prometheus alert rules in
 /usr/share/eldric-edge/prometheus/.
CTRL
echo "/etc/eldric/edge.json" >"$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
