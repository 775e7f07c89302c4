# tsugi-notify: `make run` builds everything and starts it on an embedded default;
# `make test` runs every check. Both install what is missing on Debian first.

SHELL := /bin/bash
CARGO ?= cargo
PHP ?= php
EXT := target/release/libtsugi_websocket.so

.PHONY: run test setup setup-test build ext lint test-rust test-vectors test-fuzz-build clean

run: setup build
	@echo
	@echo "Built:"
	@echo "  PHP extension  $(EXT)"
	@echo "Load it with:  php -d extension=$(CURDIR)/$(EXT) -r 'var_dump(extension_loaded(\"tsugi_websocket\"));'"
	@$(PHP) -d extension=$(CURDIR)/$(EXT) -r 'echo "tsugi_websocket loaded: ", extension_loaded("tsugi_websocket") ? "yes" : "no", "\n";'

setup:
	@scripts/setup-debian.sh build

setup-test:
	@scripts/setup-debian.sh test

build:
	$(CARGO) build --release --workspace

ext:
	$(CARGO) build --release -p tsugi-websocket

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

test-vectors:
	$(PHP) tests/vectors/check.php

test-fuzz-build:
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins

test: setup-test lint test-vectors test-rust test-fuzz-build
	@echo "make test: all checks passed"

clean:
	$(CARGO) clean
