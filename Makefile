# tsugi-notify. `make demo` builds everything and starts the daemon and a demo tool page;
# `make run` the daemon alone; `make test` runs every check. Each first installs what is
# missing (Debian, apt-get).

SHELL := /bin/bash
# Targets run one after another even under -j: the cargo tests and the test-clock
# build both write target/debug/libtsugi_websocket.so.
.NOTPARALLEL:
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
PHP ?= php
PHPUNIT ?= /usr/bin/phpunit
PHP_CONFIG ?= php-config

# The release extension, and a debug build with the test clock (for the known-answer
# vectors, and as the source of the stubs: cargo-php reads a debug build).
EXT := target/release/libtsugi_websocket.so
# A copy: cargo test --workspace rebuilds target/debug's without the feature.
EXT_TESTCLOCK := target/testclock/libtsugi_websocket.so
STUBS := stubs/tsugi_websocket.stubs.php
VECTOR_NOW := 1767225600

.PHONY: check soak test-php84 deb-php84 test-phpize bench demo run test test-node test-deb deb setup setup-test node-deps build ext ext-testclock lint test-rust test-vectors \
        test-php test-stubs test-install test-packaging test-fuzz-build stubs install-ext \
        valgrind-php bench-php fuzz clean

# The daemon and a small tool page that chats through it (Ctrl-C stops both).
demo: setup build
	scripts/demo.sh

# Builds everything and runs the daemon alone in development mode (Ctrl-C stops it).
run: setup build
	@echo
	@echo "PHP extension: $(CURDIR)/$(EXT)  (php -d extension=... or make install-ext)"
	@echo "Daemon: ws://127.0.0.1:2021/notify?token=...  secret \"opensource\", metrics http://127.0.0.1:9102/metrics"
	@echo "A token to try: $$(target/release/tsugi-notifyd --dev token mint --link 1 --user 1)"
	@echo
	exec target/release/tsugi-notifyd --dev

setup:
	@scripts/setup-debian.sh build

setup-test:
	@scripts/setup-debian.sh test

# Node's ws client (an independent WebSocket implementation for the tests).
node-deps: tests/node/node_modules/.package-lock.json
tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

build:
	$(CARGO) build --release --workspace

ext:
	$(CARGO) build --release -p tsugi-websocket

ext-testclock:
	$(CARGO) build -p tsugi-websocket --features test-clock
	mkdir -p target/testclock && cp target/debug/libtsugi_websocket.so $(EXT_TESTCLOCK)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Rust unit and integration tests, the daemon's, and the cross-component tests in
# tests/ (PHP with the built extension mints tokens; Node's ws is a second client).
test-rust: ext ext-testclock node-deps
	rm -rf target/tmp/daemon-logs
	$(CARGO) test --workspace
	scripts/check-logs.sh target/tmp/daemon-logs

test-vectors:
	$(PHP) tests/vectors/check.php

test-php: ext ext-testclock
	$(PHP) -d extension=$(CURDIR)/$(EXT) $(PHPUNIT) -c php/phpunit.xml --testsuite extension
	TSUGI_WEBSOCKET_TEST_NOW=$(VECTOR_NOW) $(PHP) -d extension=$(CURDIR)/$(EXT_TESTCLOCK) \
	    $(PHPUNIT) -c php/phpunit.xml --testsuite vectors

stubs: ext-testclock
	$(CARGO) php stubs --stdout $(EXT_TESTCLOCK) | $(PHP) scripts/stubs.php > $(STUBS).new
	mv $(STUBS).new $(STUBS)

test-stubs: ext-testclock
	$(CARGO) php stubs --stdout $(EXT_TESTCLOCK) | $(PHP) scripts/stubs.php | diff -u $(STUBS) - \
	    || { echo "$(STUBS) is stale: run make stubs and commit it"; exit 1; }
	$(PHP) -l $(STUBS) >/dev/null

test-install: ext
	scripts/test-install-ext.sh

# The browser client's unit tests, the demo in Debian's Chromium (Playwright), and
# both over wss:// with a test CA made at test time.
test-node: build node-deps
	$(CARGO) build -p tsugi-notifyd --example test-ca
	cd tests/node && node --test client.test.mjs browser.test.mjs wss.test.mjs

test-packaging: build
	scripts/test-packaging.sh target/release/tsugi-notifyd

# The Debian package for the host's PHP (target/deb/tsugi-notify-php8.2_*.deb).
deb: build
	scripts/build-deb.sh $(EXT) php-config target/deb

# dpkg -i the package, check PHP and systemd take it and the daemon runs, purge it.
test-deb: deb
	scripts/test-deb.sh target/deb/tsugi-notify-php$$(php-config --version | cut -d. -f1,2)_*.deb

# The whole PHPUnit suite on PHP 8.4 too (a Debian 13 root, cached in ~/.cache).
test-php84:
	scripts/php84.sh test

# The Debian package for PHP 8.4 (target/deb/tsugi-notify-php8.4_*.deb), checked in the root.
deb-php84: build
	scripts/php84.sh deb

# phpize && ./configure && make from a clean copy of the source (the path PIE takes).
test-phpize:
	scripts/test-phpize.sh

test-fuzz-build:
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

# The inner loop: fmt, clippy, every cargo test, and the PHPUnit suites on this
# machine's PHP, reusing target/. No apt, no packaging, no PHP 8.4 root: `make test`
# (what CI runs) is the whole suite.
check: lint test-rust test-php
	@echo "make check: passed (make test runs the whole suite)"

test: setup-test lint test-vectors test-rust test-php test-stubs test-install test-node test-packaging \
      test-deb test-phpize test-php84 deb-php84 test-fuzz-build
	@echo "make test: all checks passed"

# The extension under valgrind with PHP's allocator off: the PHPUnit suite must have no
# memory error, and a matrix of every method and input kind must lose no block.
VALGRIND := USE_ZEND_ALLOC=0 ZEND_DONT_UNLOAD_MODULES=1 valgrind --error-exitcode=99
valgrind-php: ext
	TSUGI_MEMORY_CALLS=2000 $(VALGRIND) --leak-check=no --log-file=target/valgrind-phpunit.log \
	    $(PHP) -d pcre.jit=0 -d extension=$(CURDIR)/$(EXT) $(PHPUNIT) -c php/phpunit.xml --testsuite extension
	$(VALGRIND) --leak-check=full --errors-for-leak-kinds=definite,indirect \
	    --log-file=target/valgrind-matrix.log \
	    $(PHP) -n -d pcre.jit=0 -d extension=$(CURDIR)/$(EXT) php/valgrind/matrix.php 20
	@grep -h "ERROR SUMMARY" target/valgrind-phpunit.log target/valgrind-matrix.log
	@grep -h -E "definitely lost|indirectly lost" target/valgrind-matrix.log || echo "no leaks"

# Build against the PHP of PHP_CONFIG (default: the php-config on PATH) and enable it.
install-ext:
	scripts/install-ext.sh "$(PHP_CONFIG)"

# Every scenario of notify-bench against tsugi-notifyd and the Node ws reference;
# writes BENCHMARKS.md. Takes a few minutes.
bench: setup build
	npm ci --prefix bench/node-ws --no-audit --no-fund --loglevel=error
	$(CARGO) build -p tsugi-notifyd --example test-ca
	python3 bench/run.py

# 10,000 connections, steady traffic and churn, SOAK_SECONDS (default 600); RSS plot in
# docs/soak.png.
soak: setup build
	@dpkg-query -W python3-matplotlib >/dev/null 2>&1 || scripts/setup-debian.sh soak
	scripts/soak.sh

bench-php: ext
	$(PHP) -d extension=$(CURDIR)/$(EXT) php/bench/tokens.php | tee target/bench-php.txt

# Runs the fuzz targets (FUZZ_TARGETS, default all) for FUZZ_SECONDS each (stable
# toolchain, no sanitizer); installs cargo-fuzz when it is missing.
FUZZ_SECONDS ?= 60
fuzz: setup
	@cargo fuzz --version >/dev/null 2>&1 || { echo "setup: installing cargo-fuzz"; cargo install --quiet --locked cargo-fuzz; }
	cd fuzz && for t in $${FUZZ_TARGETS:-$$(RUSTC_BOOTSTRAP=1 cargo fuzz list)}; do \
	    RUSTC_BOOTSTRAP=1 cargo fuzz run $$t --sanitizer none -- -max_total_time=$(FUZZ_SECONDS); done

clean:
	$(CARGO) clean
