#!/usr/bin/env bash
# PHP 8.4, what current Tsugi requires, next to the host's PHP 8.2: a Debian 13 root made
# with debootstrap and cached outside the repository (rebuilt when missing), wrappers
# that point ext-php-rs at its php8.4 and php-config8.4, and the extension built against
# it in its own target directory.
#
#   scripts/php84.sh root          make (or reuse) the Debian 13 root; print its path
#   scripts/php84.sh build         also build the extension (release, and a test-clock
#                                  debug build for the known-answer vectors)
#   scripts/php84.sh test          also run the PHPUnit suite on PHP 8.4 in the root
#   scripts/php84.sh deb           build, then the Debian package for PHP 8.4 (installed
#                                  and checked in the root, then purged)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tsugi-notify
root=$cache/php84-trixie
target=$repo/target/php8.4
wrappers=$cache/php84-bin
[ "$(id -u)" -eq 0 ] && sudo=() || sudo=(sudo)

make_root() {
    if [ -x "$root/usr/bin/php8.4" ] && [ -x "$root/usr/bin/php-config8.4" ] && [ -e "$root/usr/bin/phpunit" ]; then
        return
    fi
    command -v debootstrap >/dev/null || { "${sudo[@]}" apt-get update -qq; "${sudo[@]}" apt-get install -y -qq debootstrap >/dev/null; }
    # The mirror this machine already uses for Debian's packages.
    # (A live mirror before a snapshot archive, which may predate PHP 8.4 in Debian 13.)
    mirrors=$(grep -rhoE '(http|https)://[^ ]*debian[^ ]*' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -v security || true)
    mirror=$( (echo "$mirrors" | grep -v snapshot; echo "$mirrors") | grep . | head -1 || true)
    [ -n "$mirror" ] || { echo "php84: no Debian mirror found in /etc/apt" >&2; exit 1; }
    echo "php84: creating the Debian 13 root in $root (once; cached)"
    "${sudo[@]}" rm -rf "$root"
    mkdir -p "$cache"
    "${sudo[@]}" debootstrap --variant=minbase \
        --include=php8.4-cli,php8.4-dev,php8.4-xml,php8.4-mbstring,phpunit trixie "$root" "$mirror" >/dev/null
}

make_wrappers() {
    mkdir -p "$wrappers"
    cat > "$wrappers/php" <<TXT
#!/bin/sh
exec ${sudo[*]} chroot "$root" php8.4 "\$@"
TXT
    cat > "$wrappers/php-config" <<TXT
#!/bin/sh
${sudo[*]} chroot "$root" php-config8.4 "\$@" | sed -e "s|-I/usr/|-I$root/usr/|g"
TXT
    chmod +x "$wrappers/php" "$wrappers/php-config"
}

build() {
    export PHP=$wrappers/php PHP_CONFIG=$wrappers/php-config CARGO_TARGET_DIR=$target
    cargo build --release -p tsugi-websocket
    cargo build -p tsugi-websocket --features test-clock
}

run_tests() {
    # The suite runs inside the root: copy what it reads there.
    work=$root/work/tsugi-notify
    "${sudo[@]}" rm -rf "$work"
    "${sudo[@]}" mkdir -p "$work/ext" "$work/tests"
    "${sudo[@]}" cp -r php stubs ext composer.json "$work/"
    "${sudo[@]}" cp -r tests/vectors "$work/tests/"
    "${sudo[@]}" cp "$target/release/libtsugi_websocket.so" "$work/ext/release.so"
    "${sudo[@]}" cp "$target/debug/libtsugi_websocket.so" "$work/ext/testclock.so"
    in_root() { "${sudo[@]}" chroot "$root" env -i PATH=/usr/bin:/bin HOME=/tmp "$@"; }
    # The memory test reads /proc/self/status.
    if ! mountpoint -q "$root/proc"; then
        "${sudo[@]}" mount -t proc proc "$root/proc"
        trap '"${sudo[@]}" umount "$root/proc" 2>/dev/null || true' EXIT
    fi
    in_root php8.4 -r 'echo "PHP ", PHP_VERSION, "\n";'
    in_root sh -c "cd /work/tsugi-notify && TSUGI_MEMORY_CALLS=${TSUGI_MEMORY_CALLS:-1000000} \
        php8.4 -d extension=/work/tsugi-notify/ext/release.so /usr/bin/phpunit -c php/phpunit11.xml --testsuite extension"
    in_root sh -c "cd /work/tsugi-notify && TSUGI_WEBSOCKET_TEST_NOW=1767225600 \
        php8.4 -d extension=/work/tsugi-notify/ext/testclock.so /usr/bin/phpunit -c php/phpunit11.xml --testsuite vectors"
}

# The Debian package for PHP 8.4, installed and checked inside the Debian 13 root.
deb() {
    deb=$(scripts/build-deb.sh "$target/release/libtsugi_websocket.so" "$wrappers/php-config" target/deb)
    echo "$deb"
    in_root() { "${sudo[@]}" chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp "$@"; }
    "${sudo[@]}" cp "$deb" "$root/tmp/"
    in_root dpkg --purge "$(dpkg-deb -f "$deb" Package)" >/dev/null 2>&1 || true
    in_root dpkg -i "/tmp/$(basename "$deb")" >/dev/null
    if in_root php8.4 -m | grep -x tsugi_websocket >/dev/null; then
        echo "deb-php8.4: 1 passed, 0 failed"
    else
        echo "deb-php8.4: 0 passed, 1 failed (php8.4 -m does not list tsugi_websocket)"; exit 1
    fi
    in_root dpkg --purge "$(dpkg-deb -f "$deb" Package)" >/dev/null
}

case ${1:-test} in
    root) make_root; echo "$root" ;;
    deb) make_root; make_wrappers; build; deb ;;
    build) make_root; make_wrappers; build ;;
    test) make_root; make_wrappers; build; run_tests ;;
    *) echo "usage: $0 root|build|test" >&2; exit 2 ;;
esac
