<?php
declare(strict_types=1);

namespace TsugiNotify\Tests;

use PHPUnit\Framework\TestCase;
use Tsugi\Core\WebSocket;
use TsugiNotifyReference as Ref;

final class WebSocketTest extends TestCase
{
    private const WWW = 'https://tsugi.example.edu';

    protected function setUp(): void
    {
        global $CFG;
        $CFG = new \stdClass();
        $CFG->wwwroot = self::WWW;
        $CFG->websocket_url = 'ws://localhost:2021';
        $CFG->websocket_secret = 'opensource';
    }

    protected function tearDown(): void
    {
        unset($GLOBALS['CFG']);
    }

    private static function launch($link = 42, $context = 7, $user = 9): object
    {
        $l = new \stdClass();
        if ($link !== null) $l->link = (object) ['id' => $link];
        if ($context !== null) $l->context = (object) ['id' => $context];
        if ($user !== null) $l->user = (object) ['id' => $user];
        return $l;
    }

    public function testTheClassIsNativeAndStatic(): void
    {
        $class = new \ReflectionClass(WebSocket::class);
        $this->assertTrue($class->isInternal());
        $this->assertSame('tsugi_websocket', $class->getExtensionName());
        foreach (['enabled', 'getPort', 'getProxyPort', 'getHost', 'makeToken', 'getToken',
                  'decodeToken', 'getSpaceFromToken', 'getPublishToken', 'publish',
                  'lastPublishSequence', 'presence'] as $m) {
            $this->assertTrue($class->getMethod($m)->isStatic(), $m);
            $this->assertTrue($class->getMethod($m)->isPublic(), $m);
        }
        $this->expectException(\Exception::class);
        new WebSocket();
    }

    public function testEnabledNeedsUrlHostPortAndSecret(): void
    {
        global $CFG;
        $this->assertTrue(WebSocket::enabled());
        $this->assertSame(2021, WebSocket::getPort());
        $this->assertSame('localhost', WebSocket::getHost());
        $this->assertNull(WebSocket::getProxyPort());

        $CFG->websocket_proxyport = 8080;
        $this->assertSame(8080, WebSocket::getProxyPort());
        $CFG->websocket_proxyport = '8081';
        $this->assertSame(8081, WebSocket::getProxyPort());

        $CFG->websocket_url = 'wss://socket.tsugicloud.org';
        $this->assertSame(443, WebSocket::getPort());
        $CFG->websocket_url = 'ws://socket.example.org/';
        $this->assertSame(80, WebSocket::getPort());
        $CFG->websocket_url = 'ws://[::1]:2021';
        $this->assertSame('[::1]', WebSocket::getHost());

        // Browsers open http(s):// URLs as ws(s)://; so does the extension.
        $CFG->websocket_url = 'http://localhost:2021';
        $this->assertTrue(WebSocket::enabled());
        $this->assertSame(2021, WebSocket::getPort());
        $CFG->websocket_url = 'https://socket.example.org';
        $this->assertSame(443, WebSocket::getPort());
        $this->assertSame('socket.example.org', WebSocket::getHost());

        foreach (['xyzzy', 'false', '', 'ftp://localhost:2021', 'http://', 'ws://:2021', 'ws://h:0'] as $bad) {
            $CFG->websocket_url = $bad;
            $this->assertFalse(WebSocket::enabled(), $bad);
            $this->assertNull(WebSocket::getPort(), $bad);
            $this->assertNull(WebSocket::getHost(), $bad);
            $this->assertNull(WebSocket::getProxyPort(), $bad);
        }
        $CFG->websocket_url = 'ws://localhost:2021';
        foreach (['', false, null, [], [''], ['a', 5]] as $bad) {
            $CFG->websocket_secret = $bad;
            $this->assertFalse(WebSocket::enabled());
            $this->assertNull(WebSocket::getPort());
        }
        unset($CFG->websocket_secret);
        $this->assertFalse(WebSocket::enabled());
    }

    public function testNoCfgAtAll(): void
    {
        unset($GLOBALS['CFG']);
        $this->assertFalse(WebSocket::enabled());
        $this->assertNull(WebSocket::getPort());
        $this->assertFalse(WebSocket::getToken(self::launch()));
        $this->assertFalse(WebSocket::makeToken(self::launch()));
        $this->assertFalse(WebSocket::decodeToken('x.y.z'));
        $this->assertSame('a::b', WebSocket::getSpaceFromToken('a::b::c::d'));
        $GLOBALS['CFG'] = 5;
        $this->assertFalse(WebSocket::enabled());
        $GLOBALS['CFG'] = ['websocket_url' => 'ws://h:1', 'websocket_secret' => 's'];
        $this->assertFalse(WebSocket::enabled());
    }

    public function testMakeTokenPutsTheUserIdInTheUserSlot(): void
    {
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::makeToken(self::launch()));
        $this->assertSame(self::WWW . '::42::no_context::9', WebSocket::makeToken(self::launch(42, null, 9)));
        $this->assertSame(self::WWW . '::42::7::no_user', WebSocket::makeToken(self::launch(42, 7, null)));
        $this->assertSame(self::WWW . '::abc::no_context::no_user', WebSocket::makeToken(self::launch('abc', null, null)));
        $this->assertFalse(WebSocket::makeToken(self::launch(null)));
        $this->assertFalse(WebSocket::makeToken(self::launch('')));
        $this->assertFalse(WebSocket::makeToken(self::launch('a::b')));
        $this->assertFalse(WebSocket::makeToken(self::launch(42, 'c::d')));
        $this->assertFalse(WebSocket::makeToken(self::launch(42, 7, 1.5)));
        $this->assertFalse(WebSocket::makeToken(self::launch([1])));
        // isset() semantics: a null id is no id.
        $this->assertSame(self::WWW . '::42::no_context::9', WebSocket::makeToken(self::launch(42, null, 9)));
        // A Tsugi-like launch object with typed properties.
        $this->assertSame(self::WWW . '::5::6::7', WebSocket::makeToken(Launch::of(5, 6, 7)));
        $this->assertSame(self::WWW . '::5::no_context::no_user', WebSocket::makeToken(Launch::of(5)));
    }

    public function testGetTokenMintsV1ThatDecodes(): void
    {
        $t = WebSocket::getToken(self::launch());
        $this->assertIsString($t);
        $this->assertSame(2, substr_count($t, '.'));
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($t));
        $this->assertSame(self::WWW . '::42', WebSocket::getSpaceFromToken(WebSocket::decodeToken($t)));
        // The independent PHP implementation of the format agrees.
        [$plain, $why] = Ref\verify(['opensource'], $t, time(), true, null);
        $this->assertSame(self::WWW . '::42::7::9', $plain, (string) $why);
        // Claims as documented, with the default TTL.
        $claims = json_decode(Ref\unb64url(explode('.', $t)[1]), true);
        $this->assertSame(['iss', 'lnk', 'ctx', 'sub', 'iat', 'exp'], array_keys($claims));
        $this->assertSame(86400, $claims['exp'] - $claims['iat']);
        $this->assertEqualsWithDelta(time(), $claims['iat'], 5);
    }

    public function testTtlSetting(): void
    {
        global $CFG;
        $CFG->websocket_token_ttl = 600;
        $claims = json_decode(Ref\unb64url(explode('.', WebSocket::getToken(self::launch()))[1]), true);
        $this->assertSame(600, $claims['exp'] - $claims['iat']);
        $CFG->websocket_token_ttl = 0;
        $claims = json_decode(Ref\unb64url(explode('.', WebSocket::getToken(self::launch()))[1]), true);
        $this->assertArrayNotHasKey('exp', $claims);
        foreach ([-1, 'abc', 1.5, [], null] as $bad) {
            $CFG->websocket_token_ttl = $bad;
            $claims = json_decode(Ref\unb64url(explode('.', WebSocket::getToken(self::launch()))[1]), true);
            $this->assertSame(86400, $claims['exp'] - $claims['iat']);
        }
    }

    public function testClockSkewSetting(): void
    {
        global $CFG;
        // A token from a web server 90 s ahead of this one.
        $ahead = Ref\v1_mint('opensource', self::WWW, '42', '7', '9', time() + 90, 3600);
        $this->assertFalse(WebSocket::decodeToken($ahead), 'the default allows 60 s');
        $CFG->websocket_clock_skew = 120;
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($ahead));
        $CFG->websocket_clock_skew = '30';
        $this->assertFalse(WebSocket::decodeToken($ahead));
        // At most an hour, whatever is set; junk keeps the default.
        $far = Ref\v1_mint('opensource', self::WWW, '42', '7', '9', time() + 3700, 3600);
        $CFG->websocket_clock_skew = 86400;
        $this->assertFalse(WebSocket::decodeToken($far));
        foreach ([-1, 'abc', 1.5, [], null] as $bad) {
            $CFG->websocket_clock_skew = $bad;
            $this->assertFalse(WebSocket::decodeToken($ahead), var_export($bad, true));
        }
        unset($CFG->websocket_clock_skew);
    }

    public function testGetTokenNeedsSecretAndLinkId(): void
    {
        global $CFG;
        $this->assertFalse(WebSocket::getToken(self::launch(null)));
        $CFG->websocket_secret = '';
        $this->assertFalse(WebSocket::getToken(self::launch()));
        unset($CFG->wwwroot);
        $CFG->websocket_secret = 's';
        $this->assertFalse(WebSocket::getToken(self::launch()));
    }

    public function testSecretRotation(): void
    {
        global $CFG;
        $CFG->websocket_secret = 'old';
        $old = WebSocket::getToken(self::launch());
        $CFG->websocket_secret = ['new', 'old'];
        $new = WebSocket::getToken(self::launch());
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($old));
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($new));
        [$plain] = Ref\verify(['new'], $new, time(), true, null);
        $this->assertNotNull($plain, 'the first secret mints');
        $CFG->websocket_secret = ['new'];
        $this->assertFalse(WebSocket::decodeToken($old));
        $CFG->websocket_secret = 'other';
        $this->assertFalse(WebSocket::decodeToken($new));
    }

    public function testLegacyTokensFromTodaysTsugi(): void
    {
        global $CFG;
        // Minted the way tsugi-php's AesOpenSSL does, with PHP's own openssl and hash_hmac.
        $plain = self::WWW . '::42::7::7';
        $legacy = Ref\legacy_seal('opensource', $plain, random_bytes(16));
        $this->assertSame($plain, WebSocket::decodeToken($legacy));
        $CFG->websocket_accept_legacy = false;
        $this->assertFalse(WebSocket::decodeToken($legacy));
        $CFG->websocket_accept_legacy = 0; // only false switches it off
        $this->assertSame($plain, WebSocket::decodeToken($legacy));
    }

    public function testLegacyMintingForOldSocketServers(): void
    {
        global $CFG;
        $CFG->websocket_token_format = 'legacy';
        $t = WebSocket::getToken(self::launch());
        $this->assertStringNotContainsString('.', $t);
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($t));
        [$plain] = Ref\legacy_verify(['opensource'], $t);
        $this->assertSame(self::WWW . '::42::7::9', $plain);
        // Fresh IV each time.
        $this->assertNotSame($t, WebSocket::getToken(self::launch()));
        $CFG->websocket_token_format = 'jwt';
        $this->assertSame(2, substr_count(WebSocket::getToken(self::launch()), '.'));
    }

    public function testGetSpaceFromToken(): void
    {
        $this->assertSame('http://[::1]:8888::42', WebSocket::getSpaceFromToken('http://[::1]:8888::42::7::9'));
        $this->assertSame('a::b', WebSocket::getSpaceFromToken('a::b::c::d'));
        $this->assertFalse(WebSocket::getSpaceFromToken('a::b::c'));
        $this->assertFalse(WebSocket::getSpaceFromToken(''));
    }

    public function testConfigInfoWithFalseDefaults(): void
    {
        global $CFG;
        $CFG = new ConfigInfo(self::WWW);
        $this->assertFalse(WebSocket::enabled());
        $this->assertNull(WebSocket::getPort());
        $this->assertNull(WebSocket::getProxyPort());
        $this->assertFalse(WebSocket::getToken(self::launch()));
        $this->assertFalse(WebSocket::decodeToken('a.b.c'));
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::makeToken(self::launch()));
        $CFG->websocket_url = 'ws://localhost:2021';
        $CFG->websocket_secret = 'opensource';
        $this->assertTrue(WebSocket::enabled());
        $this->assertNull(WebSocket::getProxyPort(), 'proxyport false is not set');
        $this->assertIsString(WebSocket::getToken(self::launch()));
    }

    public function testReadonlyConfig(): void
    {
        global $CFG;
        $CFG = new ReadonlyConfig(self::WWW, 'wss://s.example:8443', ['a', 'b'], 9000);
        $this->assertTrue(WebSocket::enabled());
        $this->assertSame(8443, WebSocket::getPort());
        $this->assertSame(9000, WebSocket::getProxyPort());
        $t = WebSocket::getToken(self::launch());
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken($t));
    }

    public function testMagicGetConfig(): void
    {
        global $CFG;
        $CFG = new MagicConfig(['wwwroot' => self::WWW, 'websocket_url' => 'ws://m.example:99',
                                'websocket_secret' => 'magic']);
        $this->assertTrue(WebSocket::enabled());
        $this->assertSame('m.example', WebSocket::getHost());
        $this->assertSame(self::WWW . '::42::7::9', WebSocket::decodeToken(WebSocket::getToken(self::launch())));
    }

    public function testAConfigThatThrowsPropagatesItsException(): void
    {
        global $CFG;
        $CFG = new ThrowingConfig();
        $this->expectException(\RuntimeException::class);
        WebSocket::enabled();
    }

    public function testGlobalCfgSeenFromInsideAFunction(): void
    {
        $f = function () {
            global $CFG;
            $CFG->websocket_url = 'ws://inside.example:1234';
            return WebSocket::getPort();
        };
        $this->assertSame(1234, $f());
    }

    public function testBadInputMatrix(): void
    {
        global $CFG;
        $fh = fopen('php://memory', 'r');
        $values = [null, true, false, 0, 42, -1, 1.5, NAN, INF, '', 'x', '::', "\0", str_repeat('a', 5000),
                   [], [1], ['id' => 1], new \stdClass(), (object) ['id' => 1], fn () => 1, $fh,
                   new \ArrayObject([1]), new \SplFixedArray(2)];
        $good = WebSocket::getToken(self::launch());

        // Every argument.
        foreach ($values as $v) {
            $this->assertContains(WebSocket::makeToken($v), [false], 'makeToken');
            $this->assertFalse(WebSocket::getToken($v));
            $this->assertFalse(WebSocket::decodeToken($v));
            $r = WebSocket::getSpaceFromToken($v);
            $this->assertFalse($r);
            $this->assertFalse(WebSocket::presence($v), 'presence');
            // ... as the link, the link id, the context id and the user id.
            $l = new \stdClass();
            $l->link = $v;
            $expect = is_object($v) && isset($v->id) ? self::WWW . '::1::no_context::no_user' : false;
            $this->assertSame($expect, WebSocket::makeToken($l));
            $r = WebSocket::getToken(self::launch($v));
            $this->assertTrue($r === false || is_string($r));
            $r = WebSocket::getToken(self::launch(42, $v));
            $this->assertTrue($r === false || is_string($r));
            $r = WebSocket::getToken(self::launch(42, 7, $v));
            $this->assertTrue($r === false || is_string($r));
        }

        // Every $CFG property.
        foreach (['websocket_url', 'websocket_secret', 'websocket_proxyport', 'wwwroot',
                  'websocket_token_ttl', 'websocket_token_format', 'websocket_accept_legacy',
                  'websocket_publish_url'] as $prop) {
            foreach ($values as $v) {
                $this->setUp();
                $CFG->$prop = $v;
                $this->assertIsBool(WebSocket::enabled());
                $p = WebSocket::getPort();
                $this->assertTrue($p === null || is_int($p));
                $h = WebSocket::getHost();
                $this->assertTrue($h === null || is_string($h));
                $pp = WebSocket::getProxyPort();
                $this->assertTrue($pp === null || is_int($pp));
                $t = WebSocket::getToken(self::launch());
                $this->assertTrue($t === false || is_string($t));
                $d = WebSocket::decodeToken($good);
                $this->assertTrue($d === false || is_string($d));
                $m = WebSocket::makeToken(self::launch());
                $this->assertTrue($m === false || is_string($m));
            }
        }
        // $CFG itself.
        foreach ($values as $v) {
            $GLOBALS['CFG'] = $v;
            $this->assertFalse(WebSocket::enabled());
            $this->assertFalse(WebSocket::getToken(self::launch()));
            $this->assertFalse(WebSocket::decodeToken($good));
        }
        fclose($fh);
    }

    public function testGetPublishTokenIsShortLivedAndScoped(): void
    {
        $t = WebSocket::getPublishToken(self::launch());
        $this->assertIsString($t);
        $claims = json_decode(Ref\unb64url(explode('.', $t)[1]), true);
        $this->assertSame('publish', $claims['scp']);
        $this->assertSame(300, $claims['exp'] - $claims['iat']);
        [$plain, $why] = Ref\verify(['opensource'], $t, time(), true, 'publish');
        $this->assertSame(self::WWW . '::42::7::9', $plain, (string) $why);
        $this->assertFalse(WebSocket::decodeToken($t), 'a publish token opens no browser socket');
        $this->assertFalse(WebSocket::getPublishToken(self::launch(null)));
    }

    public function testPublishAnswersFalseQuicklyWhenTheDaemonIsDown(): void
    {
        global $CFG;
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        fclose($server); // nothing listens there now
        $CFG->websocket_url = "ws://127.0.0.1:$port";
        $t = microtime(true);
        $this->assertFalse(WebSocket::publish(self::launch(), 'room', 'hello'));
        $this->assertLessThan(2.5, microtime(true) - $t);
        // A daemon that never answers: the 2 s bound holds.
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        $CFG->websocket_url = "ws://127.0.0.1:$port";
        $t = microtime(true);
        $this->assertFalse(WebSocket::publish(self::launch(), 'room', 'hello'));
        $this->assertLessThan(3.0, microtime(true) - $t);
        fclose($server);
        // Not configured, no link: false, no request.
        $CFG->websocket_url = 'xyzzy';
        $this->assertFalse(WebSocket::publish(self::launch(), '', 'x'));
        $CFG->websocket_url = 'ws://127.0.0.1:1';
        $this->assertFalse(WebSocket::publish(self::launch(null), '', 'x'));
    }

    /** An HTTP answer for captureServer(): the status, a JSON body, Connection: close. */
    private static function answer(int $status, string $body): string
    {
        return "HTTP/1.1 $status X\r\nContent-Type: application/json\r\nContent-Length: " . strlen($body)
            . "\r\nConnection: close\r\n\r\n" . $body;
    }

    /**
     * A child PHP that answers $n HTTP requests on 127.0.0.1 (any port) and reports each
     * request it got. The i-th request gets $answers[i] (raw HTTP, see answer()), else
     * 200 `{"delivered":1}`; an answer given as ['stall' => raw] is sent, and the socket
     * then held open for 4 s. Returns [port, process, stdout pipe].
     */
    private static function captureServer(int $n, array $answers = []): array
    {
        $code = <<<'PHP'
            $n = (int) $argv[1];
            $answers = json_decode(stream_get_contents(STDIN), true);
            $s = stream_socket_server('tcp://127.0.0.1:0');
            echo explode(':', stream_socket_get_name($s, false))[1], "\n";
            for ($i = 0; $i < $n; $i++) {
                $c = @stream_socket_accept($s, 20);
                if ($c === false) break;
                $in = '';
                while (strpos($in, "\r\n\r\n") === false && !feof($c)) $in .= fread($c, 8192);
                [$head, $body] = explode("\r\n\r\n", $in, 2) + [1 => ''];
                $len = preg_match('/^content-length:\s*(\d+)/mi', $head, $m) ? (int) $m[1] : 0;
                while (strlen($body) < $len && !feof($c)) $body .= fread($c, 8192);
                $answer = $answers[$i] ?? "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    . "Content-Length: 16\r\nConnection: close\r\n\r\n{\"delivered\":1}\n";
                if (is_array($answer)) {
                    fwrite($c, $answer['stall']);
                    sleep(4);
                } else {
                    fwrite($c, $answer);
                }
                fclose($c);
                echo json_encode(['head' => $head, 'body' => $body]), "\n";
            }
            PHP;
        // The answers on stdin (they may be larger than an argument can be).
        $proc = proc_open([PHP_BINARY, '-n', '-r', $code, (string) $n],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w']], $pipes);
        fwrite($pipes[0], json_encode($answers));
        fclose($pipes[0]);
        $port = (int) fgets($pipes[1]);
        self::assertGreaterThan(0, $port, 'the capture server started');
        return [$port, $proc, $pipes[1]];
    }

    /** The next request the capture server got: [request line, headers, body]. */
    private static function captured($out): array
    {
        $got = json_decode((string) fgets($out), true);
        self::assertIsArray($got, 'the capture server got a request');
        $lines = explode("\r\n", $got['head']);
        $headers = [];
        foreach (array_slice($lines, 1) as $l) {
            [$k, $v] = explode(':', $l, 2);
            $headers[strtolower($k)] = trim($v);
        }
        return [$lines[0], $headers, $got['body']];
    }

    public function testPublishPostsARoomBoundShortLivedTokenToWebsocketPublishUrl(): void
    {
        global $CFG;
        [$port, $proc, $out] = self::captureServer(3);
        // websocket_url names another address, never contacted.
        $CFG->websocket_url = 'wss://127.0.0.1:1';
        $CFG->websocket_publish_url = "http://127.0.0.1:$port/sock/";
        $this->assertTrue(WebSocket::publish(self::launch(), 'grades', '{"graded":true}'));
        [$line, $headers, $body] = self::captured($out);
        $this->assertSame('POST /sock/publish HTTP/1.1', $line);
        $this->assertSame('application/json', $headers['content-type']);
        $this->assertEquals(['room' => 'grades', 'message' => '{"graded":true}'], json_decode($body, true));
        $this->assertMatchesRegularExpression('/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/', $headers['authorization']);
        $token = substr($headers['authorization'], 7);
        [$plain, $why, $room] = Ref\verify(['opensource'], $token, time(), true, 'publish');
        $this->assertSame(self::WWW . '::42::7::9', $plain, (string) $why);
        $this->assertSame('grades', $room);
        $claims = json_decode(Ref\unb64url(explode('.', $token)[1]), true);
        $this->assertSame(['iss', 'lnk', 'ctx', 'sub', 'iat', 'exp', 'scp', 'rom'], array_keys($claims));
        $this->assertSame(30, $claims['exp'] - $claims['iat']);
        // A trailing /publish is not doubled; the default room is bound as ''.
        $CFG->websocket_publish_url = "http://127.0.0.1:$port/publish";
        $this->assertTrue(WebSocket::publish(self::launch(), '', 'x'));
        [$line, $headers] = self::captured($out);
        $this->assertSame('POST /publish HTTP/1.1', $line);
        $claims = json_decode(Ref\unb64url(explode('.', substr($headers['authorization'], 7))[1]), true);
        $this->assertSame('', $claims['rom']);
        // Not set (false, as Tsugi's ConfigInfo declares it): the derived URL.
        $CFG->websocket_publish_url = false;
        $CFG->websocket_url = "ws://127.0.0.1:$port/derived";
        $this->assertTrue(WebSocket::publish(self::launch(), 'r', 'y'));
        [$line] = self::captured($out);
        $this->assertSame('POST /derived/publish HTTP/1.1', $line);
        proc_close($proc);
        // getPublishToken() is unchanged: the whole space, 300 s.
        $claims = json_decode(Ref\unb64url(explode('.', WebSocket::getPublishToken(self::launch()))[1]), true);
        $this->assertArrayNotHasKey('rom', $claims);
        $this->assertSame(300, $claims['exp'] - $claims['iat']);
    }

    public function testABadWebsocketPublishUrlMakesPublishAnswerFalseAndPostNothing(): void
    {
        global $CFG;
        // The derived URL points here: a refusal must not fall back to it.
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        $fh = fopen('php://memory', 'r');
        $bad = [true, 0, 1, 2021, -1, 1.5, NAN, [], ['http://127.0.0.1:1'], new \stdClass(),
                (object) ['url' => "http://127.0.0.1:$port"], fn () => 1, $fh,
                '', ' ', '0', 'xyzzy', 'false', 'ftp://127.0.0.1:21', 'ws://127.0.0.1:2021',
                'wss://127.0.0.1:2021', 'file:///tmp/sock', 'http://', 'https://', 'http:///publish',
                'http://:2021', 'http:/127.0.0.1', '127.0.0.1:2021', 'localhost', '/publish',
                'http://127.0.0.1:0', 'http://127.0.0.1:65536', 'http://[::1', 'http://ho st',
                " http://127.0.0.1:$port", "http://127.0.0.1:$port\n", "http://127.0.0.1:$port\0",
                "http://u:secret@127.0.0.1:$port", "http://127.0.0.1:$port/?a=1",
                "http://127.0.0.1:$port#x", "http://127.0.0.1:$port/\xff", "\xff",
                str_repeat('a', 5000)];
        $errors = [];
        set_error_handler(function (int $no, string $msg) use (&$errors) {
            $errors[] = $msg;
            return true;
        });
        try {
            foreach ($bad as $i => $v) {
                $CFG->websocket_url = "ws://127.0.0.1:$port";
                $CFG->websocket_publish_url = $v;
                $t = microtime(true);
                $this->assertFalse(WebSocket::publish(self::launch(), 'room', 'hello'), "case $i");
                $this->assertLessThan(1.5, microtime(true) - $t, "case $i: no request was tried");
                // Everything else is unaffected.
                $this->assertTrue(WebSocket::enabled(), "case $i");
                $this->assertIsString(WebSocket::getPublishToken(self::launch()), "case $i");
            }
        } finally {
            restore_error_handler();
        }
        $this->assertSame([], $errors, 'no warning, notice or deprecation');
        $this->assertFalse(@stream_socket_accept($server, 0), 'nothing connected to the derived URL');
        fclose($server);
        fclose($fh);
        // Not enabled: off, even with a good websocket_publish_url.
        $CFG->websocket_publish_url = 'http://127.0.0.1:1';
        $CFG->websocket_url = 'xyzzy';
        $this->assertFalse(WebSocket::publish(self::launch(), 'room', 'hello'));
        // A room over 256 bytes is refused before any request.
        $CFG->websocket_url = 'ws://127.0.0.1:1';
        $this->assertFalse(WebSocket::publish(self::launch(), str_repeat('r', 257), 'hello'));
    }

    public function testLastPublishSequenceIsTheSeqOfTheLastPublish(): void
    {
        global $CFG;
        $answers = [
            self::answer(200, '{"delivered":2,"seq":7}'),
            self::answer(200, '{"delivered":2,"seq":null}'),
            self::answer(200, '{"delivered":1,"seq":9007199254740991}'),
            self::answer(200, '{"delivered":1}'),                 // a daemon without sequences
            self::answer(200, '{"delivered":1,"seq":8}'),
            self::answer(403, '{"error":"forbidden","seq":9}'),   // refused: no sequence
            self::answer(200, '{"delivered":1,"seq":10}'),
            self::answer(200, 'not json'),                        // taken, no sequence
            self::answer(200, '{"delivered":1,"seq":"11"}'),
            self::answer(200, '{"delivered":1,"seq":-1}'),
            self::answer(200, '{"delivered":1,"seq":1.5}'),
            self::answer(200, '{"delivered":1,"seq":9007199254740992}'),
            self::answer(200, '[7]'),
            self::answer(200, '{"delivered":1,"seq":12,"pad":"' . str_repeat('x', 8192) . '"}'),
        ];
        [$port, $proc, $out] = self::captureServer(count($answers), $answers);
        $CFG->websocket_publish_url = "http://127.0.0.1:$port";
        $expect = [7, null, 9007199254740991, null, 8, 'refused', 10, null, null, null, null, null, null, null];
        $errors = [];
        set_error_handler(function (int $no, string $msg) use (&$errors) {
            $errors[] = $msg;
            return true;
        });
        try {
            foreach ($expect as $i => $seq) {
                $taken = WebSocket::publish(self::launch(), 'grades', "m$i");
                self::captured($out);
                $this->assertSame($seq !== 'refused', $taken, "answer $i");
                $this->assertSame($seq === 'refused' ? null : $seq, WebSocket::lastPublishSequence(), "answer $i");
            }
        } finally {
            restore_error_handler();
        }
        $this->assertSame([], $errors, 'no warning, notice or deprecation');
        proc_close($proc);
        // A publish that makes no request resets it too.
        $CFG->websocket_url = 'xyzzy';
        $this->assertFalse(WebSocket::publish(self::launch(), 'r', 'm'));
        $this->assertNull(WebSocket::lastPublishSequence());
    }

    public function testLastPublishSequenceIsNullWhenNoPublishWasMade(): void
    {
        // A request of its own (the suite's request has published already).
        $so = $this->loadedExtension();
        $out = shell_exec(escapeshellarg(PHP_BINARY) . ' -n -d extension=' . escapeshellarg($so)
            . ' -r ' . escapeshellarg('var_export(Tsugi\Core\WebSocket::lastPublishSequence());') . ' 2>&1');
        $this->assertSame('NULL', $out);
    }

    /** A presence answer for $room listing $users (user id => connections). */
    private static function presenceAnswer(string $room, array $users, array $extra = []): string
    {
        $list = [];
        foreach ($users as $user => $n) $list[] = ['user' => (string) $user, 'connections' => $n];
        return json_encode(['room' => $room, 'count' => count($users),
            'connections' => array_sum($users) + 1, 'anonymous' => 1, 'truncated' => false,
            'users' => $list] + $extra);
    }

    public function testPresenceAsksWithARoomBoundPresenceToken(): void
    {
        global $CFG;
        $room = "grades / \u{e9}t\u{e9}&x=1?#+%";
        [$port, $proc, $out] = self::captureServer(3, [
            self::answer(200, self::presenceAnswer($room, ['42' => 2, '7' => 1, 'alice' => 1])),
            self::answer(200, self::presenceAnswer('', [])),
            self::answer(200, self::presenceAnswer('r', ['9' => 1], ['truncated' => true, 'more' => [1]])),
        ]);
        // websocket_url names another address, never contacted.
        $CFG->websocket_url = 'wss://127.0.0.1:1';
        $CFG->websocket_publish_url = "http://127.0.0.1:$port/sock/";
        $this->assertSame(['42', '7', 'alice'], WebSocket::presence(self::launch(), $room));
        [$line, $headers, $body] = self::captured($out);
        $this->assertSame('GET /sock/presence?room=' . rawurlencode($room) . ' HTTP/1.1', $line);
        $this->assertSame('', $body);
        $this->assertMatchesRegularExpression('/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/', $headers['authorization']);
        $token = substr($headers['authorization'], 7);
        [$plain, $why, $bound] = Ref\verify(['opensource'], $token, time(), true, 'presence');
        $this->assertSame(self::WWW . '::42::7::9', $plain, (string) $why);
        $this->assertSame($room, $bound);
        $claims = json_decode(Ref\unb64url(explode('.', $token)[1]), true);
        $this->assertSame(['iss', 'lnk', 'ctx', 'sub', 'iat', 'exp', 'scp', 'rom'], array_keys($claims));
        $this->assertSame('presence', $claims['scp']);
        $this->assertSame(30, $claims['exp'] - $claims['iat']);
        $this->assertNull(Ref\verify(['opensource'], $token, time(), true, 'publish')[0], 'not a publish token');
        $this->assertFalse(WebSocket::decodeToken($token), 'not a browser token');
        // The default room ('' when left out), at websocket_publish_url ending in /publish.
        $CFG->websocket_publish_url = "http://127.0.0.1:$port/publish";
        $this->assertSame([], WebSocket::presence(self::launch()));
        [$line, $headers] = self::captured($out);
        $this->assertSame('GET /presence?room= HTTP/1.1', $line);
        $claims = json_decode(Ref\unb64url(explode('.', substr($headers['authorization'], 7))[1]), true);
        $this->assertSame('', $claims['rom']);
        // Not set: the address derived from websocket_url; unknown fields are allowed.
        $CFG->websocket_publish_url = false;
        $CFG->websocket_url = "ws://127.0.0.1:$port/derived";
        $this->assertSame(['9'], WebSocket::presence(self::launch(), 'r'));
        [$line] = self::captured($out);
        $this->assertSame('GET /derived/presence?room=r HTTP/1.1', $line);
        proc_close($proc);
    }

    public function testPresenceAnswersFalseForAnythingButAPresenceAnswer(): void
    {
        global $CFG;
        $good = json_decode(self::presenceAnswer('r', ['42' => 1]), true);
        $with = fn (array $change) => json_encode(array_merge($good, $change));
        $without = function (string $key) use ($good) {
            unset($good[$key]);
            return json_encode($good);
        };
        $bad = [
            self::answer(404, 'not found'),
            self::answer(401, '{"error":"no token"}'),
            self::answer(403, json_encode($good)),
            self::answer(500, json_encode($good)),
            self::answer(204, ''),
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/presence\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self::answer(200, ''),
            self::answer(200, 'not json'),
            self::answer(200, json_encode($good) . 'x'),
            self::answer(200, substr(json_encode($good), 0, -1)),
            self::answer(200, 'null'),
            self::answer(200, '[]'),
            self::answer(200, '{}'),
            self::answer(200, '["42"]'),
            self::answer(200, $with(['room' => 'other'])),
            self::answer(200, $with(['room' => null])),
            self::answer(200, $with(['users' => null])),
            self::answer(200, $with(['users' => ['42']])),
            self::answer(200, $with(['users' => [['user' => 42, 'connections' => 1]]])),
            self::answer(200, $with(['users' => [['user' => null, 'connections' => 1]]])),
            self::answer(200, $with(['users' => [['connections' => 1]]])),
            self::answer(200, $with(['users' => [['user' => '42']]])),
            self::answer(200, $with(['users' => [['user' => '42', 'connections' => -1]]])),
            self::answer(200, $with(['users' => (object) ['a' => ['user' => '42', 'connections' => 1]]])),
            self::answer(200, $with(['count' => '1'])),
            self::answer(200, $with(['connections' => 1.5])),
            self::answer(200, $with(['anonymous' => -1])),
            self::answer(200, $with(['truncated' => 0])),
            self::answer(200, $without('count')),
            self::answer(200, $without('truncated')),
            self::answer(200, $without('users')),
            // Over 1 MiB: not read to its end.
            self::answer(200, $with(['users' => array_fill(0, 40000, ['user' => '42', 'connections' => 1])])),
            // A body that says more than it sends (cut short).
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" . json_encode($good),
            "garbage\r\n\r\n",
        ];
        $n = count($bad);
        [$port, $proc, $out] = self::captureServer($n + 2, array_merge($bad, [
            self::answer(200, json_encode($good)),
            ['stall' => "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"room\":"],
        ]));
        $CFG->websocket_publish_url = "http://127.0.0.1:$port";
        $errors = [];
        set_error_handler(function (int $no, string $msg) use (&$errors) {
            $errors[] = $msg;
            return true;
        });
        try {
            for ($i = 0; $i < $n; $i++) {
                $this->assertFalse(WebSocket::presence(self::launch(), 'r'), "answer $i");
                self::captured($out);
            }
            // The same server, a right answer: the list.
            $this->assertSame(['42'], WebSocket::presence(self::launch(), 'r'));
            self::captured($out);
            // An answer whose body never ends: the 2 s bound holds.
            $t = microtime(true);
            $this->assertFalse(WebSocket::presence(self::launch(), 'r'));
            $this->assertLessThan(3.0, microtime(true) - $t);
        } finally {
            restore_error_handler();
        }
        $this->assertSame([], $errors, 'no warning, notice or deprecation');
        proc_close($proc);
    }

    public function testPresenceAnswersFalseWhenOffOrTheDaemonIsDown(): void
    {
        global $CFG;
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        fclose($server); // nothing listens there now
        $CFG->websocket_url = "ws://127.0.0.1:$port";
        $t = microtime(true);
        $this->assertFalse(WebSocket::presence(self::launch(), 'room'));
        $this->assertLessThan(2.5, microtime(true) - $t);
        // A daemon that never answers: the 2 s bound holds.
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        $CFG->websocket_url = "ws://127.0.0.1:$port";
        $t = microtime(true);
        $this->assertFalse(WebSocket::presence(self::launch(), 'room'));
        $this->assertLessThan(3.0, microtime(true) - $t);
        fclose($server);
        // No request when: not enabled, no link, a room over 256 bytes, a bad
        // websocket_publish_url, a bad websocket_ca_file, no secret.
        $server = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) explode(':', stream_socket_get_name($server, false))[1];
        $CFG->websocket_url = 'xyzzy';
        $CFG->websocket_publish_url = "http://127.0.0.1:$port";
        $this->assertFalse(WebSocket::presence(self::launch(), ''));
        $CFG->websocket_url = 'ws://127.0.0.1:1';
        $this->assertFalse(WebSocket::presence(self::launch(null), ''));
        $this->assertFalse(WebSocket::presence(self::launch(), str_repeat('r', 257)));
        $CFG->websocket_ca_file = '';
        $this->assertFalse(WebSocket::presence(self::launch(), 'r'));
        $CFG->websocket_ca_file = false;
        $CFG->websocket_secret = '';
        $this->assertFalse(WebSocket::presence(self::launch(), 'r'));
        $CFG->websocket_secret = 'opensource';
        $CFG->websocket_url = "ws://127.0.0.1:$port";
        foreach (['ftp://127.0.0.1:21', "http://u:p@127.0.0.1:$port", "http://127.0.0.1:$port/?a=1", 2021, []] as $v) {
            $CFG->websocket_publish_url = $v;
            $this->assertFalse(WebSocket::presence(self::launch(), 'r'));
        }
        $this->assertFalse(@stream_socket_accept($server, 0), 'nothing connected');
        fclose($server);
        unset($GLOBALS['CFG']);
        $this->assertFalse(WebSocket::presence(self::launch(), 'r'));
    }

    public function testPresenceArgumentsAreTyped(): void
    {
        // PHP's own TypeError, as for publish(): a room that is not a (UTF-8) string.
        foreach ([[], "\xff"] as $room) {
            try {
                WebSocket::presence(self::launch(), $room);
                $this->fail('no TypeError');
            } catch (\TypeError $e) {
                $this->assertStringContainsString('room', $e->getMessage());
            }
        }
    }

    /** The module's rows of phpinfo(), as name => value. */
    private static function info(): array
    {
        ob_start();
        (new \ReflectionExtension('tsugi_websocket'))->info();
        $text = ob_get_clean();
        $rows = [];
        foreach (explode("\n", $text) as $line) {
            if (strpos($line, ' => ') !== false) {
                [$k, $v] = explode(' => ', $line, 2);
                $rows[trim($k)] = trim($v);
            }
        }
        return $rows;
    }

    public function testModuleInfoShowsThePublishEndpointNeverTheSecret(): void
    {
        global $CFG;
        $CFG->websocket_secret = 'the-secret-value';
        $this->assertSame('derived (http://localhost:2021/publish)', self::info()['publish endpoint']);
        $CFG->websocket_publish_url = 'https://notify.internal:2021/sock';
        $this->assertSame('https://notify.internal:2021/sock/publish', self::info()['publish endpoint']);
        $CFG->websocket_publish_url = 'http://[::1]:2021/';
        $this->assertSame('http://[::1]:2021/publish', self::info()['publish endpoint']);
        $CFG->websocket_publish_url = 'ftp://notify.internal';
        $this->assertStringStartsWith('off (websocket_publish_url', self::info()['publish endpoint']);
        $CFG->websocket_publish_url = 'http://user:the-secret-value@notify.internal';
        $this->assertStringStartsWith('off', self::info()['publish endpoint']);
        $CFG->websocket_url = 'xyzzy';
        $this->assertSame('off', self::info()['publish endpoint']);
        $CFG->websocket_url = 'ws://localhost:2021';
        $CFG->websocket_publish_url = 'http://127.0.0.1:2021';
        ob_start();
        phpinfo(INFO_MODULES);
        $all = ob_get_clean();
        $this->assertStringContainsString('publish endpoint => http://127.0.0.1:2021/publish', $all);
        $this->assertStringNotContainsString('the-secret-value', $all);
    }

    /** The path of the loaded extension (skips the test when it cannot be found). */
    private function loadedExtension(): string
    {
        $so = null;
        foreach (file('/proc/self/maps') as $line) {
            if (preg_match('#\s(/\S*tsugi_websocket\.so)$#', trim($line), $m)) $so = $m[1];
        }
        if ($so === null) $this->markTestSkipped('cannot find the loaded extension file');
        return $so;
    }

    public function testPhpRiListsThePublishEndpoint(): void
    {
        // php --ri runs no script, so there is no $CFG: everything reads as off.
        $so = $this->loadedExtension();
        $out = shell_exec(escapeshellarg(PHP_BINARY) . ' -n -d extension=' . escapeshellarg($so)
            . ' --ri tsugi_websocket 2>&1');
        $this->assertStringContainsString('enabled => no', $out);
        $this->assertStringContainsString('publish endpoint => off', $out);
    }

    public function testPublishArgumentsAreTyped(): void
    {
        $this->expectException(\TypeError::class);
        WebSocket::publish(self::launch(), [], 'x');
    }

    public function testWrongArgumentCountIsPhpsOwnError(): void
    {
        $this->expectException(\ArgumentCountError::class);
        WebSocket::getToken();
    }

    public function testMillionsOfCallsLeaveMemoryFlat(): void
    {
        $n = (int) (getenv('TSUGI_MEMORY_CALLS') ?: 1000000);
        $launch = self::launch();
        $rss = function (): int {
            preg_match('/VmRSS:\s+(\d+) kB/', file_get_contents('/proc/self/status'), $m);
            return (int) $m[1];
        };
        for ($i = 0; $i < 20000; $i++) {
            WebSocket::decodeToken(WebSocket::getToken($launch));
        }
        $before = $rss();
        $heap = memory_get_usage();
        for ($i = 0; $i < $n / 2; $i++) {
            $t = WebSocket::getToken($launch);
            if (WebSocket::decodeToken($t) === false) $this->fail('round trip failed');
        }
        $grown = $rss() - $before;
        $this->assertLessThan(1024, $grown, "RSS grew by {$grown} kB over $n calls");
        // A leak of even one small allocation per call would be megabytes here.
        $this->assertLessThan(512 * 1024, memory_get_usage() - $heap);
    }
}
