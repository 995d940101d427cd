# Helpers to build and enter a Debian 12 (bookworm) root with debootstrap,
# from Debian's packages only. Sourced by test/node18-check and
# test/debian12-check; run as root.
#
#   debian12_root DIR [PKG...]   debootstrap DIR (once; reused when it holds a
#                                finished root), carry the host's CA and apt
#                                proxy settings in, apt-get install PKG...
#   debian12_mount DIR           /proc, /sys, /dev, /dev/pts, /dev/shm into DIR
#   debian12_umount DIR          undoes debian12_mount (safe to call twice)
#   debian12_chroot DIR CMD...   runs CMD in DIR with a clean environment
#   debian12_kill_procs DIR      SIGKILLs, by pid, the processes whose root
#                                is DIR (what a check left running there)
#
# DEBIAN_MIRROR overrides the mirror (default: the host's first Debian URI,
# else http://deb.debian.org/debian). Downloaded .debs are kept in
# /var/cache/eldric-debootstrap so that a second root costs no download.

debian12_log() { echo "[debian12 $(date -u +%H:%M:%S)] $*" >&2; }

debian12_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
  [ -n "$m" ] || m=$(grep -hE '^deb .*/debian/? bookworm ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

debian12_need_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  debian12_log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; }
}

debian12_mount() {
  local d=$1 m
  # The root a mount point of its own: then / is one inside the chroot, as
  # on a real machine, and `unshare --mount` works there (e2e/dns needs it).
  mountpoint -q "$d" || mount --bind "$d" "$d"
  for m in proc sys dev dev/pts dev/shm; do mkdir -p "$d/$m"; done
  mountpoint -q "$d/proc" || mount -t proc proc "$d/proc"
  mountpoint -q "$d/sys" || mount --rbind /sys "$d/sys"
  mountpoint -q "$d/dev" || mount --bind /dev "$d/dev"
  mountpoint -q "$d/dev/pts" || mount --bind /dev/pts "$d/dev/pts"
  mountpoint -q "$d/dev/shm" || mount -t tmpfs shm "$d/dev/shm"
}

debian12_kill_procs() {
  local d p r
  d=$(readlink -f "$1")
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$r" = "$d" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  true
}

debian12_umount() {
  local d=$1 m
  # Deepest first; lazy so that a process still exiting does not keep it.
  for m in $(awk -v d="$(readlink -f "$d")" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

debian12_chroot() {
  local d=$1; shift
  env -i HOME=/root TERM=dumb LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    ${CI:+CI=$CI} chroot "$d" "$@"
}

debian12_root() {
  local d=$1; shift
  local cache=/var/cache/eldric-debootstrap
  debian12_need_debootstrap || return 1
  mkdir -p "$cache" "$d"
  if [ ! -e "$d/.eldric-debootstrap-done" ]; then
    debian12_log "debootstrap bookworm into $d from $(debian12_mirror)"
    debootstrap --variant=minbase --cache-dir="$cache" bookworm "$d" "$(debian12_mirror)" \
      >"$d.debootstrap.log" 2>&1 || { debian12_log "debootstrap failed; see $d.debootstrap.log"; tail -n 20 "$d.debootstrap.log" >&2; return 1; }
    touch "$d/.eldric-debootstrap-done"
  fi
  # Debian's own sources, nothing else (a stock machine).
  local mirror; mirror=$(debian12_mirror)
  cat >"$d/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security} bookworm-security main
SRC
  # The host's extra CAs (a TLS-inspecting egress, a company CA) and apt
  # proxy settings, if it has any: the root reaches the same registries the
  # same way as the host.
  if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    mkdir -p "$d/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$d/usr/local/share/ca-certificates/"
  fi
  local f
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qiE 'proxy|Check-Valid-Until' "$f" && cp "$f" "$d/etc/apt/apt.conf.d/"
  done
  [ -f /etc/npmrc ] && cp /etc/npmrc "$d/etc/npmrc"
  cp /etc/resolv.conf "$d/etc/resolv.conf" 2>/dev/null || true
  # debootstrap writes no /etc/hosts; an installed Debian has one (tests
  # and clients use "localhost").
  if [ ! -s "$d/etc/hosts" ]; then
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$d/etc/hosts"
  fi
  # Daemons in packages must not start inside the root.
  printf '#!/bin/sh\nexit 101\n' >"$d/usr/sbin/policy-rc.d"; chmod +x "$d/usr/sbin/policy-rc.d"
  debian12_mount "$d"
  if [ ! -e "$d/.eldric-apt-updated" ] || [ "$#" -gt 0 ]; then
    debian12_log "apt-get update in the root"
    debian12_chroot "$d" apt-get update -q >/dev/null || { debian12_log "apt-get update failed in the root"; return 1; }
    touch "$d/.eldric-apt-updated"
  fi
  debian12_chroot "$d" apt-get install -y -q --no-install-recommends ca-certificates >/dev/null &&
    debian12_chroot "$d" update-ca-certificates >/dev/null 2>&1
  if [ "$#" -gt 0 ]; then
    debian12_log "apt-get install in the root: $*"
    debian12_chroot "$d" apt-get install -y -q --no-install-recommends "$@" >"$d.apt.log" 2>&1 ||
      { debian12_log "apt-get install failed; see $d.apt.log"; tail -n 20 "$d.apt.log" >&2; return 1; }
  fi
}
