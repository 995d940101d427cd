#!/usr/bin/env bash
# Runs INSIDE a Debian 12 root (test/package-check, test/debian12-check),
# as root, in a network namespace of its own (the Edge binds 0.0.0.0:443 as
# the shipped config says): installs the .deb with apt, checks what
# postinst made, then starts eldric-edge the way its unit does (user
# eldric, CAP_NET_BIND_SERVICE only, the unit's ExecStart) and asks it for
# /health over TLS on port 443; then removes and purges the package.
#
#   bash package-install-check.sh /path/to/eldric-edge_*.deb
#
# Prints "package: N passed, N failed" last.
set -uo pipefail
deb=$1
passed=0
failed=0
ok() { echo "ok   - $*"; passed=$((passed + 1)); }
bad() { echo "FAIL - $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -q "$deb" >/tmp/apt-install.log 2>&1; then
  ok "apt install ./$(basename "$deb")"
else
  bad "apt install ./$(basename "$deb")"; tail -n 30 /tmp/apt-install.log
  echo "package: $passed passed, $((failed)) failed"; exit 1
fi
check "dpkg says installed" sh -c "dpkg-query -W -f='\${Status}' eldric-edge | grep -q 'install ok installed'"
check "the eldric system user exists, without a shell" sh -c 'getent passwd eldric | grep -q ":/usr/sbin/nologin$" && [ "$(id -u eldric)" -lt 1000 ]'
check "/usr/bin/eldric-edge, eldric-controlplane, eldricctl run (--help)" sh -c \
  'eldric-edge --help && eldric-controlplane --help && eldricctl --help'
check "/etc/eldric/edge.json is a conffile, root:eldric 0640" sh -c \
  'dpkg-query -W -f="\${Conffiles}" eldric-edge | grep -q "/etc/eldric/edge.json" && [ "$(stat -c %U:%G:%a /etc/eldric/edge.json)" = root:eldric:640 ]'
check "postinst made a certificate, key root:eldric 0640" sh -c \
  'openssl x509 -noout -in /etc/eldric/tls/cert.pem && [ "$(stat -c %U:%G:%a /etc/eldric/tls/key.pem)" = root:eldric:640 ]'
check "state and log directories belong to eldric" sh -c \
  '[ "$(stat -c %U:%a /var/lib/eldric-edge)" = eldric:750 ] && [ "$(stat -c %U /var/lib/eldric-controlplane)" = eldric ] && [ "$(stat -c %U /var/log/eldric-edge)" = eldric ]'
check "the units are installed" test -f /lib/systemd/system/eldric-edge.service -a -f /lib/systemd/system/eldric-controlplane.service
check "eldric-edge.service is enabled (multi-user.target wants it)" test -L /etc/systemd/system/multi-user.target.wants/eldric-edge.service
check "eldric-controlplane.service is not enabled" test ! -e /etc/systemd/system/multi-user.target.wants/eldric-controlplane.service

# Start it as the unit does. No systemd runs in a root, so the unit's
# user, capability and command line are applied with setpriv; the rest of
# the sandboxing is systemd's and checked by systemd-analyze in the suite.
unit=/lib/systemd/system/eldric-edge.service
cmd=$(sed -n 's/^ExecStart=//p' "$unit" | sed 's/ \$ELDRIC_EDGE_OPTS//')
user=$(sed -n 's/^User=//p' "$unit")
ip link set lo up 2>/dev/null || true
setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=+net_bind_service \
  --ambient-caps=+net_bind_service $cmd >/tmp/edge.out 2>/tmp/edge.err &
pid=$!
up=0
for _ in $(seq 1 50); do
  if curl -sf --max-time 2 --cacert /etc/eldric/tls/cert.pem https://localhost/health >/tmp/health 2>/dev/null; then up=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if [ "$up" = 1 ]; then
  ok "the Edge starts as user $user with the shipped config and answers /health on 443 ($(head -c 80 /tmp/health))"
else
  bad "the Edge did not answer /health on 443 as user $user"; tail -n 5 /tmp/edge.err
fi
check "it runs as $user, not root" sh -c "[ \"\$(ps -o user= -p $pid)\" = $user ]"
check "port 80 redirects to HTTPS (308)" sh -c \
  "curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://localhost/v1/models | grep -q 308"
check "it wrote its state to /var/lib/eldric-edge" sh -c 'ls /var/lib/eldric-edge | grep -q .'
kill -HUP "$pid" 2>/dev/null; sleep 0.5
check "SIGHUP (ExecReload) reloads without exiting" kill -0 "$pid"
kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
wait "$pid"; rc=$?
if [ "$rc" = 0 ]; then ok "SIGTERM drains and exits 0"; else bad "SIGTERM: exit $rc"; kill -9 "$pid" 2>/dev/null; fi

check "apt remove" apt-get remove -y -q eldric-edge
check "the config stays after remove" test -f /etc/eldric/edge.json
check "apt purge" apt-get purge -y -q eldric-edge
check "purge removes config, state and certificate" sh -c '[ ! -e /etc/eldric/edge.json ] && [ ! -e /var/lib/eldric-edge ] && [ ! -e /etc/eldric/tls ]'

echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
