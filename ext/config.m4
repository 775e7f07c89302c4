dnl cd ext && phpize && ./configure && make: builds tsugi_websocket with cargo (Rust 1.85+)
dnl against the PHP that phpize/php-config describe, into modules/tsugi_websocket.so,
dnl so that `make install` (and PIE) install it like any other extension.

PHP_ARG_ENABLE([tsugi_websocket],
  [whether to enable tsugi_websocket],
  [AS_HELP_STRING([--enable-tsugi_websocket], [Enable tsugi_websocket (Tsugi notifications)])],
  [yes])

if test "$PHP_TSUGI_WEBSOCKET" != "no"; then
  AC_PATH_PROG([CARGO], [cargo], [no], [$PATH:$HOME/.cargo/bin])
  if test "$CARGO" = "no"; then
    AC_MSG_ERROR([cargo not found: tsugi_websocket is written in Rust; install Rust 1.85 or newer])
  fi
  AC_MSG_CHECKING([for libclang (bindgen)])
  if test -n "$LIBCLANG_PATH" || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
    AC_MSG_RESULT([yes])
  else
    AC_MSG_ERROR([libclang not found: install libclang-dev (or set LIBCLANG_PATH)])
  fi
  dnl ext-php-rs wants php-config as an absolute path.
  TSUGI_PHP_CONFIG=`command -v "$PHP_CONFIG"`
  PHP_SUBST([CARGO])
  PHP_SUBST([TSUGI_PHP_CONFIG])
  PHP_ADD_BUILD_DIR([modules])
  PHP_ADD_MAKEFILE_FRAGMENT([$abs_srcdir/Makefile.frag])
fi
