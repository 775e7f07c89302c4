# Included by phpize's Makefile (config.m4): cargo builds the extension, and the result
# goes to modules/ where `make install` takes it from. CARGO_TARGET_DIR may point at an
# existing build to reuse it.

all: modules/tsugi_websocket.so

.PHONY: cargo-tsugi-websocket
modules/tsugi_websocket.so: cargo-tsugi-websocket
cargo-tsugi-websocket:
	@target="$${CARGO_TARGET_DIR:-$(abs_builddir)/target}"; \
	PHP_CONFIG="$(TSUGI_PHP_CONFIG)" PHP="$(PHP_EXECUTABLE)" CARGO_TARGET_DIR="$$target" \
	    $(CARGO) build --release --manifest-path "$(top_srcdir)/../Cargo.toml" -p tsugi-websocket && \
	mkdir -p "$(phplibdir)" && \
	cp "$$target/release/libtsugi_websocket.so" "$(phplibdir)/tsugi_websocket.so"
