#!/usr/bin/env bash
# The PHP way of building from source (what PIE runs): from a clean copy of the tracked
# source, `cd ext && phpize && ./configure && make`, then check the module loads.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$copy/" 2>/dev/null || git archive HEAD | tar -x -C "$copy"
# Reuse one target directory across runs (its own: PHP_CONFIG differs from a plain build).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/phpize}
cd "$copy/ext"
phpize >/dev/null 2>&1
./configure --quiet
make >/dev/null
so=$PWD/modules/tsugi_websocket.so
[ -f "$so" ] || { echo "FAIL: no modules/tsugi_websocket.so"; exit 1; }
out=$(php -n -d extension="$so" -r 'echo extension_loaded("tsugi_websocket") && (new ReflectionClass("Tsugi\\Core\\WebSocket"))->isInternal() ? "ok" : "no";')
[ "$out" = ok ] || { echo "FAIL: the phpize-built module does not load ($out)"; exit 1; }
# make install stages it where PHP looks for extensions.
stage=$(mktemp -d)
make install INSTALL_ROOT="$stage" >/dev/null
[ -f "$stage$(php-config --extension-dir)/tsugi_websocket.so" ] || { echo "FAIL: make install"; rm -rf "$stage"; exit 1; }
rm -rf "$stage"
echo "phpize: 1 passed, 0 failed"
