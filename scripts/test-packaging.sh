#!/usr/bin/env bash
# The packaging files hold up: systemd accepts the unit without a single warning, and
# the example configuration passes the daemon's own check.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/tsugi-notifyd}
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Point ExecStart at the built binary (verify checks that it exists and runs).
sed "s|/usr/bin/tsugi-notifyd|$(realpath "$bin")|" packaging/systemd/tsugi-notifyd.service \
    > "$tmp/tsugi-notifyd.service"
if out=$(systemd-analyze verify "$tmp/tsugi-notifyd.service" 2>&1) && [ -z "$out" ]; then ok; else
    fail "systemd-analyze verify: $out"; fi
grep -q '^Type=notify$' packaging/systemd/tsugi-notifyd.service && ok || fail "unit is not Type=notify"
grep -q '^LimitNOFILE=' packaging/systemd/tsugi-notifyd.service && ok || fail "unit sets no LimitNOFILE"
for h in DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict; do
    grep -q "^$h$" packaging/systemd/tsugi-notifyd.service && ok || fail "unit lacks $h"; done

# The example config: valid once a secret is given (as the unit gives it).
echo "example-secret" > "$tmp/secret"
if TSUGI_NOTIFY_SECRET_FILE="$tmp/secret" "$bin" --config packaging/tsugi-notifyd.toml --check-config >/dev/null; then
    ok; else fail "packaging/tsugi-notifyd.toml does not pass --check-config"; fi
# Every key the daemon knows is documented in the example.
for key in $("$bin" --help | grep -oE -- '--[a-z-]+' | sed 's/^--//' | sort -u); do
    case $key in config|check-config|dev|help|version) continue;; esac
    name=${key//-/_}
    name=${name#redis_}   # [redis] url, password_file, ca_file
    grep -q "^#\? \?$name =" packaging/tsugi-notifyd.toml && ok || fail "example config lacks $name"
done
echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
