// Unit tests of php/tsugi-notify.js in Node with a fake WebSocket and fake timers:
// the URL contract, backoff with full jitter, the bounded queue, resync and give-up.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const lib = require('../../php/tsugi-notify.js');

class FakeSocket {
  static all = [];
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; FakeSocket.all.push(this); }
  send(d) { this.sent.push(d); }
  close() { this.readyState = 3; }
  open() { this.readyState = 1; this.onopen?.(); }
  fail() { this.readyState = 3; this.onclose?.({ code: 1006, reason: '' }); }
  drop(code = 1001) { this.readyState = 3; this.onclose?.({ code, reason: 'bye' }); }
  get last() { return FakeSocket.all.at(-1); }
}
const last = () => FakeSocket.all.at(-1);

function setup(token = 'a+b/c=') {
  FakeSocket.all = [];
  globalThis._TSUGI = { websocket_url: 'wss://socket.example.edu/', websocket_token: token };
  globalThis.WebSocket = FakeSocket;
}

test('tsugiNotifySocket keeps Tsugi\'s contract', () => {
  setup();
  const ws = lib.tsugiNotifySocket('room 1&x');
  assert.equal(ws.url, 'wss://socket.example.edu/notify?token=a%2Bb%2Fc%3D&room=room%201%26x');
  assert.equal(lib.tsugiNotifySocket('').url, 'wss://socket.example.edu/notify?token=a%2Bb%2Fc%3D');
  globalThis._TSUGI = { websocket_url: 'ws://h:1' };
  assert.equal(lib.tsugiNotifySocket('r'), false);
  globalThis._TSUGI = {};
  assert.equal(lib.tsugiNotifySocket('r'), false);
});

test('the token never reaches the console', () => {
  setup('secret-token');
  const logs = [];
  for (const m of ['log', 'info', 'debug', 'warn', 'error']) mock.method(console, m, (...a) => logs.push(a.join(' ')));
  lib.tsugiNotifySocket('r');
  const n = new lib.TsugiNotify('r', { random: () => 0.5 });
  last().fail();
  mock.restoreAll();
  n.close();
  assert.ok(!logs.some((l) => l.includes('secret-token')), logs.join('\n'));
});

test('reconnects with capped exponential backoff and full jitter', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const delays = [];
  const n = new lib.TsugiNotify('r', { random: () => 0.999, minDelay: 100, maxDelay: 1000, maxFailures: 100 });
  n.on('retry', (e) => delays.push(e.delay));
  for (let i = 0; i < 6; i++) { last().fail(); mock.timers.tick(2000); }
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
  // Full jitter: with random() = 0 every retry is immediate.
  const m = new lib.TsugiNotify('r', { random: () => 0, maxFailures: 100 });
  const d2 = [];
  m.on('retry', (e) => d2.push(e.delay));
  last().fail();
  assert.deepEqual(d2, [0]);
  n.close(); m.close();
  mock.timers.reset();
});

test('queues while down, bounded, and flushes in order on open', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = new lib.TsugiNotify('r', { maxQueue: 3, random: () => 0 });
  const dropped = [];
  n.on('dropped', (e) => dropped.push(e.data));
  for (const m of ['1', '2', '3', '4', '5']) assert.equal(n.send(m), true);
  assert.deepEqual(dropped, ['1', '2']);
  last().open();
  assert.deepEqual(last().sent, ['3', '4', '5']);
  n.send('6');
  assert.deepEqual(last().sent, ['3', '4', '5', '6']);
  n.close();
  mock.timers.reset();
});

test('tells the tool when it reopens so it can resync', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = new lib.TsugiNotify('r', { random: () => 0 });
  const opens = [];
  const closes = [];
  n.on('open', (e) => opens.push(e.reconnected));
  n.on('close', (e) => closes.push(e.code));
  last().open();
  last().drop(1001);
  mock.timers.tick(1);
  assert.equal(FakeSocket.all.length, 2);
  last().open();
  assert.deepEqual(opens, [false, true]);
  assert.deepEqual(closes, [1001]);
  n.close();
  mock.timers.reset();
});

test('gives up when opening keeps failing, and a success resets the count', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = new lib.TsugiNotify('r', { random: () => 0, maxFailures: 3 });
  let gaveUp = null;
  n.on('giveup', (e) => { gaveUp = e.failures; });
  last().fail(); mock.timers.tick(1);
  last().fail(); mock.timers.tick(1);
  last().open();
  last().drop(); mock.timers.tick(1);
  last().fail(); mock.timers.tick(1);
  last().fail(); mock.timers.tick(1);
  assert.equal(gaveUp, null, 'two failures after a success');
  last().fail(); mock.timers.tick(10);
  assert.equal(gaveUp, 3);
  const count = FakeSocket.all.length;
  mock.timers.tick(100000);
  assert.equal(FakeSocket.all.length, count, 'no more attempts');
  assert.equal(n.send('x'), false);
  mock.timers.reset();
});

test('close() stops for good', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = new lib.TsugiNotify('r', { random: () => 0 });
  last().open();
  n.close();
  last().drop(1000);
  mock.timers.tick(100000);
  assert.equal(FakeSocket.all.length, 1);
  mock.timers.reset();
});
