// wss:// in the daemon, from independent clients: Node's `ws` (trusting the test CA
// through its `ca` option) and Debian's Chromium driven by Playwright (trusting the
// test CA through an NSS database in a HOME of its own, as a machine with a site's
// private CA installed does). The CA and certificate are made now by the test-ca
// example (rcgen); the daemon is the release build with tls_cert and tls_key.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const daemonBin = path.join(root, 'target/release/tsugi-notifyd');
const testCa = path.join(root, 'target/debug/examples/test-ca');
const ext = path.join(root, 'target/release/libtsugi_websocket.so');
const dir = mkdtempSync(path.join(os.tmpdir(), 'notify-wss-'));
const procs = [];

after(() => {
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  rmSync(dir, { recursive: true, force: true });
});

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

const [caFile, certFile, keyFile] = execFileSync(testCa, [dir]).toString().trim().split('\n');
const ca = readFileSync(caFile);

async function startDaemon() {
  const port = await freePort();
  const url = `wss://127.0.0.1:${port}`;
  const d = start(daemonBin, ['--dev', '--url', url, '--tls-cert', certFile, '--tls-key', keyFile,
    '--metrics-bind', 'off']);
  await waitFor(() => d.log.includes('listening'), 'the daemon');
  return { d, url, port };
}

function mint(url, link, user) {
  return execFileSync(daemonBin, ['--dev', '--url', url, 'token', 'mint', '--link', String(link),
    '--user', String(user)]).toString().trim();
}

function open(url, token, room, options = { ca }) {
  const ws = new WebSocket(`${url}/notify?token=${encodeURIComponent(token)}&room=${room}`,
    { ...options, perMessageDeflate: false });
  ws.heard = [];
  ws.on('message', (data) => ws.heard.push(data.toString()));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

test('Node ws over wss: delivery within a room, nothing to another, and the CA is checked', async () => {
  const { url } = await startDaemon();
  const a = await open(url, mint(url, 1, 'a'), 'r');
  const b = await open(url, mint(url, 1, 'b'), 'r');
  const c = await open(url, mint(url, 1, 'c'), 's');
  const other = await open(url, mint(url, 2, 'd'), 'r');
  // Until b has joined on the daemon's side, a message may go nowhere: send again.
  await waitFor(() => { a.send('over wss'); return b.heard.includes('over wss'); }, 'delivery');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(c.heard, [], 'another room hears nothing');
  assert.deepEqual(other.heard, [], 'another link hears nothing');
  assert.deepEqual(a.heard, [], 'no echo');
  for (const ws of [a, b, c, other]) ws.terminate();
  // Without the test CA the certificate is not trusted.
  await assert.rejects(open(url, mint(url, 1, 'e'), 'r', {}), /certificate/);
});

test('Chromium over wss: the demo chats through the daemon\'s TLS', async () => {
  const { url } = await startDaemon();
  const httpPort = await freePort();
  const php = start('php', ['-d', `extension=${ext}`, '-S', `127.0.0.1:${httpPort}`, '-t', path.join(root, 'php')], {
    TSUGI_DEMO_WS_URL: url,
    TSUGI_DEMO_WWWROOT: `http://127.0.0.1:${httpPort}`,
  });
  await waitFor(() => php.log.includes('started'), 'php -S');
  // The test CA as a trusted authority in the user's NSS database, which Chromium on
  // Linux reads for locally installed CAs.
  const home = path.join(dir, 'home');
  const nssdb = `sql:${path.join(home, '.pki/nssdb')}`;
  mkdirSync(path.join(home, '.pki/nssdb'), { recursive: true });
  execFileSync('certutil', ['-d', nssdb, '-N', '--empty-password']);
  execFileSync('certutil', ['-d', nssdb, '-A', '-t', 'C,,', '-n', 'tsugi-notify test CA', '-i', caFile]);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    env: { ...process.env, HOME: home },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext();
    const page = async (user, room) => {
      const p = await context.newPage();
      await p.goto(`http://127.0.0.1:${httpPort}/demo/?user=${user}&room=${room}`);
      await p.waitForSelector('#status.open', { timeout: 10000 });
      return p;
    };
    const alice = await page('alice', 'lobby');
    const bob = await page('bob', 'lobby');
    const carol = await page('carol', 'kitchen');
    await alice.fill('#text', 'hello over wss');
    await alice.click('#send');
    await bob.waitForSelector('#messages .theirs:has-text("alice: hello over wss")', { timeout: 5000 });
    await carol.waitForTimeout(300);
    assert.equal(await carol.locator('#messages .theirs').count(), 0, 'another room hears nothing');
  } finally {
    await browser.close();
  }
});
