// The demo in a real browser: Debian's Chromium driven by Playwright (playwright-core,
// executablePath /usr/bin/chromium). Two users in one room and a third in another room
// of the same link: a message typed by the first shows for the second and not the
// third; after the daemon is killed and started again, the pages reconnect and deliver.
// The demo speaks tsugi-notify.v1 (docs/protocol.md): the pages see each other in
// presence, and a page whose socket was down gets what it missed, in order, once. And
// against a server that selects no subprotocol, the client falls back to raw frames.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const daemonBin = path.join(root, 'target/release/tsugi-notifyd');
const ext = path.join(root, 'target/release/libtsugi_websocket.so');
const shotDir = path.join(root, 'target/browser');
const procs = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function start(cmd, args, env = {}) {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  p.log = '';
  p.stderr.on('data', (d) => { p.log += d; });
  procs.push(p);
  return p;
}

async function waitFor(fn, what, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function startDaemon(wsPort, extra = []) {
  const d = start(daemonBin, ['--dev', '--url', `ws://127.0.0.1:${wsPort}`, '--metrics-bind', 'off', ...extra]);
  return waitFor(() => d.log.includes('listening'), 'the daemon').then(() => d);
}

after(() => { for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });

function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// waitForFunction's default polls on animation frames, which a page in the background
// gets about once a second.
const POLL = (timeout) => ({ timeout, polling: 50 });

async function startDemo() {
  const [httpPort, wsPort] = [await freePort(), await freePort()];
  const daemon = await startDaemon(wsPort);
  const php = start('php', ['-d', `extension=${ext}`, '-S', `127.0.0.1:${httpPort}`, '-t', path.join(root, 'php')], {
    TSUGI_DEMO_WS_URL: `ws://127.0.0.1:${wsPort}`,
    TSUGI_DEMO_WWWROOT: `http://127.0.0.1:${httpPort}`,
  });
  await waitFor(() => php.log.includes('started'), 'php -S');
  return { httpPort, wsPort, daemon };
}

test('two users chat in a room, a third room hears nothing, pages survive a daemon restart', async () => {
  const [httpPort, wsPort] = [await freePort(), await freePort()];
  let daemon = await startDaemon(wsPort);
  const php = start('php', ['-d', `extension=${ext}`, '-S', `127.0.0.1:${httpPort}`, '-t', path.join(root, 'php')], {
    TSUGI_DEMO_WS_URL: `ws://127.0.0.1:${wsPort}`,
    TSUGI_DEMO_WWWROOT: `http://127.0.0.1:${httpPort}`,
  });
  await waitFor(() => php.log.includes('started'), 'php -S');

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext();
    const open = async (user, room) => {
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${httpPort}/demo/?user=${user}&room=${room}`);
      await page.waitForSelector('#status.open', { timeout: 10000 });
      return page;
    };
    const alice = await open('alice', 'lobby');
    const bob = await open('bob', 'lobby');
    const carol = await open('carol', 'kitchen');

    await alice.fill('#text', 'hello bob');
    await alice.click('#send');
    await bob.waitForSelector('#messages .theirs:has-text("alice: hello bob")', { timeout: 5000 });
    await carol.waitForTimeout(500);
    assert.equal(await carol.locator('#messages .theirs').count(), 0, 'another room hears nothing');
    assert.equal(await alice.locator('#messages .theirs').count(), 0, 'no echo');

    // Kill the daemon hard and start it again: the pages reconnect by themselves.
    daemon.kill('SIGKILL');
    await bob.waitForSelector('#status.down', { timeout: 10000 });
    daemon = await startDaemon(wsPort);
    for (const p of [alice, bob, carol]) {
      await p.waitForSelector('#status:has-text("reconnected")', { timeout: 20000 });
    }
    await alice.fill('#text', 'still there?');
    await alice.click('#send');
    await bob.waitForSelector('#messages .theirs:has-text("alice: still there?")', { timeout: 5000 });
    await carol.waitForTimeout(300);
    assert.equal(await carol.locator('#messages .theirs').count(), 0);
    // The demo says the reconnect recovered nothing: a daemon restarted without Redis
    // has another history (reason "epoch"); over raw frames nothing can be recovered.
    await bob.waitForSelector('#messages .notice.lost', { timeout: 5000 });
    if (await bob.evaluate(() => window.demoNotify.protocol) === 'tsugi-notify.v1') {
      assert.match(await bob.locator('#messages .notice.lost').first().textContent(), /\(epoch\)/);
    }

    mkdirSync(shotDir, { recursive: true });
    const shot = path.join(shotDir, 'demo-bob.png');
    await bob.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
  } finally {
    await browser.close();
  }
});

// Bob's page loses its socket, Alice sends meanwhile; when Bob is back, the daemon
// recovers what he missed: each message once, in order, recovered: true, then live ones.
test('tsugi-notify.v1 in the demo: presence across pages, and a reconnect recovers what was missed', async () => {
  const { httpPort } = await startDemo();
  const deadPort = await freePort();   // nothing listens there: a page "offline" dials it
  const browser = await launch();
  try {
    const context = await browser.newContext();
    // Each page's WebSocket, wrapped: window.__offline sends new sockets to a dead port,
    // window.__sockets holds them (the test closes the open one to cut the page off).
    await context.addInitScript((dead) => {
      const Native = window.WebSocket;
      window.__offline = false;
      window.__sockets = [];
      window.WebSocket = class extends Native {
        constructor(url, protocols) {
          const u = window.__offline ? `ws://127.0.0.1:${dead}/` : url;
          if (protocols === undefined) super(u); else super(u, protocols);
          window.__sockets.push(this);
        }
      };
    }, deadPort);
    const open = async (user) => {
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${httpPort}/demo/?user=${user}&room=lobby`);
      await page.waitForSelector('#status.open', { timeout: 10000 });
      return page;
    };
    const alice = await open('alice');
    const bob = await open('bob');
    for (const p of [alice, bob]) {
      assert.equal(await p.evaluate(() => window.demoNotify.protocol), 'tsugi-notify.v1',
        'the daemon selected the subprotocol');
    }
    assert.equal(await bob.evaluate(() => window.demoNotify.user), 'bob', 'hello names the user');

    // Presence: each sees the other, and itself.
    await alice.waitForSelector('#people li[data-user="bob"]', { timeout: 5000 });
    await alice.waitForSelector('#people li.me[data-user="alice"]', { timeout: 5000 });
    await bob.waitForSelector('#people li[data-user="alice"]', { timeout: 5000 });
    await bob.waitForSelector('#people li.me[data-user="bob"]', { timeout: 5000 });
    // A second tab of Bob's is one user with two connections; closing it, one again.
    const bob2 = await open('bob');
    await alice.waitForSelector('#people li[data-user="bob"][data-connections="2"]', { timeout: 5000 });
    await bob2.close();
    await alice.waitForSelector('#people li[data-user="bob"][data-connections="1"]', { timeout: 5000 });
    const users = (await alice.evaluate(() => window.demoNotify.presence())).map((u) => `${u.user}:${u.connections}`).sort();
    assert.deepEqual(users, ['alice:1', 'bob:1']);

    // Everything Bob's client tells from now on.
    await bob.evaluate(() => {
      window.told = [];
      const n = window.demoNotify;
      n.on('open', (e) => window.told.push({ event: 'open', ...e }));
      n.on('close', () => window.told.push({ event: 'close' }));
      n.on('message', (e) => window.told.push({ event: 'message', text: JSON.parse(e.data).text,
        seq: e.seq, from: e.from, server: e.server, recovered: e.recovered }));
    });
    // Typed and sent in the page: Playwright's click waits on animation frames, which a
    // page in the background gets about once a second, and every second Bob is offline
    // grows his backoff.
    const say = (text) => alice.evaluate((t) => {
      document.querySelector('#text').value = t;
      document.querySelector('#send').click();
    }, text);
    await say('before');
    await bob.waitForSelector('#messages .theirs:has-text("alice: before")', { timeout: 5000 });
    // Alice's ack of it: her last sequence is that message's from here on.
    const seq0 = await bob.evaluate(() => window.told.find((e) => e.text === 'before').seq);
    assert.equal(typeof seq0, 'number');
    await alice.waitForFunction((s) => window.demoNotify.lastSeq >= s, seq0, POLL(5000));

    // Bob's page goes offline: its socket closes and reconnects fail until it is back.
    await bob.evaluate(() => { window.__offline = true; window.__sockets.at(-1).close(); });
    await bob.waitForSelector('#status.down', { timeout: 5000 });
    // The daemon saw him go: Alice's presence shows it.
    await alice.waitForSelector('#people li[data-user="bob"]', { state: 'detached', timeout: 10000 });
    const missed = ['missed 1', 'missed 2', 'missed 3'];
    for (const t of missed) await say(t);
    // The daemon has given them their sequences (acks to Alice): they are in the history.
    await alice.waitForFunction((s) => window.demoNotify.lastSeq >= s + 3, seq0, POLL(5000));

    await bob.evaluate(() => { window.__offline = false; });
    await bob.waitForFunction(() => window.told.some((e) => e.event === 'open'), null, POLL(20000));
    await bob.waitForSelector('#messages .notice.recovered-ok', { timeout: 5000 });
    await alice.waitForSelector('#people li[data-user="bob"]', { timeout: 5000 });
    await bob.waitForSelector('#people li[data-user="alice"]', { timeout: 5000 });
    // A live message after the reconnect: once it is in, everything before it is too.
    await say('after');
    await bob.waitForSelector('#messages .theirs:has-text("alice: after")', { timeout: 5000 });

    const told = await bob.evaluate(() => window.told);
    const opened = told.findIndex((e) => e.event === 'open');
    assert.deepEqual(told[opened], { event: 'open', reconnected: true, recovered: true });
    const messages = told.filter((e) => e.event === 'message');
    assert.deepEqual(messages.map((m) => [m.text, m.recovered]),
      [['before', false], ...missed.map((t) => [t, true]), ['after', false]], JSON.stringify(told));
    // The recovered ones come right after open, in the room's order.
    assert.deepEqual(told.slice(opened + 1, opened + 4).map((e) => e.text), missed);
    for (let i = 1; i < messages.length; i++) {
      assert.ok(messages[i].seq > messages[i - 1].seq, `rising sequences: ${JSON.stringify(messages)}`);
    }
    for (const m of messages) {
      assert.equal(m.from, 'alice');
      assert.equal(m.server, false);
    }
    assert.equal(messages.at(-2).seq, seq0 + 3);
    // And the page shows each once, in order, the missed ones marked.
    const lines = await bob.locator('#messages .theirs').allTextContents();
    assert.deepEqual(lines, ['alice: before', 'alice: missed 1', 'alice: missed 2', 'alice: missed 3', 'alice: after']);
    assert.equal(await bob.locator('#messages .theirs.recovered').count(), 3);
    assert.equal(await alice.locator('#messages .theirs').count(), 0, 'no echo');

    mkdirSync(shotDir, { recursive: true });
    const shot = path.join(shotDir, 'demo-bob-recovered.png');
    await bob.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
  } finally {
    await browser.close();
  }
});

// A server that does not speak tsugi-notify.v1 (Node's ws, selecting no subprotocol):
// the client asked for presence and recovery still opens, and works raw. Chromium
// refuses an answer without a subprotocol it offered: the client then opens without.
test('Chromium: TsugiNotify falls back to raw frames when the server selects no subprotocol', async () => {
  const script = readFileSync(path.join(root, 'php/tsugi-notify.js'));
  const offered = [];
  const heard = [];
  const http = createHttpServer((req, res) => {
    if (req.url === '/tsugi-notify.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(script);
      return;
    }
    const { port } = http.address();
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!DOCTYPE html><meta charset="utf-8"><title>raw</title>
<script>var _TSUGI = { websocket_url: 'ws://127.0.0.1:${port}', websocket_token: 't' };</script>
<script src="/tsugi-notify.js"></script>
<script>
  window.told = [];
  window.n = new TsugiNotify('r', { presence: true, recover: true, minDelay: 50 });
  n.on('open', function (e) { told.push({ event: 'open', detail: e, protocol: n.protocol }); n.send('from the page'); });
  n.on('message', function (e) { told.push({ event: 'message', detail: e }); });
  n.on('giveup', function (e) { told.push({ event: 'giveup', detail: e }); });
</script>`);
  });
  const wss = new WebSocketServer({ server: http, handleProtocols: () => false });
  wss.on('connection', (ws, req) => {
    offered.push(req.headers['sec-websocket-protocol'] ?? null);
    ws.on('message', (d) => heard.push(d.toString()));
    ws.send('{"type":"hello","epoch":"e","seq":1}');
    ws.send('plain');
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${http.address().port}/`);
    await page.waitForFunction(() => window.told.filter((e) => e.event === 'message').length >= 2, null, POLL(10000));
    await waitFor(() => heard.length > 0, 'the page\'s message');
    const told = await page.evaluate(() => window.told);
    assert.deepEqual(told, [
      { event: 'open', detail: { reconnected: false, recovered: null }, protocol: '' },
      { event: 'message', detail: { data: '{"type":"hello","epoch":"e","seq":1}' } },
      { event: 'message', detail: { data: 'plain' } },
    ]);
    assert.deepEqual(heard, ['from the page']);
    assert.equal(offered[0], 'tsugi-notify.v1', 'the first handshake offers it');
    assert.equal(offered.at(-1), null, 'the socket in use offers nothing');
    console.log(`# handshakes: ${JSON.stringify(offered)}`);
    assert.equal(await page.evaluate(() => window.n.presence()), null);
  } finally {
    await browser.close();
    wss.close();
    http.closeAllConnections();
    await new Promise((r) => http.close(r));
  }
});

// With Redis holding the history, the demo survives a daemon restart without losing a
// message: while the page's daemon is down, the server publishes through a second node;
// when the daemon is back, the page recovers that message (recovered: true).
test('tsugi-notify.v1 in the demo with Redis: a daemon restart loses no message', async () => {
  const [httpPort, wsA, wsB, redisPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await waitFor(() => new Promise((resolve) => {
    const s = createServer().listen(redisPort, '127.0.0.1');
    s.once('error', () => resolve(true));
    s.once('listening', () => s.close(() => resolve(false)));
  }), 'redis-server');
  const cluster = ['--redis-url', `redis://127.0.0.1:${redisPort}/`];
  let a = await startDaemon(wsA, cluster);
  await startDaemon(wsB, cluster);
  const php = start('php', ['-d', `extension=${ext}`, '-S', `127.0.0.1:${httpPort}`, '-t', path.join(root, 'php')], {
    TSUGI_DEMO_WS_URL: `ws://127.0.0.1:${wsA}`,
    TSUGI_DEMO_WWWROOT: `http://127.0.0.1:${httpPort}`,
  });
  await waitFor(() => php.log.includes('started'), 'php -S');
  const browser = await launch();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`http://127.0.0.1:${httpPort}/demo/?user=bob&room=lobby`);
    await page.waitForSelector('#status.open', { timeout: 10000 });
    await waitFor(() => page.evaluate(() => window.demoNotify.protocol === 'tsugi-notify.v1'), 'the protocol');
    // The page's daemon dies; the server publishes through the other node meanwhile.
    a.kill('SIGKILL');
    await page.waitForSelector('#status.down', { timeout: 10000 });
    const publish = (text) => new Promise((resolve) => {
      const code = `$CFG = new stdClass; $CFG->wwwroot = 'http://127.0.0.1:${httpPort}'; ` +
        `$CFG->websocket_url = 'ws://127.0.0.1:${wsB}'; $CFG->websocket_secret = 'opensource'; ` +
        `$l = (object) ['link' => (object) ['id' => '1'], 'context' => (object) ['id' => 'demo-course'], 'user' => (object) ['id' => 'x']]; ` +
        `echo var_export(Tsugi\\Core\\WebSocket::publish($l, 'lobby', json_encode(['user' => 'server', 'text' => '${text}'])), true), ' ', Tsugi\\Core\\WebSocket::lastPublishSequence();`;
      const p = spawn('php', ['-d', `extension=${ext}`, '-r', code]);
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.on('close', () => resolve(out.trim()));
    });
    const answer = await publish('while the daemon was down');
    assert.match(answer, /^true [0-9]+$/, 'the other node took it, with a sequence from Redis');
    a = await startDaemon(wsA, cluster);
    await page.waitForSelector('#messages .recovered:has-text("server: while the daemon was down")', { timeout: 30000 });
    await page.waitForSelector('#messages .notice.recovered-ok', { timeout: 5000 });
    assert.equal(await page.locator('#messages .notice.lost').count(), 0, 'nothing reported lost');
    assert.equal(await page.locator('#messages :has-text("while the daemon was down")').count(), 1, 'once');
  } finally {
    await browser.close();
    redis.kill('SIGKILL');
  }
});
