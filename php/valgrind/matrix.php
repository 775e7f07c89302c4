<?php
// Every method of the extension with every kind of input, N rounds, for valgrind's leak
// check (make valgrind-php). Any reference the extension forgot to release would show as
// N lost blocks; PHPUnit's own allocations are not in this run.
declare(strict_types=1);

use Tsugi\Core\WebSocket;

final class Magic
{
    public function __construct(private array $v) {}
    public function __get($n) { return $this->v[$n] ?? null; }
    public function __isset($n) { return isset($this->v[$n]); }
}

$rounds = (int) ($argv[1] ?? 50);
$fh = fopen('php://memory', 'r');
$values = [null, true, false, 0, 42, -1, 1.5, NAN, '', 'x', '::', 'a::b::c::d', [], [1], ['a', 'b'],
           new stdClass(), (object) ['id' => 1], fn () => 1, $fh, new ArrayObject([1])];
$launch = (object) ['link' => (object) ['id' => 42], 'context' => (object) ['id' => 'c'],
                    'user' => (object) ['id' => 7]];
$configs = [];
foreach (['websocket_url', 'websocket_secret', 'websocket_proxyport', 'wwwroot', 'websocket_token_ttl',
          'websocket_token_format', 'websocket_accept_legacy', 'websocket_publish_url'] as $prop) {
    foreach ($values as $v) {
        $c = (object) ['wwwroot' => 'https://w', 'websocket_url' => 'ws://h:1', 'websocket_secret' => ['s', 't']];
        $c->$prop = $v;
        $configs[] = $c;
    }
}
$configs[] = new Magic(['wwwroot' => 'https://w', 'websocket_url' => 'ws://h:1', 'websocket_secret' => 's']);
$calls = 0;
for ($r = 0; $r < $rounds; $r++) {
    foreach ($configs as $c) {
        $GLOBALS['CFG'] = $c;
        WebSocket::enabled(); WebSocket::getPort(); WebSocket::getHost(); WebSocket::getProxyPort();
        $t = WebSocket::getToken($launch);
        WebSocket::decodeToken($t === false ? 'x' : $t);
        WebSocket::makeToken($launch);
        WebSocket::getPublishToken($launch);
        // None of the values is an http(s) URL: publish() refuses before any request.
        $pub = $c instanceof Magic ? null : ($c->websocket_publish_url ?? null);
        if ($pub !== null && $pub !== false) {
            WebSocket::publish($launch, 'r', 'm');
            WebSocket::presence($launch, 'r');
            WebSocket::lastPublishSequence();
            $calls += 3;
        }
        foreach ($values as $v) {
            WebSocket::makeToken($v); WebSocket::getToken($v); WebSocket::decodeToken($v);
            WebSocket::getSpaceFromToken($v);
            WebSocket::getToken((object) ['link' => (object) ['id' => $v]]);
        }
        $calls += 8 + 5 * count($values);
    }
}
fclose($fh);
echo "matrix: $calls calls\n";
