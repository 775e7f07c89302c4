<?php
// Rebuilds tests/vectors/tokens.json from the inputs below, with the independent PHP
// implementation of token-format.md in reference.php. Deterministic: fixed clock,
// fixed IVs. Run: php tests/vectors/generate.php > tests/vectors/tokens.json
//
// Each case: name, format, secrets, now, token, accept_legacy, scope, expect (the
// plaintext, or null when the token must be refused), reason (why it is refused, one of
// the codes of crates/notify-core's Rejection), for an accepted token bound to a room
// "room": the room of its rom claim (no "room": bound to none), and for tokens minted
// the documented way "mint": the inputs, so that every implementation can check it
// mints the same bytes ("mint" holds "room" only for a token bound to one).

declare(strict_types=1);

namespace TsugiNotifyReference;

require __DIR__ . '/reference.php';

const S = 'vector-secret-one';
const S2 = 'vector-secret-two';
const NOW = 1767225600; // 2026-01-01T00:00:00Z
const WWW = 'https://tsugi.example.edu/tsugi';

$cases = [];

function add(array &$cases, string $name, string $token, ?string $expect, array $opt = []): void
{
    $cases[] = [
        'name' => $name,
        'format' => $opt['format'] ?? (strpos($token, '.') === false ? 'legacy' : 'v1'),
        'secrets' => $opt['secrets'] ?? [S],
        'now' => $opt['now'] ?? NOW,
        'token' => $token,
        'accept_legacy' => $opt['accept_legacy'] ?? true,
        'scope' => $opt['scope'] ?? null,
        'expect' => $expect,
        'reason' => $expect === null ? $opt['reason'] : null,
    ] + (isset($opt['room']) ? ['room' => $opt['room']] : [])
      + (isset($opt['mint']) ? ['mint' => $opt['mint']] : []);
}

/** A good v1 token, recorded with its minting inputs. */
function good(array &$cases, string $name, ?string $ctx, ?string $sub, int $ttl, array $opt = []): string
{
    $secret = ($opt['secrets'] ?? [S])[0];
    $www = $opt['wwwroot'] ?? WWW;
    $lnk = $opt['link'] ?? '42';
    $scp = $opt['mint_scope'] ?? null;
    $iat = $opt['iat'] ?? NOW;
    $rom = $opt['room'] ?? null;
    $t = v1_mint($secret, $www, $lnk, $ctx, $sub, $iat, $ttl, $scp, $rom);
    $plain = $www . '::' . $lnk . '::' . ($ctx ?? 'no_context') . '::' . ($sub ?? 'no_user');
    $opt['mint'] = ['wwwroot' => $www, 'link' => $lnk, 'context' => $ctx, 'user' => $sub,
                    'now' => $iat, 'ttl' => $ttl, 'scope' => $scp]
                 + ($rom !== null ? ['room' => $rom] : []);
    add($cases, $name, $t, $plain, $opt);
    return $t;
}

function flip(string $token, int $part, int $at): string
{
    $parts = explode('.', $token);
    $c = $parts[$part][$at];
    $parts[$part][$at] = $c === 'A' ? 'B' : 'A';
    return implode('.', $parts);
}

function refuse(array &$cases, string $name, string $token, string $reason, array $opt = []): void
{
    add($cases, $name, $token, null, ['reason' => $reason] + $opt);
}

$H = '{"alg":"HS256","typ":"JWT"}';
$claims = fn (array $extra = []) => json(['iss' => WWW, 'lnk' => '42', 'ctx' => '7', 'sub' => '9',
                                          'iat' => NOW, 'exp' => NOW + 86400] + $extra);
$raw = fn (array $c) => json($c);

// --- good v1 ---
$full = good($cases, 'v1 with context, user and expiry', '7', '9', 86400);
good($cases, 'v1 without context', null, '9', 86400);
good($cases, 'v1 without user', '7', null, 86400);
good($cases, 'v1 without context or user', null, null, 3600);
good($cases, 'v1 without expiry (ttl 0)', '7', '9', 0);
good($cases, 'v1 with an IPv6 wwwroot', '7', '9', 86400, ['wwwroot' => 'http://[::1]:8888']);
good($cases, 'v1 string ids with unicode and quotes', 'cours "é"', 'user\\1', 600,
     ['link' => 'lien-ü']);
good($cases, 'v1 second secret of two signs', '7', '9', 86400, ['secrets' => [S2, S]]);
$t = v1_mint(S2, WWW, '42', '7', '9', NOW, 86400);
add($cases, 'v1 signed by the second of two verifying secrets', $t, WWW . '::42::7::9',
    ['secrets' => [S, S2]]);
good($cases, 'v1 one second before the leeway ends', '7', '9', 100,
     ['iat' => NOW - 159]); // exp = NOW - 59: now < exp + 60
good($cases, 'v1 issued 60 s in the future (within leeway)', '7', '9', 86400, ['iat' => NOW + 60]);
good($cases, 'v1 publish token for the publish API', '7', '9', 300,
     ['mint_scope' => 'publish', 'scope' => 'publish']);
add($cases, 'v1 without typ in the header', sign_raw('{"alg":"HS256"}', $claims(), S), WWW . '::42::7::9');
add($cases, 'v1 unknown claims are ignored', sign_raw($H, $claims(['jti' => 'x', 'aud' => [1]]), S),
    WWW . '::42::7::9');

// --- refused v1: shape, encoding, size ---
refuse($cases, 'empty token', '', 'size');
refuse($cases, 'wrong secret', $full, 'signature', ['secrets' => ['not-the-secret']]);
refuse($cases, 'flipped byte in header', flip($full, 0, 10), 'signature');
refuse($cases, 'flipped byte in claims', flip($full, 1, 10), 'signature');
refuse($cases, 'flipped byte in signature', flip($full, 2, 10), 'signature');
refuse($cases, 'padding = on the signature', $full . '=', 'encoding');
$p = explode('.', $full);
refuse($cases, 'plus sign in a part', $p[0] . '.' . $p[1] . '.+' . substr($p[2], 1), 'encoding');
refuse($cases, 'slash in a part', $p[0] . '.' . $p[1] . './' . substr($p[2], 1), 'encoding');
refuse($cases, 'white space in a part', $p[0] . '.' . $p[1] . '. ' . substr($p[2], 1), 'encoding');
refuse($cases, 'trailing newline', $full . "\n", 'encoding');
refuse($cases, 'non-canonical last character of the signature',
       $p[0] . '.' . $p[1] . '.' . substr($p[2], 0, -1) . chr(ord(substr($p[2], -1)) ^ 1), 'encoding');
refuse($cases, 'two parts', $p[0] . '.' . $p[1], 'shape');
refuse($cases, 'four parts', $full . '.' . $p[2], 'shape');
refuse($cases, 'empty signature part', $p[0] . '.' . $p[1] . '.', 'shape');
refuse($cases, 'empty header part', '.' . $p[1] . '.' . $p[2], 'shape');
// Over 4096 bytes, validly signed: find paddings that land on 4096 and 4097 bytes.
foreach ([4096 => WWW . '::42::7::9', 4097 => null] as $len => $expect) {
    for ($n = 2500; $n < 3200; $n++) {
        $t = sign_raw($H, $claims(['pad' => str_repeat('x', $n)]), S);
        if (strlen($t) === $len) break;
        $t = sign_raw($H, $claims(['pad' => str_repeat('x', $n), 'p' => 1]), S);
        if (strlen($t) === $len) break;
    }
    if (strlen($t) !== $len) throw new \RuntimeException("no $len-byte token found");
    if ($expect === null) {
        refuse($cases, "validly signed token of $len bytes", $t, 'size');
    } else {
        add($cases, "validly signed token of exactly $len bytes", $t, $expect);
    }
}

// --- refused v1: header ---
refuse($cases, 'alg none, HS256 signature', sign_raw('{"alg":"none","typ":"JWT"}', $claims(), S), 'header');
$none = b64url('{"alg":"none","typ":"JWT"}') . '.' . b64url($claims()) . '.';
refuse($cases, 'alg none, unsigned', $none, 'shape');
refuse($cases, 'alg HS512 correctly signed with HS512',
       sign_raw('{"alg":"HS512","typ":"JWT"}', $claims(), S, 'sha512'), 'signature');
refuse($cases, 'alg HS512 header on an HS256 signature', sign_raw('{"alg":"HS512","typ":"JWT"}', $claims(), S), 'header');
refuse($cases, 'alg RS256', sign_raw('{"alg":"RS256","typ":"JWT"}', $claims(), S), 'header');
refuse($cases, 'alg missing', sign_raw('{"typ":"JWT"}', $claims(), S), 'header');
refuse($cases, 'alg lower case', sign_raw('{"alg":"hs256","typ":"JWT"}', $claims(), S), 'header');
refuse($cases, 'typ not JWT', sign_raw('{"alg":"HS256","typ":"JWS"}', $claims(), S), 'header');
refuse($cases, 'typ not a string', sign_raw('{"alg":"HS256","typ":null}', $claims(), S), 'header');
refuse($cases, 'header not an object', sign_raw('["HS256"]', $claims(), S), 'header');
refuse($cases, 'header not JSON', sign_raw('alg=HS256', $claims(), S), 'header');

// --- refused v1: claims ---
$c = fn (array $over, array $drop = []) => json(array_diff_key(array_merge(
    ['iss' => WWW, 'lnk' => '42', 'ctx' => '7', 'sub' => '9', 'iat' => NOW, 'exp' => NOW + 86400],
    $over), array_flip($drop)));
$badClaims = [
    'iss missing' => $c([], ['iss']),
    'iss empty' => $c(['iss' => '']),
    'iss a number' => $c(['iss' => 5]),
    'iss with a control character' => $c(['iss' => "https://a\x01b"]),
    'lnk missing' => $c([], ['lnk']),
    'lnk an integer' => $c(['lnk' => 42]),
    'lnk with ::' => $c(['lnk' => '4::2']),
    'lnk with a newline' => $c(['lnk' => "42\n"]),
    'ctx with ::' => $c(['ctx' => 'a::b']),
    'ctx a number' => $c(['ctx' => 7]),
    'sub with ::' => $c(['sub' => '9::']),
    'sub null' => $c(['sub' => null]),
    'iat missing' => $c([], ['iat']),
    'iat a string' => $c(['iat' => (string) NOW]),
    'iat a float' => $c(['iat' => NOW + 0.5]),
    'exp a string' => $c(['exp' => (string) (NOW + 10)]),
    'exp null' => $c(['exp' => null]),
];
foreach ($badClaims as $name => $json) {
    refuse($cases, "claims: $name", sign_raw($H, $json, S), 'claims');
}
refuse($cases, 'claims not an object', sign_raw($H, '[1,2,3]', S), 'claims');
refuse($cases, 'claims not JSON', sign_raw($H, '{"iss":', S), 'claims');
add($cases, 'iss with :: (IPv6 literal) is fine', sign_raw($H, $c(['iss' => 'http://[::1]']), S),
    'http://[::1]::42::7::9');

// --- refused v1: time ---
refuse($cases, 'expired exactly at the end of the leeway', v1_mint(S, WWW, '42', '7', '9', NOW - 160, 100),
       'expired'); // exp = NOW - 60
refuse($cases, 'expired long ago', v1_mint(S, WWW, '42', '7', '9', NOW - 90000, 86400), 'expired');
refuse($cases, 'issued 61 s in the future', v1_mint(S, WWW, '42', '7', '9', NOW + 61, 86400), 'not_yet_valid');

// --- scope ---
$pub = v1_mint(S, WWW, '42', '7', '9', NOW, 300, 'publish');
refuse($cases, 'publish token offered for a browser connection', $pub, 'scope');
refuse($cases, 'browser token offered to the publish API', $full, 'scope', ['scope' => 'publish']);
refuse($cases, 'unknown scope for a browser', sign_raw($H, $claims(['scp' => 'admin']), S), 'scope');
refuse($cases, 'unknown scope for publishing', sign_raw($H, $claims(['scp' => 'admin']), S), 'scope',
       ['scope' => 'publish']);

// --- legacy ---
$iv = fn (int $n) => str_repeat(chr($n), 16);
$plain = WWW . '::42::7::9';
$leg = legacy_seal(S, $plain, $iv(1));
add($cases, 'legacy token', $leg, $plain);
add($cases, 'legacy token as minted by tsugi-php (context id in the user slot)',
    legacy_seal(S, WWW . '::42::7::7', $iv(2)), WWW . '::42::7::7');
add($cases, 'legacy token without context or user', legacy_seal(S, WWW . '::42::no_context::no_user', $iv(3)),
    WWW . '::42::no_context::no_user');
add($cases, 'legacy token with an IPv6 wwwroot', legacy_seal(S, 'http://[::1]:8888::42::7::9', $iv(4)),
    'http://[::1]:8888::42::7::9');
add($cases, 'legacy token under the second secret', legacy_seal(S2, $plain, $iv(5)), $plain,
    ['secrets' => [S, S2]]);
refuse($cases, 'legacy token refused when legacy is switched off', $leg, 'legacy_disabled',
       ['accept_legacy' => false]);
refuse($cases, 'legacy token offered to the publish API', $leg, 'scope', ['scope' => 'publish']);
$rawLeg = base64_decode($leg);
$rawLeg[20] = chr(ord($rawLeg[20]) ^ 0x01);
refuse($cases, 'legacy token with a wrong mac', base64_encode($rawLeg), 'signature');
$rawLeg = base64_decode($leg);
$rawLeg[50] = chr(ord($rawLeg[50]) ^ 0x01);
refuse($cases, 'legacy token with a flipped ciphertext byte', base64_encode($rawLeg), 'signature');
refuse($cases, 'legacy token under a wrong secret', $leg, 'signature', ['secrets' => ['not-the-secret']]);
$key = hash('sha256', S, true);
$ct = openssl_encrypt(str_repeat("\x00", 32), 'aes-256-cbc', $key, OPENSSL_RAW_DATA | OPENSSL_ZERO_PADDING, $iv(6));
refuse($cases, 'legacy token with bad padding (authentic mac)', legacy_pack($key, $iv(6), $ct), 'legacy_padding');
refuse($cases, 'legacy token with three pieces', legacy_seal(S, WWW . '::42::7', $iv(7)), 'legacy_plaintext');
refuse($cases, 'legacy token whose plaintext is not UTF-8', legacy_seal(S, "a::b::c::\xff", $iv(8)), 'legacy_plaintext');
add($cases, 'legacy token with five pieces splits from the right', legacy_seal(S, 'a::b::c::d::e', $iv(9)),
    'a::b::c::d::e');
refuse($cases, 'legacy token too short', base64_encode(str_repeat('x', 48)), 'legacy_length');
refuse($cases, 'legacy token with a partial block', base64_encode(str_repeat('x', 70)), 'legacy_length');
refuse($cases, 'legacy token that is not base64', 'not*base64', 'encoding');
refuse($cases, 'legacy token without its padding',
       rtrim(legacy_seal(S, 'a::b::c::d', $iv(10)), '='), 'encoding');

// --- room binding (rom) ---
good($cases, 'v1 publish token bound to a room', '7', '9', 30,
     ['mint_scope' => 'publish', 'scope' => 'publish', 'room' => 'grades']);
good($cases, 'v1 publish token bound to the default room', '7', '9', 30,
     ['mint_scope' => 'publish', 'scope' => 'publish', 'room' => '']);
good($cases, 'v1 browser token bound to a room', '7', '9', 86400, ['room' => 'lobby']);
good($cases, 'v1 room with quotes, a backslash and unicode', null, '9', 600,
     ['room' => 'q "1" \\ ü/€']);
$room256 = str_repeat('é', 128); // 256 bytes
good($cases, 'v1 room of exactly 256 bytes', '7', '9', 30,
     ['mint_scope' => 'publish', 'scope' => 'publish', 'room' => $room256]);
$pubRoom = v1_mint(S, WWW, '42', '7', '9', NOW, 30, 'publish', 'grades');
refuse($cases, 'room-bound publish token offered for a browser connection', $pubRoom, 'scope');
refuse($cases, 'room-bound browser token offered to the publish API',
       v1_mint(S, WWW, '42', '7', '9', NOW, 86400, null, 'lobby'), 'scope', ['scope' => 'publish']);
refuse($cases, 'expired room-bound publish token', v1_mint(S, WWW, '42', '7', '9', NOW - 91, 30, 'publish', 'grades'),
       'expired', ['scope' => 'publish']); // exp = NOW - 61
$badRooms = [
    'rom a number' => 5,
    'rom null' => null,
    'rom true' => true,
    'rom an array' => ['grades'],
    'rom an object' => ['room' => 'grades'],
    'rom of 257 bytes' => str_repeat('r', 257),
    'rom of 257 bytes in 129 characters' => $room256 . 'x',
];
foreach ($badRooms as $name => $rom) {
    refuse($cases, "claims: $name, publish token", sign_raw($H, $c(['scp' => 'publish', 'rom' => $rom]), S),
           'claims', ['scope' => 'publish']);
    refuse($cases, "claims: $name, browser token", sign_raw($H, $c(['rom' => $rom]), S), 'claims');
}

echo json_encode($cases, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
