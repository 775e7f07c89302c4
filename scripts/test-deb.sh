#!/usr/bin/env bash
# Installs the Debian package with dpkg -i (after purging any earlier install), checks
# that PHP loads the extension, that systemd accepts the unit and that the daemon runs
# from the package, then purges it again so nothing is left enabled on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:?usage: test-deb.sh PACKAGE.deb}
name=$(dpkg-deb -f "$deb" Package)
short=${name#tsugi-notify-php}
php=php$short
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
[ "$(id -u)" -eq 0 ] && sudo=() || sudo=(sudo)

purge() { "${sudo[@]}" dpkg --purge "$name" >/dev/null 2>&1 || true; }
purge
trap purge EXIT
"${sudo[@]}" dpkg -i "$deb" >/dev/null

$php -m | grep -x tsugi_websocket >/dev/null && ok || fail "$php -m does not list tsugi_websocket"
$php -r 'echo (new ReflectionClass("Tsugi\\Core\\WebSocket"))->isInternal() ? "ok" : "no";' | grep -qx ok \
    && ok || fail "Tsugi\\Core\\WebSocket is not the native class"
$php --ri tsugi_websocket | grep "enabled => no" >/dev/null && ok || fail "php --ri tsugi_websocket"
if out=$(systemd-analyze verify /lib/systemd/system/tsugi-notifyd.service 2>&1) && [ -z "$out" ]; then ok
else fail "systemd-analyze verify: $out"; fi
[ -f /etc/tsugi-notify/tsugi-notifyd.toml ] && ok || fail "no example config"
getent group tsugi-notify >/dev/null && ok || fail "no group tsugi-notify (the unit's SupplementaryGroups)"

# The packaged daemon serves.
port=$($php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo explode(":", stream_socket_get_name($s, false))[1];')
/usr/bin/tsugi-notifyd --dev --url "ws://127.0.0.1:$port" --metrics-bind off 2>/dev/null &
pid=$!
health=""
for _ in $(seq 50); do
    health=$($php -r "echo @file_get_contents('http://127.0.0.1:$port/healthz');" || true)
    [ "$health" = ok ] && break
    sleep 0.1
done
[ "$health" = ok ] && ok || fail "the packaged daemon did not answer /healthz"
# The packaged doctor, on a site pointing at it: every check passes, publish() included.
site=$(mktemp -d)
cat > "$site/config.php" <<PHP
<?php
\$CFG = new stdClass;
\$CFG->wwwroot = 'http://127.0.0.1/tsugi';
\$CFG->websocket_url = 'ws://127.0.0.1:$port';
\$CFG->websocket_secret = 'opensource';
PHP
if out=$(/usr/bin/tsugi-notify-doctor --allow-root --php "$php" "$site/config.php" 2>&1) \
    && grep -q '^ok   publish: ' <<<"$out"; then ok
else fail "tsugi-notify-doctor on the packaged daemon: $out"; fi
rm -rf "$site"
kill "$pid"; wait "$pid" 2>/dev/null || true
token=$(/usr/bin/tsugi-notifyd --dev token mint --link 1 --user 2)
/usr/bin/tsugi-notifyd --dev token verify "$token" | grep "^valid" >/dev/null && ok || fail "token mint/verify"

purge
trap - EXIT
if $php -m | grep -x tsugi_websocket >/dev/null; then fail "still enabled after purge"; else ok; fi
echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
