<?php
// An independent implementation of token-format.md in plain PHP (hash_hmac, openssl),
// written from the document alone. It regenerates tests/vectors/tokens.json
// (generate.php), checks every case of it (check.php), and verifies tokens minted by
// the Rust core and the extension.

declare(strict_types=1);

namespace TsugiNotifyReference;

const MAX_TOKEN_BYTES = 4096;
const LEEWAY = 60;

function b64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

/** Strict base64url without padding; null when the part is not canonical. */
function unb64url(string $part): ?string
{
    if ($part === '' || !preg_match('/^[A-Za-z0-9_-]+$/', $part) || strlen($part) % 4 === 1) {
        return null;
    }
    $bytes = base64_decode(strtr($part, '-_', '+/'), true);
    if ($bytes === false || b64url($bytes) !== $part) {
        return null; // stray trailing bits: not the canonical encoding
    }
    return $bytes;
}

function json(array $value): string
{
    return json_encode(
        $value,
        JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_LINE_TERMINATORS | JSON_THROW_ON_ERROR
    );
}

/** Signs any header and claims (already JSON) with HS256 (or another hash for bad cases). */
function sign_raw(string $headerJson, string $claimsJson, string $secret, string $algo = 'sha256'): string
{
    $input = b64url($headerJson) . '.' . b64url($claimsJson);
    return $input . '.' . b64url(hash_hmac($algo, $input, $secret, true));
}

/** Mints a v1 token exactly as documented ($rom: the room it is bound to, if any). */
function v1_mint(string $secret, string $iss, string $lnk, ?string $ctx, ?string $sub,
                 int $now, int $ttl, ?string $scp = null, ?string $rom = null): string
{
    $claims = ['iss' => $iss, 'lnk' => $lnk];
    if ($ctx !== null) $claims['ctx'] = $ctx;
    if ($sub !== null) $claims['sub'] = $sub;
    $claims['iat'] = $now;
    if ($ttl > 0) $claims['exp'] = $now + $ttl;
    if ($scp !== null) $claims['scp'] = $scp;
    if ($rom !== null) $claims['rom'] = $rom;
    return sign_raw('{"alg":"HS256","typ":"JWT"}', json($claims), $secret);
}

function has_control(string $s): bool
{
    return preg_match('/[\x00-\x1f\x7f]|\xc2[\x80-\x9f]/', $s) === 1;
}

/** Longest room name, in bytes. */
const MAX_ROOM_BYTES = 256;

/**
 * Verifies a token. Returns [plaintext, null, room] or [null, reason]; room is
 * the room a v1 token is bound to (its rom claim), or null when it is bound to none.
 * $scope is null for a browser connection, 'publish' for the publish API. The room
 * check (8) needs the room the token is used for: see room_allows().
 */
function verify(array $secrets, string $token, int $now, bool $acceptLegacy, ?string $scope): array
{
    if ($token === '' || strlen($token) > MAX_TOKEN_BYTES) return [null, 'size'];
    if (strpos($token, '.') === false) {
        if (!$acceptLegacy) return [null, 'legacy_disabled'];
        [$plain, $why] = legacy_verify($secrets, $token);
        if ($plain === null) return [null, $why];
        return $scope === null ? [$plain, null, null] : [null, 'scope'];
    }
    // 1. shape
    $parts = explode('.', $token);
    if (count($parts) !== 3 || in_array('', $parts, true)) return [null, 'shape'];
    // 2. strict base64url
    $decoded = array_map(__NAMESPACE__ . '\\unb64url', $parts);
    if (in_array(null, $decoded, true)) return [null, 'encoding'];
    // 3. signature under any secret, constant time
    $input = $parts[0] . '.' . $parts[1];
    $ok = false;
    foreach ($secrets as $s) {
        if (hash_equals(hash_hmac('sha256', $input, $s, true), $decoded[2])) $ok = true;
    }
    if (!$ok) return [null, 'signature'];
    // 4. header
    $h = json_decode($decoded[0]);
    if (!($h instanceof \stdClass) || !isset($h->alg) || $h->alg !== 'HS256') return [null, 'header'];
    if (property_exists($h, 'typ') && $h->typ !== 'JWT') return [null, 'header'];
    // 5. claims
    $c = json_decode($decoded[1]);
    if (!($c instanceof \stdClass)) return [null, 'claims'];
    foreach (['iss', 'lnk'] as $k) {
        if (!property_exists($c, $k) || !is_string($c->$k) || $c->$k === '' || has_control($c->$k)) {
            return [null, 'claims'];
        }
    }
    foreach (['ctx', 'sub', 'scp', 'rom'] as $k) {
        if (property_exists($c, $k) && !is_string($c->$k)) return [null, 'claims'];
    }
    if (property_exists($c, 'rom') && strlen($c->rom) > MAX_ROOM_BYTES) return [null, 'claims'];
    foreach (['lnk', 'ctx', 'sub'] as $k) {
        if (property_exists($c, $k) && strpos($c->$k, '::') !== false) return [null, 'claims'];
    }
    if (!property_exists($c, 'iat') || !is_int($c->iat)) return [null, 'claims'];
    if (property_exists($c, 'exp') && !is_int($c->exp)) return [null, 'claims'];
    // 6. time
    if (property_exists($c, 'exp') && !($now < $c->exp + LEEWAY)) return [null, 'expired'];
    if (!($c->iat <= $now + LEEWAY)) return [null, 'not_yet_valid'];
    // 7. scope: absent for a browser, "publish" for the publish API, nothing else
    $scp = property_exists($c, 'scp') ? $c->scp : null;
    if ($scp !== $scope) return [null, 'scope'];
    $plain = $c->iss . '::' . $c->lnk . '::' . ($c->ctx ?? 'no_context') . '::' . ($c->sub ?? 'no_user');
    return [$plain, null, $c->rom ?? null];
}

/** 8. A token bound to $bound (null: none) may be used for $room ('' is the default room). */
function room_allows(?string $bound, string $room): bool
{
    return $bound === null || $bound === $room;
}

/** Seals a legacy token with a given IV (16 bytes). */
function legacy_seal(string $secret, string $plain, string $iv): string
{
    $key = hash('sha256', $secret, true);
    $ct = openssl_encrypt($plain, 'aes-256-cbc', $key, OPENSSL_RAW_DATA, $iv);
    return legacy_pack($key, $iv, $ct);
}

/** iv || HMAC(key, ct || iv) || ct, base64. */
function legacy_pack(string $key, string $iv, string $ct): string
{
    return base64_encode($iv . hash_hmac('sha256', $ct . $iv, $key, true) . $ct);
}

function legacy_verify(array $secrets, string $token): array
{
    $raw = base64_decode($token, true);
    if ($raw === false || base64_encode($raw) !== $token) return [null, 'encoding'];
    $n = strlen($raw);
    if ($n < 64 || ($n - 48) % 16 !== 0) return [null, 'legacy_length'];
    $iv = substr($raw, 0, 16);
    $mac = substr($raw, 16, 32);
    $ct = substr($raw, 48);
    foreach ($secrets as $s) {
        $key = hash('sha256', $s, true);
        if (!hash_equals(hash_hmac('sha256', $ct . $iv, $key, true), $mac)) continue;
        $plain = openssl_decrypt($ct, 'aes-256-cbc', $key, OPENSSL_RAW_DATA, $iv);
        if ($plain === false) return [null, 'legacy_padding'];
        if (preg_match('//u', $plain) !== 1 || count(explode('::', $plain)) < 4) {
            return [null, 'legacy_plaintext'];
        }
        return [$plain, null];
    }
    return [null, 'signature'];
}
