# tsugi-notify. `make run` builds everything and starts it on an embedded default;
# `make test` runs every check. Both first install what is missing (Debian, apt-get).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
PHP ?= php
PHPUNIT ?= /usr/bin/phpunit
PHP_CONFIG ?= php-config

# The release extension, and a debug build with the test clock (for the known-answer
# vectors, and as the source of the stubs: cargo-php reads a debug build).
EXT := target/release/libtsugi_websocket.so
EXT_TESTCLOCK := target/debug/libtsugi_websocket.so
STUBS := stubs/tsugi_websocket.stubs.php
VECTOR_NOW := 1767225600

.PHONY: run test setup setup-test build ext ext-testclock lint test-rust test-vectors \
        test-php test-stubs test-install test-fuzz-build stubs install-ext valgrind-php bench-php fuzz clean

run: setup build
	@echo
	@echo "Built the PHP extension: $(EXT)"
	@$(PHP) -d extension=$(CURDIR)/$(EXT) --ri tsugi_websocket

setup:
	@scripts/setup-debian.sh build

setup-test:
	@scripts/setup-debian.sh test

build:
	$(CARGO) build --release --workspace

ext:
	$(CARGO) build --release -p tsugi-websocket

ext-testclock:
	$(CARGO) build -p tsugi-websocket --features test-clock

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The extension crate is tested through PHP (test-php): a test binary cannot link
# against the PHP engine's symbols.
test-rust:
	$(CARGO) test --workspace --exclude tsugi-websocket

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

test-fuzz-build:
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

test: setup-test lint test-vectors test-rust test-php test-stubs test-install test-fuzz-build
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

bench-php: ext
	$(PHP) -d extension=$(CURDIR)/$(EXT) php/bench/tokens.php | tee target/bench-php.txt

# Runs the fuzz targets for FUZZ_SECONDS each (stable toolchain, no sanitizer).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 cargo fuzz list); do \
	    RUSTC_BOOTSTRAP=1 cargo fuzz run $$t --sanitizer none -- -max_total_time=$(FUZZ_SECONDS); done

clean:
	$(CARGO) clean
