#!/usr/bin/env bash
# Installs what building and testing tsugi-notify needs on Debian, and only what is
# missing: one apt-get call, as root or through sudo. Idempotent and quiet when all is
# there. Usage: scripts/setup-debian.sh [build|test]
set -euo pipefail

want=(php8.2-cli php8.2-dev libclang-dev clang make pkg-config)
if [ "${1:-build}" = test ]; then
    want+=(phpunit php8.2-xml php8.2-mbstring valgrind systemd chromium fonts-dejavu-core redis-server \
           debootstrap util-linux libnss3-tools openssl)
    # Node.js runs the independent WebSocket client and the browser test.
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
fi

if [ "${1:-build}" = soak ]; then
    want+=(python3-matplotlib)
fi

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust 1.85 or newer (https://rustup.rs) and run again." >&2
    exit 1
fi

# cargo-php generates the IDE stubs from the built extension (make stubs, make test).
if [ "${1:-build}" = test ] && ! cargo php --help >/dev/null 2>&1; then
    echo "setup: installing cargo-php"
    cargo install --quiet --locked cargo-php --version 0.2.2
fi
