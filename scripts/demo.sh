#!/usr/bin/env bash
# make demo: the daemon in development mode and a small tool page on PHP's built-in
# server, both on loopback. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
http_port=${DEMO_HTTP_PORT:-8080}
ws_port=${DEMO_WS_PORT:-2021}
ext=$PWD/target/release/libtsugi_websocket.so
daemon=$PWD/target/release/tsugi-notifyd
for f in "$ext" "$daemon"; do [ -e "$f" ] || { echo "demo: $f is missing: run make demo" >&2; exit 1; }; done

# DEMO_REDIS_URL=redis://127.0.0.1:6379/: the history in Redis, which outlives a
# restart of the daemon (the page then recovers what was sent meanwhile).
redis=()
[ -n "${DEMO_REDIS_URL:-}" ] && redis=(--redis-url "$DEMO_REDIS_URL")
"$daemon" --dev --url "ws://127.0.0.1:$ws_port" --metrics-bind off "${redis[@]}" &
daemon_pid=$!
TSUGI_DEMO_WS_URL="ws://127.0.0.1:$ws_port" TSUGI_DEMO_WWWROOT="http://127.0.0.1:$http_port" \
    php -d extension="$ext" -S "127.0.0.1:$http_port" -t php >/dev/null 2>&1 &
php_pid=$!
trap 'kill $daemon_pid $php_pid 2>/dev/null; wait 2>/dev/null' INT TERM EXIT

sleep 0.5
kill -0 $daemon_pid 2>/dev/null || { echo "demo: the daemon did not start (is port $ws_port free? set DEMO_WS_PORT)" >&2; exit 1; }
kill -0 $php_pid 2>/dev/null || { echo "demo: php -S did not start (is port $http_port free? set DEMO_HTTP_PORT)" >&2; exit 1; }
cat <<TXT

  tsugi-notify demo is running. Open these in two browser windows:

    http://127.0.0.1:$http_port/demo/?user=alice&room=lobby
    http://127.0.0.1:$http_port/demo/?user=bob&room=lobby

  and, in another room of the same link (it hears neither):
    http://127.0.0.1:$http_port/demo/?user=carol&room=kitchen

  Ctrl-C stops the daemon and the page server.

TXT
wait
