#!/usr/bin/env bash
# Builds the Debian package tsugi-notify-php<X.Y>: the extension for that PHP (in its
# extension directory, with its mods-available ini), the daemon, its systemd unit and
# an example configuration. One package per PHP version: pick the one of your PHP.
#
#   scripts/build-deb.sh [EXT_SO] [PHP_CONFIG] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
so=${1:-target/release/libtsugi_websocket.so}
php_config=${2:-php-config}
out=${3:-target/deb}
daemon=target/release/tsugi-notifyd
doctor=target/release/tsugi-notify-doctor
for f in "$so" "$daemon" "$doctor"; do [ -f "$f" ] || { echo "build-deb: $f is missing (make build)" >&2; exit 1; }; done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
php_version=$("$php_config" --version); php_short=${php_version%.*}
php_api=$("$php_config" --phpapi 2>/dev/null || basename "$("$php_config" --extension-dir)")
ext_dir=$("$php_config" --extension-dir)
arch=$(dpkg --print-architecture)
name=tsugi-notify-php$php_short

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$daemon" "$stage/usr/bin/tsugi-notifyd"
install -D -m 0755 "$doctor" "$stage/usr/bin/tsugi-notify-doctor"
install -D -m 0644 "$so" "$stage$ext_dir/tsugi_websocket.so"
install -D -m 0644 packaging/php/tsugi_websocket.ini "$stage/etc/php/$php_short/mods-available/tsugi_websocket.ini"
install -D -m 0644 packaging/systemd/tsugi-notifyd.service "$stage/lib/systemd/system/tsugi-notifyd.service"
install -D -m 0644 packaging/systemd/tsugi-notify.sysusers "$stage/usr/lib/sysusers.d/tsugi-notify.conf"
install -D -m 0644 packaging/tsugi-notifyd.toml "$stage/etc/tsugi-notify/tsugi-notifyd.toml"
install -D -m 0644 README.md "$stage/usr/share/doc/$name/README.md"
install -D -m 0644 docs/token-format.md "$stage/usr/share/doc/$name/token-format.md"
install -D -m 0644 php/tsugi-notify.js "$stage/usr/share/$name/tsugi-notify.js"
strip --strip-unneeded "$stage/usr/bin/tsugi-notifyd" "$stage/usr/bin/tsugi-notify-doctor" "$stage$ext_dir/tsugi_websocket.so" 2>/dev/null || true
cat > "$stage/usr/share/doc/$name/copyright" <<TXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tsugi-notify
Files: *
License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
TXT

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<TXT
Package: $name
Version: $version
Architecture: $arch
Maintainer: tsugi-notify developers <tsugi-notify@localhost>
Installed-Size: $size
Depends: libc6, phpapi-$php_api
Conflicts: tsugi-notify
Provides: tsugi-notify
Replaces: tsugi-notify
Section: web
Priority: optional
Homepage: https://github.com/tsugiproject/tsugi-notify
Description: Tsugi notifications: native PHP extension and WebSocket daemon (PHP $php_short)
 The tsugi_websocket extension defines Tsugi\\Core\\WebSocket natively (signed,
 expiring notification tokens), and tsugi-notifyd replaces Tsugi's rachet.php: it
 checks tokens at the handshake and relays each message to the other browsers of
 the same link and room; tsugi-notify-doctor checks a site end to end and says
 what to fix. Built for PHP $php_short (API $php_api).
TXT
echo /etc/tsugi-notify/tsugi-notifyd.toml > "$stage/DEBIAN/conffiles"
echo "/etc/php/$php_short/mods-available/tsugi_websocket.ini" >> "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<TXT
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    if command -v phpenmod >/dev/null 2>&1; then phpenmod -v $php_short tsugi_websocket || true; fi
    # The group that may read the TLS key in /etc/tsugi-notify/tls (the unit gives it
    # to the daemon's dynamic user).
    # (sysusers.d when systemd is there; groupadd, from the required package passwd,
    # in a root without it.)
    if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers tsugi-notify.conf
    elif ! getent group tsugi-notify >/dev/null 2>&1; then groupadd --system tsugi-notify; fi
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    # The daemon is not started: it needs /etc/tsugi-notify/secret and its url first.
fi
TXT
cat > "$stage/DEBIAN/prerm" <<TXT
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = deconfigure ]; then
    if [ -d /run/systemd/system ]; then systemctl stop tsugi-notifyd.service 2>/dev/null || true; fi
    if command -v phpdismod >/dev/null 2>&1; then phpdismod -v $php_short tsugi_websocket || true; fi
fi
TXT
cat > "$stage/DEBIAN/postrm" <<TXT
#!/bin/sh
set -e
if [ "\$1" = purge ]; then
    rm -f /etc/php/$php_short/*/conf.d/20-tsugi_websocket.ini
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload 2>/dev/null || true; fi
TXT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
