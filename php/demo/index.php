<?php
// A small Tsugi-style tool page for `make demo`: it mints a real token with the native
// WebSocket::getToken() for the chosen user, link and room, and chats through the
// browser client (php/tsugi-notify.js) and tsugi-notifyd. It opts in to the
// tsugi-notify.v1 subprotocol (docs/protocol.md): it lists who is in the room, and after
// a reconnect shows the messages it missed, or says that it could not recover them.
declare(strict_types=1);

use Tsugi\Core\WebSocket;

header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');
if (!extension_loaded('tsugi_websocket')) {
    http_response_code(500);
    echo 'The tsugi_websocket extension is not loaded: run make demo.';
    exit;
}

$CFG = new stdClass();
$CFG->wwwroot = getenv('TSUGI_DEMO_WWWROOT') ?: 'http://127.0.0.1:8080';
$CFG->websocket_url = getenv('TSUGI_DEMO_WS_URL') ?: 'ws://127.0.0.1:2021';
$CFG->websocket_secret = getenv('TSUGI_DEMO_SECRET') ?: 'opensource';

$user = (string) ($_GET['user'] ?? 'alice');
$link = (string) ($_GET['link'] ?? '1');
$room = (string) ($_GET['room'] ?? 'lobby');
$launch = (object) [
    'link' => (object) ['id' => $link],
    'context' => (object) ['id' => 'demo-course'],
    'user' => (object) ['id' => $user],
];
$token = WebSocket::enabled() ? WebSocket::getToken($launch) : false;
$h = fn (string $s): string => htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
$js = fn ($v): string => json_encode($v, JSON_HEX_TAG | JSON_HEX_AMP | JSON_HEX_APOS | JSON_HEX_QUOT | JSON_UNESCAPED_SLASHES);
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tsugi-notify demo: <?= $h($user) ?> in <?= $h($room) ?></title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 42em; color: #222; }
  form.who input { width: 8em; }
  #status { display: inline-block; padding: .1em .6em; border-radius: 1em; background: #eee; }
  #status.open { background: #cfc; } #status.down { background: #fdc; }
  #messages { border: 1px solid #ccc; height: 18em; overflow-y: auto; padding: .5em; margin: 1em 0; }
  #messages .mine { color: #555; } #messages .from { font-weight: 600; }
  #messages .notice { color: #666; font-style: italic; }
  #messages .notice.lost { color: #a40; }
  #messages .recovered::after { content: " (recovered)"; color: #888; font-size: 85%; }
  #people { list-style: none; padding: 0; margin: .3em 0; display: inline; }
  #people li { display: inline-block; margin-right: .5em; padding: 0 .5em; border-radius: 1em; background: #eef; }
  #people li.me { background: #def; }
  #text { width: 75%; }
</style>
</head>
<body>
<h1>tsugi-notify demo</h1>
<form class="who" method="get">
  user <input name="user" value="<?= $h($user) ?>">
  link <input name="link" value="<?= $h($link) ?>">
  room <input name="room" value="<?= $h($room) ?>">
  <button>switch</button>
</form>
<?php if ($token === false): ?>
  <p id="status" class="down">No token: notifications are not configured, or an id cannot go in a token.</p>
<?php else: ?>
  <p>Space <code><?= $h((string) WebSocket::getSpaceFromToken((string) WebSocket::decodeToken($token))) ?></code>,
     room <code><?= $h($room) ?></code>. Open this page as another user in another window.
     <span id="status">connecting</span></p>
  <div id="room">In the room: <ul id="people" aria-live="polite"></ul> <span id="counts"></span></div>
  <div id="messages" aria-live="polite"></div>
  <form id="say">
    <input id="text" autocomplete="off" placeholder="Say something" maxlength="2000">
    <button id="send">Send</button>
  </form>
  <script>var _TSUGI = { websocket_url: <?= $js($CFG->websocket_url) ?>, websocket_token: <?= $js($token) ?> };</script>
  <script src="/tsugi-notify.js"></script>
  <script>
  (function () {
    var me = <?= $js($user) ?>;
    var list = document.getElementById('messages');
    var status = document.getElementById('status');
    var people = document.getElementById('people');
    var counts = document.getElementById('counts');
    function show(from, text, mine, recovered) {
      var line = document.createElement('div');
      line.className = (mine ? 'mine' : 'theirs') + (recovered ? ' recovered' : '');
      var who = document.createElement('span');
      who.className = 'from';
      who.textContent = from + ': ';
      line.appendChild(who);
      line.appendChild(document.createTextNode(text));
      list.appendChild(line);
      list.scrollTop = list.scrollHeight;
    }
    function notice(text, cls) {
      var line = document.createElement('div');
      line.className = 'notice' + (cls ? ' ' + cls : '');
      line.textContent = text;
      list.appendChild(line);
      list.scrollTop = list.scrollHeight;
    }
    function state(text, cls) { status.textContent = text; status.className = cls; }
    // Who is in the room: user ids with their tab counts (null: not known, e.g. a
    // daemon without the subprotocol, or a room too large to list).
    function showPeople() {
      var users = notify.presence();
      var c = notify.presenceCounts();
      people.textContent = '';
      counts.textContent = '';
      if (users === null) {
        counts.textContent = c ? c.count + ' users, ' + c.connections + ' tabs' : 'not known';
        return;
      }
      for (var i = 0; i < users.length; i++) {
        var li = document.createElement('li');
        li.setAttribute('data-user', users[i].user);
        li.setAttribute('data-connections', String(users[i].connections));
        if (users[i].user === notify.user) li.className = 'me';
        li.textContent = users[i].user + (users[i].user === notify.user ? ' (you)' : '') +
            (users[i].connections > 1 ? ': ' + users[i].connections + ' tabs' : '');
        people.appendChild(li);
      }
      if (c && c.anonymous > 0) counts.textContent = '+ ' + c.anonymous + ' anonymous';
    }
    var notify = new TsugiNotify(<?= $js($room) ?>, { minDelay: 250, maxDelay: 5000, presence: true, recover: true });
    window.demoNotify = notify;   // for the browser test and the console
    notify.on('open', function (e) {
      state(e.reconnected ? 'connected (reconnected)' : 'connected', 'open');
      if (notify.protocol === '') showPeople();
      if (!e.reconnected) return;
      if (e.recovered === true) {
        notice('Reconnected: the messages sent meanwhile were recovered.', 'recovered-ok');
      } else if (e.recovered === false) {
        notice('Reconnected: the messages sent meanwhile could not be recovered' +
            (e.reason ? ' (' + e.reason + ')' : '') + '; some may be missing.', 'lost');
      } else {
        notice('Reconnected: messages sent meanwhile are not shown.', 'lost');
      }
    });
    notify.on('presence', showPeople);
    notify.on('change', showPeople);
    notify.on('close', function () { state('reconnecting', 'down'); });
    notify.on('giveup', function () { state('gave up: reload the page for a new token', 'down'); });
    notify.on('message', function (e) {
      try { var m = JSON.parse(e.data); show(String(m.user), String(m.text), false, e.recovered); }
      catch (err) { show('?', String(e.data), false, e.recovered); }
    });
    document.getElementById('say').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var input = document.getElementById('text');
      if (!input.value) return;
      notify.send(JSON.stringify({ user: me, text: input.value }));
      show(me, input.value, true);
      input.value = '';
    });
  })();
  </script>
<?php endif; ?>
</body>
</html>
