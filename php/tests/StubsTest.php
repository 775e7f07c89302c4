<?php
declare(strict_types=1);

namespace TsugiNotify\Tests;

use PHPUnit\Framework\TestCase;

final class StubsTest extends TestCase
{
    public function testLoadingTheStubsFailsLoudly(): void
    {
        $this->expectException(\LogicException::class);
        $this->expectExceptionMessage('never load them');
        require __DIR__ . '/../../stubs/tsugi_websocket.stubs.php';
    }

    public function testComposerShipsTheStubsWithoutAutoloadingThem(): void
    {
        $composer = json_decode(file_get_contents(__DIR__ . '/../../composer.json'), true);
        $this->assertArrayNotHasKey('autoload', $composer);
        $this->assertContains('stubs/tsugi_websocket.stubs.php', $composer['extra']['stubs'] ?? []);
    }
}
