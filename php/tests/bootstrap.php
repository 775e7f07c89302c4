<?php
// The suite tests the native extension, never a PHP fallback: refuse to run without it.
declare(strict_types=1);

if (!extension_loaded('tsugi_websocket')) {
    fwrite(STDERR, "The tsugi_websocket extension is not loaded. Run through `make test-php`, or:\n"
        . "  php -d extension=\$PWD/target/release/libtsugi_websocket.so /usr/bin/phpunit -c php/phpunit.xml\n");
    exit(1);
}
if (!class_exists('Tsugi\\Core\\WebSocket', false)) {
    fwrite(STDERR, "tsugi_websocket is loaded but does not define Tsugi\\Core\\WebSocket\n");
    exit(1);
}

require_once __DIR__ . '/../../tests/vectors/reference.php';
require_once __DIR__ . '/Fixtures.php';
