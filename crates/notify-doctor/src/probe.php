<?php
// tsugi-notify-doctor's probe, read by PHP from standard input:
//   php -- CONFIG info ROOM          what this PHP and the site's config make of notifications
//   php -- CONFIG publish ROOM MSG   WebSocket::publish() for the doctor's launch
// It loads Tsugi's config.php as a page would and prints one line, a marker and JSON.
// The secret is never printed: only whether one is set. Tokens go to the doctor only.
// Its variables are prefixed: config.php and what it includes share this scope.

$__tnd_done = false;
$__tnd_args = [
    'config' => $argv[1] ?? '',
    'mode' => $argv[2] ?? 'info',
    'room' => $argv[3] ?? 'tsugi-notify-doctor',
    'message' => $argv[4] ?? '',
];

function __tnd_emit(array $out)
{
    echo "\n@@tsugi-notify-doctor@@ ", json_encode($out, JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR), "\n";
}

$__tnd_out = [
    'php_version' => PHP_VERSION,
    'scan_dir' => PHP_CONFIG_FILE_SCAN_DIR,
    'scanned' => array_values(array_filter(array_map('trim', explode(',', (string) php_ini_scanned_files())))),
    'preload' => (string) ini_get('opcache.preload'),
    'extension_loaded' => extension_loaded('tsugi_websocket'),
    'extension_version' => phpversion('tsugi_websocket') ?: null,
];
$GLOBALS['__tnd_base'] = $__tnd_out;

register_shutdown_function(function () {
    if ($GLOBALS['__tnd_done'] ?? false) {
        return;
    }
    // The config stopped PHP. Only a duplicate class declaration is quoted (it names a
    // class); any other message could quote the config's own lines, the secret's too.
    $e = error_get_last();
    while (ob_get_level() > 0) {
        ob_end_clean();
    }
    if ($e && strpos($e['message'], 'Cannot declare class') === 0) {
        $why = strtok($e['message'], ',') . ' in ' . $e['file'] . ':' . $e['line'];
    } elseif ($e) {
        $why = 'a PHP error (type ' . $e['type'] . ') in ' . $e['file'] . ':' . $e['line'];
    } else {
        $why = 'the config ended PHP (exit, or an uncaught exception)';
    }
    __tnd_emit($GLOBALS['__tnd_base'] + ['fatal' => $why]);
});

if (!is_file($__tnd_args['config'])) {
    $__tnd_done = true;
    __tnd_emit($__tnd_out + ['config_missing' => true]);
    exit(0);
}

ob_start();
chdir(dirname($__tnd_args['config']));
require $__tnd_args['config'];
ob_end_clean();

(function ($out, $args) {
    $W = 'Tsugi\Core\WebSocket';
    $cfg = $GLOBALS['CFG'] ?? null;
    $get = function ($k) use ($cfg) {
        return (is_object($cfg) && isset($cfg->$k)) ? $cfg->$k : null;
    };
    $scalar = function ($v) {
        return (is_scalar($v) || $v === null) ? $v : gettype($v);
    };
    $out['cfg'] = [
        'present' => is_object($cfg),
        'wwwroot' => $scalar($get('wwwroot')),
        'websocket_url' => $scalar($get('websocket_url')),
        'websocket_publish_url' => $scalar($get('websocket_publish_url')),
        'websocket_token_format' => $scalar($get('websocket_token_format')),
        'secret_set' => !empty($get('websocket_secret')),
    ];
    $out['time'] = time();
    $launch = (object) [
        'link' => (object) ['id' => 'tsugi-notify-doctor'],
        'context' => (object) ['id' => 'tsugi-notify-doctor'],
        'user' => (object) ['id' => 'tsugi-notify-doctor'],
    ];
    if (!class_exists($W)) {
        $out['class'] = null;
    } else {
        $r = new ReflectionClass($W);
        $out['class'] = ['internal' => $r->isInternal(), 'file' => $r->getFileName() ?: null];
        $call = function ($m) use ($W) {
            return method_exists($W, $m) ? $W::$m() : null;
        };
        $out['enabled'] = (bool) $call('enabled');
        $out['host'] = $call('getHost');
        $out['port'] = $call('getPort');
        $out['proxyport'] = $call('getProxyPort');
        if ($args['mode'] === 'publish') {
            $out['published'] = method_exists($W, 'publish') ? $W::publish($launch, $args['room'], $args['message']) : null;
        } elseif ($out['enabled'] && method_exists($W, 'getToken')) {
            $out['token'] = $W::getToken($launch);
            $parts = is_string($out['token']) ? explode('.', $out['token']) : [];
            if (count($parts) === 3) {
                $claims = json_decode(base64_decode(strtr($parts[1], '-_', '+/')), true);
                $out['token_iat'] = is_array($claims) && is_int($claims['iat'] ?? null) ? $claims['iat'] : null;
            }
            if ($r->isInternal() && is_object($cfg)) {
                // The same launch as a legacy token, to tell a daemon that knows only those.
                $had = property_exists($cfg, 'websocket_token_format');
                $was = $had ? $cfg->websocket_token_format : null;
                $cfg->websocket_token_format = 'legacy';
                $out['legacy_token'] = $W::getToken($launch);
                if ($had) {
                    $cfg->websocket_token_format = $was;
                } else {
                    unset($cfg->websocket_token_format);
                }
            }
        }
    }
    $GLOBALS['__tnd_done'] = true;
    __tnd_emit($out);
})($__tnd_out, $__tnd_args);
