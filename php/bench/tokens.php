<?php
// Calls per second of getToken / decodeToken: the extension against a pure-PHP
// implementation of today's legacy token (what tsugi-php does: openssl_encrypt +
// hash_hmac per token-format.md), in the same process and run.
// Run: php -d extension=target/release/libtsugi_websocket.so php/bench/tokens.php [N]
declare(strict_types=1);

use Tsugi\Core\WebSocket;

if (!extension_loaded('tsugi_websocket')) {
    fwrite(STDERR, "load the extension: php -d extension=.../libtsugi_websocket.so php/bench/tokens.php\n");
    exit(1);
}

/** Today's tsugi-php WebSocket::getToken / decodeToken, legacy tokens (pure PHP). */
final class PhpLegacyWebSocket
{
    public static function makeToken($launch)
    {
        global $CFG;
        if (!isset($launch->link->id)) return false;
        $token = $CFG->wwwroot . '::' . $launch->link->id . '::';
        $token .= isset($launch->context->id) ? $launch->context->id : 'no_context';
        $token .= '::';
        $token .= isset($launch->user->id) ? $launch->user->id : 'no_user';
        return $token;
    }

    public static function getToken($launch)
    {
        global $CFG;
        if (!isset($CFG->websocket_secret) || empty($CFG->websocket_secret)) return false;
        $plain = self::makeToken($launch);
        if (!$plain) return $plain;
        $key = hash('sha256', $CFG->websocket_secret, true);
        $iv = random_bytes(16);
        $ct = openssl_encrypt($plain, 'aes-256-cbc', $key, OPENSSL_RAW_DATA, $iv);
        return base64_encode($iv . hash_hmac('sha256', $ct . $iv, $key, true) . $ct);
    }

    public static function decodeToken($token)
    {
        global $CFG;
        $raw = base64_decode($token);
        if ($raw === false || strlen($raw) < 64) return false;
        $key = hash('sha256', $CFG->websocket_secret, true);
        $iv = substr($raw, 0, 16);
        $mac = substr($raw, 16, 32);
        $ct = substr($raw, 48);
        if (!hash_equals(hash_hmac('sha256', $ct . $iv, $key, true), $mac)) return false;
        $plain = openssl_decrypt($ct, 'aes-256-cbc', $key, OPENSSL_RAW_DATA, $iv);
        if (!is_string($plain)) return false;
        if (count(explode('::', $plain)) != 4) return false;
        return $plain;
    }
}

$n = (int) ($argv[1] ?? 200000);
$CFG = new stdClass();
$CFG->wwwroot = 'https://tsugi.example.edu/tsugi';
$CFG->websocket_url = 'wss://socket.example.edu:443';
$CFG->websocket_secret = 'a-realistic-secret-of-some-length';
$launch = (object) ['link' => (object) ['id' => 4242], 'context' => (object) ['id' => 77],
                    'user' => (object) ['id' => 123456]];

function rate(callable $f, int $n): float
{
    for ($i = 0; $i < 2000; $i++) $f();            // warm up
    $best = 0.0;
    for ($round = 0; $round < 3; $round++) {        // best of three
        $t = hrtime(true);
        for ($i = 0; $i < $n; $i++) $f();
        $best = max($best, $n / ((hrtime(true) - $t) / 1e9));
    }
    return $best;
}

$phpTok = PhpLegacyWebSocket::getToken($launch);
$extTok = WebSocket::getToken($launch);
assert(PhpLegacyWebSocket::decodeToken($phpTok) !== false && WebSocket::decodeToken($extTok) !== false);

$r = [];
$r['php_legacy_get'] = rate(fn () => PhpLegacyWebSocket::getToken($launch), $n);
$r['ext_v1_get'] = rate(fn () => WebSocket::getToken($launch), $n);
$r['php_legacy_decode'] = rate(fn () => PhpLegacyWebSocket::decodeToken($phpTok), $n);
$r['ext_v1_decode'] = rate(fn () => WebSocket::decodeToken($extTok), $n);
$CFG->websocket_token_format = 'legacy';
$extLegacy = WebSocket::getToken($launch);
$r['ext_legacy_get'] = rate(fn () => WebSocket::getToken($launch), $n);
$r['ext_legacy_decode'] = rate(fn () => WebSocket::decodeToken($phpTok), $n);

printf("PHP %s, %d calls per round, best of 3\n\n", PHP_VERSION, $n);
printf("| call | pure PHP (legacy) | extension v1 | extension legacy | v1 / PHP |\n|---|---|---|---|---|\n");
printf("| getToken | %s/s | %s/s | %s/s | %.2fx |\n", number_format($r['php_legacy_get']),
    number_format($r['ext_v1_get']), number_format($r['ext_legacy_get']), $r['ext_v1_get'] / $r['php_legacy_get']);
printf("| decodeToken | %s/s | %s/s | %s/s | %.2fx |\n", number_format($r['php_legacy_decode']),
    number_format($r['ext_v1_decode']), number_format($r['ext_legacy_decode']),
    $r['ext_v1_decode'] / $r['php_legacy_decode']);
echo json_encode(array_map(fn ($v) => (int) $v, $r)), "\n";
