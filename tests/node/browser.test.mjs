// The demo in a real browser: Debian's Chromium driven by Playwright (playwright-core,
// executablePath /usr/bin/chromium). Two users in one room and a third in another room
// of the same link: a message typed by the first shows for the second and not the
// third; after the daemon is killed and started again, the pages reconnect and deliver.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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

function startDaemon(wsPort) {
  const d = start(daemonBin, ['--dev', '--url', `ws://127.0.0.1:${wsPort}`, '--metrics-bind', 'off']);
  return waitFor(() => d.log.includes('listening'), 'the daemon').then(() => d);
}

after(() => { for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });

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

    mkdirSync(shotDir, { recursive: true });
    const shot = path.join(shotDir, 'demo-bob.png');
    await bob.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
  } finally {
    await browser.close();
  }
});
