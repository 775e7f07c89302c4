#!/usr/bin/env bash
# Builds the extension against the PHP that php-config describes, installs it into that
# PHP's extension directory and enables it (Debian: mods-available + phpenmod; other
# systems: the ini file goes into PHP's scan directory).
#
#   scripts/install-ext.sh [PHP_CONFIG]        (default: php-config on PATH)
#   DESTDIR=/tmp/stage scripts/install-ext.sh  (stage the files, enable nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

php_config=${1:-php-config}
command -v "$php_config" >/dev/null || { echo "install-ext: $php_config not found (install php-dev)" >&2; exit 1; }
php_bin=$("$php_config" --php-binary)
version=$("$php_config" --version)            # e.g. 8.2.36
short=${version%.*}                           # 8.2
ext_dir=$("$php_config" --extension-dir)
destdir=${DESTDIR:-}

# One target directory per PHP API: a .so only loads into the PHP it was built for.
echo "install-ext: building for PHP $version ($php_bin)"
if [ "$(command -v "$php_config")" = "$(command -v php-config 2>/dev/null)" ]; then
    target=target
    cargo build --release -p tsugi-websocket
else
    target=target/php-$("$php_config" --vernum)
    PHP_CONFIG=$(command -v "$php_config") PHP=$php_bin CARGO_TARGET_DIR=$target \
        cargo build --release -p tsugi-websocket
fi

install -d "$destdir$ext_dir"
install -m 0644 "$target/release/libtsugi_websocket.so" "$destdir$ext_dir/tsugi_websocket.so"
echo "install-ext: installed $destdir$ext_dir/tsugi_websocket.so"

mods=/etc/php/$short/mods-available
if [ -d "$mods" ] || [ -n "$destdir" ]; then
    install -d "$destdir$mods"
    install -m 0644 packaging/php/tsugi_websocket.ini "$destdir$mods/tsugi_websocket.ini"
    echo "install-ext: wrote $destdir$mods/tsugi_websocket.ini"
    if [ -z "$destdir" ] && command -v phpenmod >/dev/null; then
        phpenmod -v "$short" tsugi_websocket
        echo "install-ext: enabled with phpenmod -v $short tsugi_websocket (restart php-fpm / apache)"
    fi
else
    scan=$("$php_config" --ini-dir 2>/dev/null || true)
    if [ -n "$scan" ]; then
        install -d "$destdir$scan"
        install -m 0644 packaging/php/tsugi_websocket.ini "$destdir$scan/40-tsugi_websocket.ini"
        echo "install-ext: wrote $destdir$scan/40-tsugi_websocket.ini"
    else
        echo "install-ext: add 'extension=tsugi_websocket' to your php.ini"
    fi
fi

if [ -z "$destdir" ]; then
    "$php_bin" -m | grep -qx tsugi_websocket && echo "install-ext: $php_bin -m lists tsugi_websocket"
fi
