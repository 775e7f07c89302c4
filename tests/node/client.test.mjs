// Unit tests of php/tsugi-notify.js in Node with a fake WebSocket and fake timers:
// the URL contract, backoff with full jitter, the bounded queue, resync and give-up;
// and the tsugi-notify.v1 subprotocol (docs/protocol.md): presence, recovery with
// exactly-once delivery, the since/epoch URL, and the fallback to raw frames.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const lib = require('../../php/tsugi-notify.js');

class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url; this.protocols = protocols; this.argc = arguments.length;
    this.protocol = ''; this.readyState = 0; this.sent = []; FakeSocket.all.push(this);
  }
  send(d) { this.sent.push(d); }
  close() { this.readyState = 3; }
  open() { this.readyState = 1; this.onopen?.(); }
  // The server selects tsugi-notify.v1 (it must have been offered).
  accept() { assert.deepEqual(this.protocols, ['tsugi-notify.v1']); this.protocol = 'tsugi-notify.v1'; this.open(); }
  frame(o) { this.onmessage?.({ data: typeof o === 'string' ? o : JSON.stringify(o) }); }
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

// ---- tsugi-notify.v1 ----

const BASE = 'wss://socket.example.edu/notify?token=a%2Bb%2Fc%3D&room=r';

/** A TsugiNotify with every event recorded in order as [name, detail]. */
function recorded(options) {
  const n = new lib.TsugiNotify('r', { random: () => 0, ...options });
  n.events = [];
  for (const e of ['open', 'message', 'presence', 'join', 'leave', 'change', 'close', 'retry', 'giveup']) {
    n.on(e, (d) => n.events.push([e, d]));
  }
  n.take = (...names) => {
    const out = n.events.filter(([e]) => names.length === 0 || names.includes(e));
    n.events = [];
    return out;
  };
  return n;
}

const hello = (seq, epoch = 'e1', extra = {}) => ({ type: 'hello', protocol: 'tsugi-notify.v1', epoch, seq, user: '42', conn: 'c-me', ...extra });
const snapshot = (users, extra = {}) => ({
  type: 'presence', count: users ? users.length : 0, connections: 0, anonymous: 0, users, ...extra,
});
const msg = (seq, data, extra = {}) => ({ type: 'message', seq, from: '7', data, ...extra });

test('v1: offered only when presence or recover is asked; the raw contract is unchanged', () => {
  setup();
  const raw = new lib.TsugiNotify('r');
  assert.equal(last().argc, 1, 'no protocols argument without the options');
  assert.equal(last().url, BASE);
  raw.close();
  lib.tsugiNotifySocket('r');
  assert.equal(last().argc, 1);
  for (const o of [{ presence: true }, { recover: true }, { presence: true, recover: true }]) {
    const n = new lib.TsugiNotify('r', o);
    assert.deepEqual(last().protocols, ['tsugi-notify.v1']);
    assert.equal(last().url, BASE, 'no since on a first open');
    n.close();
  }
});

test('v1: open follows hello and the presence snapshot; presence, join, leave, tabs, idempotence', () => {
  setup();
  const n = recorded({ presence: true });
  assert.equal(n.presence(), null, 'nothing known before a snapshot');
  let meAtSnapshot = null;
  n.on('presence', () => { meAtSnapshot = [n.user, n.conn]; });
  last().accept();
  assert.equal(n.protocol, 'tsugi-notify.v1');
  last().frame(hello(3));
  assert.deepEqual(n.take(), [], 'no open before the snapshot');
  last().frame({ type: 'presence', count: 2, connections: 4, anonymous: 1, users: [
    { user: '42', conns: ['c-me', 'c-42b'] }, { user: '7', conns: ['c-7'] }] });
  assert.deepEqual(n.take(), [
    ['presence', { users: [{ user: '42', connections: 2 }, { user: '7', connections: 1 }], count: 2, connections: 4, anonymous: 1 }],
    ['open', { reconnected: false, recovered: null }],
  ]);
  assert.equal(n.user, '42');
  assert.equal(n.conn, 'c-me');
  assert.deepEqual(meAtSnapshot, ['42', 'c-me'], 'who this socket is, known when the snapshot is told');
  assert.deepEqual(n.presenceCounts(), { count: 2, connections: 4, anonymous: 1 });

  // A join for a socket the snapshot listed changes nothing; so does a second join.
  last().frame({ type: 'join', user: '7', conn: 'c-7' });
  assert.deepEqual(n.take(), []);
  // A new user: join; its second tab: a change, no join.
  last().frame({ type: 'join', user: '9', conn: 'c-9a' });
  last().frame({ type: 'join', user: '9', conn: 'c-9a' });
  last().frame({ type: 'join', user: '9', conn: 'c-9b' });
  assert.deepEqual(n.take(), [
    ['join', { user: '9', connections: 1 }],
    ['change', { user: '9', conn: 'c-9a', connections: 1 }],
    ['change', { user: '9', conn: 'c-9b', connections: 2 }],
  ]);
  assert.deepEqual(n.presence(), [{ user: '42', connections: 2 }, { user: '7', connections: 1 }, { user: '9', connections: 2 }]);
  // One tab of 9 closes: no leave; the last one: leave. Twice changes nothing.
  last().frame({ type: 'leave', user: '9', conn: 'c-9a' });
  last().frame({ type: 'leave', user: '9', conn: 'c-9a' });
  assert.deepEqual(n.take(), [['change', { user: '9', conn: 'c-9a', connections: 1 }]]);
  last().frame({ type: 'leave', user: '9', conn: 'c-9b' });
  last().frame({ type: 'leave', user: '9', conn: 'c-9b' });
  assert.deepEqual(n.take(), [
    ['leave', { user: '9', connections: 0 }],
    ['change', { user: '9', conn: 'c-9b', connections: 0 }],
  ]);
  // A join that comes late for a socket that already left does not bring it back.
  last().frame({ type: 'join', user: '9', conn: 'c-9b' });
  assert.deepEqual(n.take(), []);
  // A leave for a socket never seen changes nothing.
  last().frame({ type: 'leave', user: '11', conn: 'c-11' });
  assert.deepEqual(n.take(), []);
  assert.deepEqual(n.presence(), [{ user: '42', connections: 2 }, { user: '7', connections: 1 }]);

  // Anonymous sockets are a count (the snapshot had one).
  last().frame({ type: 'join', user: null, conn: 'c-a1' });
  last().frame({ type: 'join', user: null, conn: 'c-a1' });
  assert.equal(n.presenceCounts().anonymous, 2);
  last().frame({ type: 'leave', user: null, conn: 'c-a1' });
  last().frame({ type: 'leave', user: null, conn: 'c-a1' });
  assert.equal(n.presenceCounts().anonymous, 1);
  last().frame({ type: 'leave', user: null, conn: 'c-a0' });
  assert.deepEqual(n.presenceCounts(), { count: 2, connections: 3, anonymous: 0 });
  assert.deepEqual(n.take('join', 'leave'), [], 'anonymous sockets are no join or leave');
  assert.deepEqual(n.presence(), [{ user: '42', connections: 2 }, { user: '7', connections: 1 }]);

  // 7 leaves: the list follows.
  last().frame({ type: 'leave', user: '7', conn: 'c-7' });
  assert.deepEqual(n.take('leave'), [['leave', { user: '7', connections: 0 }]]);
  assert.deepEqual(n.presence(), [{ user: '42', connections: 2 }]);

  // A new snapshot replaces everything and is told as a presence event.
  last().frame(snapshot([{ user: '5', conns: ['c-5'] }], { count: 1, connections: 1 }));
  assert.deepEqual(n.take(), [['presence', { users: [{ user: '5', connections: 1 }], count: 1, connections: 1, anonymous: 0 }]]);
  assert.deepEqual(n.presence(), [{ user: '5', connections: 1 }]);
  n.close();
});

test('v1: a room too large to list: presence() is null and the event has counts only', () => {
  setup();
  const n = recorded({ presence: true });
  last().accept();
  last().frame(hello(0));
  last().frame({ type: 'presence', count: 150, connections: 170, anonymous: 12, users: null });
  assert.deepEqual(n.take(), [
    ['presence', { users: null, count: 150, connections: 170, anonymous: 12 }],
    ['open', { reconnected: false, recovered: null }],
  ]);
  assert.equal(n.presence(), null);
  assert.deepEqual(n.presenceCounts(), { count: 150, connections: 170, anonymous: 12 });
  last().frame({ type: 'join', user: '3', conn: 'x' });
  assert.deepEqual(n.take(), []);
  assert.equal(n.presence(), null);
  n.close();
});

test('v1: message fields, binary as an ArrayBuffer, and exactly once within an epoch', () => {
  setup();
  const n = recorded({ presence: true });
  last().accept();
  last().frame(hello(41));
  last().frame(snapshot([]));
  n.take();
  last().frame(msg(42, 'hello', { from: '42' }));
  last().frame(msg(43, 'AAEC/w==', { from: null, binary: true }));
  last().frame(msg(44, 'grades posted', { from: null, server: true }));
  last().frame(msg(44, 'grades posted', { from: null, server: true }));   // again
  last().frame(msg(41, 'old'));                                             // before hello
  last().frame(msg(null, 'no seq 1'));
  last().frame(msg(null, 'no seq 1'));                                      // no seq: never dropped
  last().frame({ type: 'ack', seq: 46 });
  last().frame(msg(45, 'below an ack'));
  last().frame(msg(47, 'after the ack'));
  const got = n.take().map(([, d]) => d);
  assert.equal(got.length, 6);
  assert.deepEqual(got[0], { data: 'hello', seq: 42, from: '42', server: false, recovered: false });
  assert.ok(got[1].data instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(got[1].data)], [0, 1, 2, 255]);
  assert.deepEqual({ ...got[1], data: null }, { data: null, seq: 43, from: null, server: false, recovered: false });
  assert.deepEqual(got[2], { data: 'grades posted', seq: 44, from: null, server: true, recovered: false });
  assert.deepEqual(got.slice(3).map((d) => [d.data, d.seq]), [['no seq 1', null], ['no seq 1', null], ['after the ack', 47]]);
  n.close();
});

test('v1: unknown frames, unknown fields and malformed JSON are ignored, never thrown', () => {
  setup();
  const logs = [];
  mock.method(console, 'error', (...a) => logs.push(a.join(' ')));
  const n = recorded({ presence: true, recover: true });
  last().accept();
  for (const bad of ['', 'not json', '{', '[1,2]', 'null', '42', '"hello"', '{"type":"message"}',
                     '{"type":"message","seq":1,"data":"!!!","binary":true}', '{"type":"join"}',
                     '{"type":"leave","user":{"x":1},"conn":"c"}', '{"type":"future","x":1}']) {
    last().frame(bad);
  }
  last().onmessage({ data: new ArrayBuffer(3) });   // a binary frame: not the protocol's
  last().frame(hello(1, 'e1', { future: { x: 1 } }));
  last().frame({ type: 'welcome' });
  last().frame(snapshot([{ user: '1', conns: ['c1'] }, { nonsense: true }, { user: '2', conns: 'x' }], { extra: 1 }));
  last().frame({ type: 'message', seq: 2, from: '1', data: 'fine', later: 'field' });
  mock.restoreAll();
  assert.deepEqual(logs, []);
  assert.deepEqual(n.take('open', 'message').map(([e, d]) => [e, d.data ?? d.recovered]),
    [['open', null], ['message', 'fine']]);
  assert.deepEqual(n.presence(), [{ user: '1', connections: 1 }]);
  n.close();
});

test('v1: recovery on reconnect: since and epoch in the URL, open after the recovery frame, then the missed messages in order, once', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ presence: true, recover: true });
  last().accept();
  last().frame(hello(10));
  last().frame(snapshot([{ user: '42', conns: ['c-me'] }]));
  last().frame(msg(11, 'a'));
  n.send('mine');
  last().frame({ type: 'ack', seq: 12 });
  last().frame(msg(13, 'b'));
  assert.deepEqual(n.take('open', 'message').map(([e, d]) => [e, d.seq ?? d.recovered]), [['open', null], ['message', 11], ['message', 13]]);
  last().drop(1006);
  n.send('queued while down');
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=13&epoch=e1`);
  assert.deepEqual(last().protocols, ['tsugi-notify.v1']);
  n.take();

  last().accept();
  assert.deepEqual(last().sent, ['queued while down'], 'the queue is flushed on open');
  last().frame(hello(16, 'e1', { conn: 'c-me2' }));
  last().frame(snapshot([{ user: '42', conns: ['c-me2'] }]));
  last().frame(msg(13, 'b', { recovered: true }));    // already seen: dropped
  last().frame(msg(14, 'c', { recovered: true }));
  last().frame(msg(15, 'd', { recovered: true }));
  last().frame(msg(15, 'd', { recovered: true }));    // twice: once
  last().frame(msg(16, 'e', { recovered: true }));
  assert.deepEqual(n.take('open', 'message'), [], 'nothing until the recovery frame');
  last().frame({ type: 'recovery', recovered: true, since: 13, count: 3 });
  last().frame({ type: 'ack', seq: 17 });
  last().frame(msg(16, 'e'));                          // live repeat of a recovered one: dropped
  last().frame(msg(18, 'f'));
  assert.deepEqual(n.take('open', 'message'), [
    ['open', { reconnected: true, recovered: true }],
    ['message', { data: 'c', seq: 14, from: '7', server: false, recovered: true }],
    ['message', { data: 'd', seq: 15, from: '7', server: false, recovered: true }],
    ['message', { data: 'e', seq: 16, from: '7', server: false, recovered: true }],
    ['message', { data: 'f', seq: 18, from: '7', server: false, recovered: false }],
  ]);
  assert.equal(n.conn, 'c-me2');
  // The next reconnect asks from the last sequence seen, acks included.
  last().frame({ type: 'ack', seq: 19 });
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=19&epoch=e1`);
  n.close();
  mock.timers.reset();
});

test('v1: recovery that fails says why; hello.seq is then where the next one starts', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ presence: true, recover: true });
  last().accept();
  last().frame(hello(5));
  last().frame(snapshot([]));
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=5&epoch=e1`);
  n.take();
  last().accept();
  last().frame(hello(200));
  last().frame(snapshot([]));
  last().frame({ type: 'recovery', recovered: false, since: 5, reason: 'trimmed' });
  last().frame(msg(201, 'live'));
  assert.deepEqual(n.take('open', 'message').map(([, d]) => d.seq ?? d),
    [{ reconnected: true, recovered: false, reason: 'trimmed' }, 201]);
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=201&epoch=e1`);
  n.close();
  mock.timers.reset();
});

test('v1: a new epoch is another history: its low sequences are delivered, and the next since is in it', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ recover: true });
  last().accept();
  last().frame(hello(90, 'old'));
  last().frame(snapshot([]));
  last().frame(msg(91, 'x'));
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=91&epoch=old`);
  n.take();
  last().accept();
  last().frame(hello(0, 'new/+='));
  last().frame(snapshot([]));
  last().frame({ type: 'recovery', recovered: false, since: 91, reason: 'epoch' });
  last().frame(msg(1, 'first of the new history'));
  last().frame(msg(2, 'second'));
  assert.deepEqual(n.take('open', 'message').map(([, d]) => d.seq ?? d.reason),
    ['epoch', 1, 2]);
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=2&epoch=new%2F%2B%3D`);
  n.close();
  mock.timers.reset();
});

test('v1: a connection lost before its recovery ends delivers nothing of it, and asks again from the same place', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ recover: true });
  last().accept();
  last().frame(hello(3));
  last().frame(snapshot([]));
  last().drop();
  mock.timers.tick(1);
  last().accept();
  last().frame(hello(6));
  last().frame(snapshot([]));
  last().frame(msg(4, 'a', { recovered: true }));
  last().drop();
  n.take();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=3&epoch=e1`);
  last().accept();
  last().frame(hello(6));
  last().frame(snapshot([]));
  last().frame(msg(4, 'a', { recovered: true }));
  last().frame(msg(5, 'b', { recovered: true }));
  last().frame(msg(6, 'c', { recovered: true }));
  last().frame({ type: 'recovery', recovered: true, since: 3, count: 3 });
  assert.deepEqual(n.take('open', 'message').map(([, d]) => d.data ?? d.recovered), [true, 'a', 'b', 'c']);
  n.close();
  mock.timers.reset();
});

test('v1: presence without recover asks for nothing on reconnect', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ presence: true });
  last().accept();
  last().frame(hello(7));
  last().frame(snapshot([]));
  last().frame(msg(8, 'x'));
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, BASE);
  n.take();
  last().accept();
  last().frame(hello(9));
  last().frame(snapshot([]));
  last().frame(msg(9, 'seen by hello: it came before this socket joined'));
  last().frame(msg(10, 'y'));
  assert.deepEqual(n.take('open', 'message').map(([, d]) => d.data ?? d),
    [{ reconnected: true, recovered: null }, 'y']);
  n.close();
  mock.timers.reset();
});

test('v1: a server that selects no subprotocol is used raw, exactly as without the options', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ presence: true, recover: true });
  assert.deepEqual(last().protocols, ['tsugi-notify.v1']);
  last().open();                                   // socket.protocol === ''
  assert.equal(n.protocol, '');
  last().frame('{"type":"hello","epoch":"e","seq":1}');
  last().frame('plain text');
  assert.deepEqual(n.take(), [
    ['open', { reconnected: false, recovered: null }],
    ['message', { data: '{"type":"hello","epoch":"e","seq":1}' }],
    ['message', { data: 'plain text' }],
  ]);
  assert.equal(n.presence(), null);
  n.send('out');
  assert.deepEqual(last().sent, ['out']);
  n.close();
  mock.timers.reset();
});

test('v1: a handshake that fails while offering the subprotocol is retried at once without it', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ presence: true, recover: true, maxFailures: 2 });
  last().fail();                                   // e.g. Chromium refusing a reply without it
  assert.equal(FakeSocket.all.length, 2, 'at once');
  assert.equal(last().argc, 1, 'no subprotocol offered');
  assert.deepEqual(n.take(), [], 'no retry event, no failure counted');
  last().open();
  last().frame('raw');
  assert.deepEqual(n.take(), [['open', { reconnected: false, recovered: null }], ['message', { data: 'raw' }]]);
  last().drop();
  assert.deepEqual(n.take('close', 'retry').map(([e]) => e), ['close', 'retry']);
  mock.timers.tick(1);
  assert.deepEqual(last().protocols, ['tsugi-notify.v1'], 'the next reconnect offers it again');
  // A daemon that is down: each attempt is the offer, then raw; only raw counts.
  last().fail();
  last().fail();
  assert.deepEqual(n.take('retry', 'giveup').map(([e]) => e), ['retry']);
  mock.timers.tick(1);
  last().fail();
  last().fail();
  assert.deepEqual(n.take('retry', 'giveup').map(([e, d]) => [e, d.failures]), [['giveup', 2]]);
  assert.equal(FakeSocket.all.length, 6);
  mock.timers.reset();
});

test('v1: after a raw socket, the next reconnect asks for no recovery (raw frames have no sequence)', () => {
  setup();
  mock.timers.enable({ apis: ['setTimeout'] });
  const n = recorded({ recover: true });
  last().accept();
  last().frame(hello(3));
  last().frame(snapshot([]));
  n.take();
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, `${BASE}&since=3&epoch=e1`);
  last().open();                                   // an old node: no subprotocol
  assert.deepEqual(n.take('open'), [['open', { reconnected: true, recovered: false }]]);
  last().drop();
  mock.timers.tick(1);
  assert.equal(last().url, BASE);
  last().accept();
  last().frame(hello(9));
  last().frame(snapshot([]));
  assert.deepEqual(n.take('open'), [['open', { reconnected: true, recovered: null }]]);
  n.close();
  mock.timers.reset();
});
