<?php
declare(strict_types=1);

namespace TsugiNotify\Tests;

/** Tsugi's own ConfigInfo declares these with false defaults. */
class ConfigInfo
{
    public $wwwroot = false;
    public $websocket_url = false;
    public $websocket_secret = false;
    public $websocket_proxyport = false;

    public function __construct($wwwroot = false)
    {
        $this->wwwroot = $wwwroot;
    }
}

final class ReadonlyConfig
{
    public function __construct(
        public readonly string $wwwroot,
        public readonly string $websocket_url,
        public readonly string|array $websocket_secret,
        public readonly ?int $websocket_proxyport = null,
    ) {
    }
}

/** A config whose values come through __get / __isset only. */
final class MagicConfig
{
    private array $values;

    public function __construct(array $values)
    {
        $this->values = $values;
    }

    public function __get(string $name)
    {
        return $this->values[$name] ?? null;
    }

    public function __isset(string $name): bool
    {
        return isset($this->values[$name]);
    }
}

/** A config that throws when read: the extension must not crash or swallow it silently. */
final class ThrowingConfig
{
    public function __isset(string $name): bool
    {
        throw new \RuntimeException("isset $name");
    }
}

final class Launch
{
    public ?object $link = null;
    public ?object $context = null;
    public ?object $user = null;

    public static function of($link, $context = null, $user = null): self
    {
        $l = new self();
        $l->link = $link === null ? null : (object) ['id' => $link];
        $l->context = $context === null ? null : (object) ['id' => $context];
        $l->user = $user === null ? null : (object) ['id' => $user];
        return $l;
    }
}
