<?php
// Checks every case of tokens.json with the independent PHP implementation
// (reference.php): each verifies or is refused exactly as recorded, with the recorded
// reason and bound room, and each minted case is reproduced byte for byte.
// Run: php tests/vectors/check.php [tokens.json]

declare(strict_types=1);

namespace TsugiNotifyReference;

require __DIR__ . '/reference.php';

$file = $argv[1] ?? __DIR__ . '/tokens.json';
$cases = json_decode(file_get_contents($file), true, 512, JSON_THROW_ON_ERROR);
$failed = 0;
foreach ($cases as $case) {
    $got = verify($case['secrets'], $case['token'], $case['now'], $case['accept_legacy'], $case['scope']);
    [$plain, $why] = $got;
    $room = $got[2] ?? null;
    if ($plain !== $case['expect'] || $why !== $case['reason']) {
        $failed++;
        fprintf(STDERR, "FAIL %s: got %s / %s\n", $case['name'], var_export($plain, true), var_export($why, true));
    }
    // A case without "room" is a token bound to no room.
    if ($room !== ($case['room'] ?? null)) {
        $failed++;
        fprintf(STDERR, "FAIL %s: bound to room %s\n", $case['name'], var_export($room, true));
    }
    if (isset($case['mint'])) {
        $m = $case['mint'];
        $t = v1_mint($case['secrets'][0], $m['wwwroot'], $m['link'], $m['context'], $m['user'],
                     $m['now'], $m['ttl'], $m['scope'], $m['room'] ?? null);
        if ($t !== $case['token']) {
            $failed++;
            fprintf(STDERR, "FAIL %s: minted a different token\n", $case['name']);
        }
    }
}
$n = count($cases);
printf("vectors: %d passed, %d failed\n", $n - $failed, $failed);
exit($failed === 0 ? 0 : 1);
