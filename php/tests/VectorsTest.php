<?php
declare(strict_types=1);

namespace TsugiNotify\Tests;

use PHPUnit\Framework\TestCase;
use Tsugi\Core\WebSocket;

/**
 * Every case of tests/vectors/tokens.json through WebSocket::decodeToken. Runs against a
 * test-clock build of the extension with the clock set to the vectors' "now".
 */
final class VectorsTest extends TestCase
{
    private static function assertClockAt(int $now): void
    {
        if ((int) getenv('TSUGI_WEBSOCKET_TEST_NOW') !== $now) {
            self::fail("the vectors suite needs the extension built with --features test-clock and "
                . "TSUGI_WEBSOCKET_TEST_NOW=$now (make test-php does both)");
        }
    }

    public static function cases(): array
    {
        $all = json_decode(file_get_contents(__DIR__ . '/../../tests/vectors/tokens.json'), true);
        $out = [];
        foreach ($all as $c) {
            if ($c['scope'] === null) $out[$c['name']] = [$c];
        }
        return $out;
    }

    /** @dataProvider cases */
    #[\PHPUnit\Framework\Attributes\DataProvider('cases')]
    public function testVector(array $c): void
    {
        self::assertClockAt($c['now']);
        global $CFG;
        $CFG = new \stdClass();
        $CFG->websocket_url = 'ws://localhost:2021';
        $CFG->websocket_secret = count($c['secrets']) === 1 ? $c['secrets'][0] : $c['secrets'];
        $CFG->websocket_accept_legacy = $c['accept_legacy'];
        $got = WebSocket::decodeToken($c['token']);
        $this->assertSame($c['expect'] ?? false, $got, $c['name']);
    }

    public function testEveryMintedVectorIsReproduced(): void
    {
        // The exact bytes of a minted v1 token depend on the clock, set here to the
        // vectors' now: mint the browser cases minted at that time.
        global $CFG;
        $n = 0;
        foreach (json_decode(file_get_contents(__DIR__ . '/../../tests/vectors/tokens.json'), true) as $c) {
            $m = $c['mint'] ?? null;
            if ($m === null || $m['scope'] !== null || $m['now'] !== (int) getenv('TSUGI_WEBSOCKET_TEST_NOW')) continue;
            // getToken() mints tokens bound to no room.
            if (array_key_exists('room', $m)) continue;
            $CFG = new \stdClass();
            $CFG->wwwroot = $m['wwwroot'];
            $CFG->websocket_url = 'ws://localhost:2021';
            $CFG->websocket_secret = $c['secrets'][0];
            $CFG->websocket_token_ttl = $m['ttl'];
            $launch = (object) ['link' => (object) ['id' => $m['link']]];
            if ($m['context'] !== null) $launch->context = (object) ['id' => $m['context']];
            if ($m['user'] !== null) $launch->user = (object) ['id' => $m['user']];
            $this->assertSame($c['token'], WebSocket::getToken($launch), $c['name']);
            $n++;
        }
        $this->assertGreaterThanOrEqual(8, $n);
    }
}
