#!/usr/bin/env bash
# make install-ext, staged into a temporary DESTDIR: the files land where the PHP of
# php-config expects them, and the staged extension loads through its ini line.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage scripts/install-ext.sh php-config >/dev/null
ext_dir=$(php-config --extension-dir)
short=$(php-config --version); short=${short%.*}
so=$stage$ext_dir/tsugi_websocket.so
ini=$stage/etc/php/$short/mods-available/tsugi_websocket.ini
[ -f "$so" ] || { echo "FAIL: $so not installed"; exit 1; }
[ -f "$ini" ] || { echo "FAIL: $ini not written"; exit 1; }
grep -qx 'extension=tsugi_websocket.so' "$ini" || { echo "FAIL: $ini has no extension line"; exit 1; }
out=$(php -n -d extension_dir="$stage$ext_dir" -c "$ini" -r \
    'echo extension_loaded("tsugi_websocket") && class_exists("Tsugi\\Core\\WebSocket", false) ? "ok" : "missing";')
[ "$out" = ok ] || { echo "FAIL: the staged extension did not load ($out)"; exit 1; }
echo "install-ext: 1 passed, 0 failed"
