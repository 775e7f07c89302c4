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
        $composer = json_decode(file_get_contents(__DIR__ . '/../../stubs/composer.json'), true);
        $this->assertSame('tsugi/notify-stubs', $composer['name']);
        $this->assertArrayNotHasKey('autoload', $composer);
        $this->assertContains('tsugi_websocket.stubs.php', $composer['extra']['stubs'] ?? []);
        $this->assertFileExists(__DIR__ . '/../../stubs/' . $composer['extra']['phpstan']['includes'][0]);
    }

    public function testTheRootPackageDescribesTheExtensionForPie(): void
    {
        $composer = json_decode(file_get_contents(__DIR__ . '/../../composer.json'), true);
        $this->assertSame('php-ext', $composer['type']);
        $this->assertSame('tsugi_websocket', $composer['php-ext']['extension-name']);
        $this->assertFileExists(__DIR__ . '/../../' . $composer['php-ext']['build-path'] . '/config.m4');
    }
}
