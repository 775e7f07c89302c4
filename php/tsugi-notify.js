/*
 * tsugi-notify.js: the browser side of Tsugi notifications. No dependencies.
 *
 *   tsugiNotifySocket(room)      Tsugi's own contract: a WebSocket to
 *                                <_TSUGI.websocket_url>/notify?token=...&room=...,
 *                                or false when notifications are not configured.
 *   new TsugiNotify(room, opts)  the same socket, kept open: reconnects with
 *                                exponential backoff and full jitter, queues what is
 *                                sent while it is down (bounded), tells the tool when
 *                                it (re)opens so it can resync, and gives up with an
 *                                event when opening keeps failing (e.g. an expired
 *                                token: reload the page for a new one).
 *
 * Options: minDelay, maxDelay (ms), maxQueue, maxFailures, random, WebSocket, and
 *   presence: true   offer the tsugi-notify.v1 subprotocol (docs/protocol.md): who is
 *                    in the room (presence(), presence/join/leave/change events)
 *   recover: true    the same, and on a reconnect ask for the messages missed while
 *                    down (&since=<last sequence seen>&epoch=<its epoch> in the URL)
 * Either one offers the subprotocol. A daemon that does not speak it answers without
 * it: the socket is then used raw, exactly as without the options (a browser that
 * refuses such an answer, as Chromium does, fails the open: the client retries at once
 * without offering it). notify.protocol says what the open socket speaks
 * ('tsugi-notify.v1' or '').
 *
 * Events of TsugiNotify (notify.on(name, fn)):
 *   open     {reconnected: bool}  the socket is open; after a reconnect, resync state
 *            with the subprotocol: {reconnected, recovered: true|false|null, reason?},
 *            emitted after the room's presence snapshot, or, when recovery was asked,
 *            after the daemon's answer; recovered: true means every message missed
 *            since the last one seen follows right after this event (as message events
 *            with recovered: true, in order), so no resync is needed; false (with the
 *            daemon's reason: "epoch", "trimmed", "unavailable") means resync as after
 *            any reconnect; null means no recovery was asked (first open, recover off,
 *            nothing seen yet). Over a raw socket (fallback), recovered is false
 *            when there was something to recover, else null
 *   message  {data}               a message from another browser of the same room
 *            with the subprotocol: {data, seq, from, server, recovered}: seq is the
 *            message's place in the room (null when it has none), from the sender's
 *            user id (null: anonymous or the server), server true for a message from
 *            PHP's WebSocket::publish, data an ArrayBuffer for a binary message. A
 *            message already seen (seq at or below the last seen) is not emitted again
 *   presence {users, count, connections, anonymous}  the room's snapshot arrived (on
 *            every open): users is [{user, connections}] (named users and their
 *            sockets), or null when the room is too large to list (counts only)
 *   join     {user, connections}  a user came in (its first socket)
 *   leave    {user, connections}  a user left (its last socket: connections is 0);
 *            join and leave come from the daemon's frames after a snapshot: who came
 *            or went while the socket was down shows in the next presence event
 *   change   {user, conn, connections}  any socket came or went (user null: anonymous);
 *            re-read presence() / presenceCounts() to show tab counts
 *   close    {code, reason}       the socket closed; a reconnect is scheduled
 *   retry    {attempt, delay}     the next attempt and its delay (ms)
 *   dropped  {data}               the queue was full: this oldest unsent message is gone
 *   giveup   {failures}           opening failed maxFailures times in a row; stopped
 *
 * With the subprotocol, notify.presence() is [{user, connections}] now (null before the
 * first snapshot, over a raw socket, or when the room sends counts only), and
 * notify.presenceCounts() is {count, connections, anonymous} (or null). notify.user and
 * notify.conn are this socket's user id and connection id from the daemon's hello.
 *
 * The token is never written to the console.
 */
(function (root) {
  'use strict';

  function settings() {
    var t = root._TSUGI || {};
    return { url: t.websocket_url, token: t.websocket_token };
  }

  /** The socket URL for a room, or null when notifications are not configured. */
  function notifyUrl(room) {
    var s = settings();
    if (!s.url || !s.token) return null;
    var url = String(s.url).replace(/\/+$/, '') + '/notify?token=' + encodeURIComponent(s.token);
    if (room) url += '&room=' + encodeURIComponent(room);
    return url;
  }

  /** Tsugi's tsugiNotifySocket(room): a WebSocket, or false when not configured. */
  function tsugiNotifySocket(room) {
    var url = notifyUrl(room);
    if (!root.WebSocket || !url) return false;
    return new root.WebSocket(url);
  }

  var PROTOCOL = 'tsugi-notify.v1';

  var DEFAULTS = {
    minDelay: 500,      // ms, first retry's ceiling
    maxDelay: 30000,    // ms, cap of the backoff
    maxQueue: 100,      // messages kept while down
    maxFailures: 8,     // opens that fail in a row before giving up
    presence: false,    // offer tsugi-notify.v1 for presence
    recover: false,     // offer tsugi-notify.v1 and recover missed messages on reconnect
    random: Math.random,
    WebSocket: null     // defaults to the browser's
  };

  /** A sequence number from a frame, or null (absent, null, or not a safe integer). */
  function seqOf(v) {
    return typeof v === 'number' && v >= 0 && v <= 9007199254740991 && Math.floor(v) === v ? v : null;
  }

  function maxSeq(a, b) {
    if (a === null) return b;
    if (b === null) return a;
    return a > b ? a : b;
  }

  /** base64 to an ArrayBuffer; throws on a malformed string. */
  function decodeBase64(s) {
    var bin;
    if (typeof root.atob === 'function') {
      bin = root.atob(s);
    } else if (typeof Buffer === 'function') {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1) throw new Error('base64');
      var b = Buffer.from(s, 'base64');
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
    } else {
      throw new Error('no base64 decoder');
    }
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function idOf(v) {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' && isFinite(v)) return String(v);
    return null;
  }

  function TsugiNotify(room, options) {
    if (!(this instanceof TsugiNotify)) return new TsugiNotify(room, options);
    var o = {};
    var k;
    for (k in DEFAULTS) o[k] = DEFAULTS[k];
    for (k in options || {}) o[k] = options[k];
    this.room = room || '';
    this.options = o;
    this.socket = null;
    this.queue = [];
    this.failures = 0;      // opens that failed in a row
    this.attempt = 0;       // retries since the last successful open
    this.everOpened = false;
    this.stopped = false;
    this.timer = null;
    this.handlers = {};
    // tsugi-notify.v1: offered when presence or recover is asked for.
    this.proto = !!(o.presence || o.recover);
    this.protocol = '';     // what the open socket speaks
    this.epoch = null;      // the room history's epoch the last sequence belongs to
    this.lastSeq = null;    // the last sequence seen in that epoch
    this.user = null;       // from the hello of the open socket
    this.conn = null;
    this._rawNext = false;  // the next attempt offers no subprotocol (fallback)
    this._conn = null;      // the state of a socket that speaks the subprotocol
    this._presence = null;  // the room's members, from the snapshot and join/leave
    var url = notifyUrl(this.room);
    var Ws = o.WebSocket || root.WebSocket;
    this.enabled = !!(url && Ws);
    if (this.enabled) this._connect();
  }

  TsugiNotify.prototype.on = function (name, fn) {
    (this.handlers[name] = this.handlers[name] || []).push(fn);
    return this;
  };

  TsugiNotify.prototype.off = function (name, fn) {
    var list = this.handlers[name] || [];
    this.handlers[name] = list.filter(function (f) { return f !== fn; });
    return this;
  };

  TsugiNotify.prototype._emit = function (name, detail) {
    var list = (this.handlers[name] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try { list[i].call(this, detail); } catch (e) { if (root.console) root.console.error(e); }
    }
  };

  /** True when the socket is open now. */
  TsugiNotify.prototype.isOpen = function () {
    return !!this.socket && this.socket.readyState === 1;
  };

  /** Sends now, or queues while down. Returns false when notifications are off or stopped. */
  TsugiNotify.prototype.send = function (data) {
    if (!this.enabled || this.stopped) return false;
    if (this.isOpen()) {
      this.socket.send(data);
      return true;
    }
    this.queue.push(data);
    while (this.queue.length > this.options.maxQueue) {
      this._emit('dropped', { data: this.queue.shift() });
    }
    return true;
  };

  /** Closes for good: no more reconnects. */
  TsugiNotify.prototype.close = function () {
    this.stopped = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.socket) { try { this.socket.close(1000); } catch (e) { /* already closed */ } }
  };

  /** Full jitter: a random delay up to min(maxDelay, minDelay * 2^attempt). */
  TsugiNotify.prototype.nextDelay = function (attempt) {
    var ceiling = Math.min(this.options.maxDelay, this.options.minDelay * Math.pow(2, attempt));
    return Math.floor(this.options.random() * ceiling);
  };

  /** The named users in the room now, [{user, connections}], or null when not known. */
  TsugiNotify.prototype.presence = function () {
    var p = this._presence;
    if (!p || p.countsOnly) return null;
    var out = [];
    for (var i = 0; i < p.order.length; i++) {
      out.push({ user: p.order[i], connections: p.byUser[p.order[i]].n });
    }
    return out;
  };

  /** {count, connections, anonymous} of the room now, or null when not known. */
  TsugiNotify.prototype.presenceCounts = function () {
    var p = this._presence;
    if (!p) return null;
    if (p.countsOnly) return { count: p.count, connections: p.connections, anonymous: p.anonymous };
    var conns = 0;
    for (var i = 0; i < p.order.length; i++) conns += p.byUser[p.order[i]].n;
    var anon = Math.max(0, p.anonBase - p.anonBaseLeft + p.anonJoined);
    return { count: p.order.length, connections: conns + anon, anonymous: anon };
  };

  TsugiNotify.prototype._connect = function () {
    var self = this;
    var Ws = this.options.WebSocket || root.WebSocket;
    var offer = this.proto && !this._rawNext;
    this._rawNext = false;
    var url = notifyUrl(this.room);
    // Recovery needs a sequence seen in a known epoch (a reconnect of a socket that
    // spoke the subprotocol).
    var wanted = !!this.options.recover && this.epoch !== null && this.lastSeq !== null;
    var asked = offer && wanted;
    if (asked) url += '&since=' + this.lastSeq + '&epoch=' + encodeURIComponent(this.epoch);
    var opened = false;
    var ws;
    try {
      ws = offer ? new Ws(url, [PROTOCOL]) : new Ws(url);
    } catch (e) {
      this._closed(false, 1006, String(e && e.message));
      return;
    }
    this.socket = ws;
    ws.onopen = function () {
      opened = true;
      self.failures = 0;
      self.attempt = 0;
      var v1 = offer && ws.protocol === PROTOCOL;
      self.protocol = v1 ? PROTOCOL : '';
      var pending = self.queue;
      self.queue = [];
      for (var i = 0; i < pending.length; i++) ws.send(pending[i]);
      if (v1) {
        // open is emitted once hello, the snapshot and (when asked) recovery are in.
        self._conn = {
          ws: ws, asked: asked, hello: null, snapshot: false, recovery: null, ready: false,
          epoch: self.epoch, last: self.lastSeq, pending: null, buffer: []
        };
        return;
      }
      var reconnected = self.everOpened;
      self.everOpened = true;
      var detail = { reconnected: reconnected };
      if (self.proto) {
        // Raw frames carry no sequence: what this socket delivers cannot be told
        // apart from a later recovery, so the next one starts afresh.
        detail.recovered = wanted ? false : null;
        self.epoch = null;
        self.lastSeq = null;
        self._presence = null;
      }
      self._emit('open', detail);
    };
    ws.onmessage = function (ev) {
      var c = self._conn;
      if (c && c.ws === ws) self._frame(c, ev.data);
      else self._emit('message', { data: ev.data });
    };
    ws.onerror = function () { /* onclose follows */ };
    ws.onclose = function (ev) {
      if (self.socket === ws) self.socket = null;
      if (self._conn && self._conn.ws === ws) self._conn = null;
      if (self.socket === null) self.protocol = '';
      if (!opened && offer && !self.stopped) {
        // The handshake failed while offering the subprotocol: perhaps a daemon that
        // does not know it, and a browser that refuses its answer. Try once at once
        // without it; only that attempt counts as a failure.
        self._rawNext = true;
        self._connect();
        return;
      }
      self._closed(opened, ev && ev.code, ev && ev.reason);
    };
  };

  TsugiNotify.prototype._closed = function (opened, code, reason) {
    if (opened) this._emit('close', { code: code, reason: reason });
    if (this.stopped) return;
    if (!opened) {
      this.failures += 1;
      if (this.failures >= this.options.maxFailures) {
        this.stopped = true;
        this._emit('giveup', { failures: this.failures });
        return;
      }
    }
    var self = this;
    var delay = this.nextDelay(this.attempt);
    this.attempt += 1;
    this._emit('retry', { attempt: this.attempt, delay: delay });
    this.timer = setTimeout(function () { self.timer = null; self._connect(); }, delay);
  };

  /** One frame of the subprotocol. Unknown types and malformed frames are ignored. */
  TsugiNotify.prototype._frame = function (c, text) {
    if (typeof text !== 'string') return;
    var m;
    try { m = JSON.parse(text); } catch (e) { return; }
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'hello':
        if (c.hello) return;
        c.hello = m;
        // Who this socket is: known from here on (the presence event can mark it).
        this.user = m.user === undefined ? null : idOf(m.user);
        this.conn = m.conn === undefined ? null : idOf(m.conn);
        var epoch = idOf(m.epoch);
        if (epoch === null || epoch !== c.epoch) {
          // Another history: sequences seen before mean nothing in it.
          c.epoch = epoch;
          c.last = null;
        }
        // While recovery runs, the recovered messages are at or below hello.seq: it
        // counts as seen only once the recovery frame is in.
        if (c.asked) c.pending = maxSeq(c.pending, seqOf(m.seq));
        else c.last = maxSeq(c.last, seqOf(m.seq));
        this._ready(c);
        return;
      case 'presence':
        this._snapshot(m);
        c.snapshot = true;
        this._ready(c);
        return;
      case 'recovery':
        if (!c.asked || c.recovery) return;
        c.recovery = m;
        this._ready(c);
        return;
      case 'message':
        this._message(c, m);
        return;
      case 'ack':
        if (c.ready) this.lastSeq = maxSeq(this.lastSeq, seqOf(m.seq));
        else if (c.asked) c.pending = maxSeq(c.pending, seqOf(m.seq));
        else c.last = maxSeq(c.last, seqOf(m.seq));
        return;
      case 'join':
      case 'leave':
        if (c.snapshot) this._member(m.type === 'join', m);
        return;
      default:
        return;
    }
  };

  /** Emits open when hello, the snapshot and the asked recovery are in, then the buffered messages. */
  TsugiNotify.prototype._ready = function (c) {
    if (c.ready || !c.hello || !c.snapshot || (c.asked && !c.recovery)) return;
    c.ready = true;
    this.epoch = c.epoch;
    this.lastSeq = maxSeq(c.last, c.pending);
    var reconnected = this.everOpened;
    this.everOpened = true;
    var detail = { reconnected: reconnected, recovered: null };
    if (c.asked) {
      detail.recovered = c.recovery.recovered === true;
      if (!detail.recovered && typeof c.recovery.reason === 'string') detail.reason = c.recovery.reason;
    }
    this._emit('open', detail);
    var buffer = c.buffer;
    c.buffer = null;
    for (var i = 0; i < buffer.length && !this.stopped; i++) this._emit('message', buffer[i]);
  };

  TsugiNotify.prototype._message = function (c, m) {
    var data = m.data;
    if (typeof data !== 'string') return;
    if (m.binary === true) {
      try { data = decodeBase64(data); } catch (e) { return; }
    }
    var seq = seqOf(m.seq);
    // Exactly once: a sequence at or below the last seen was delivered already.
    var last = c.ready ? this.lastSeq : c.last;
    if (seq !== null && last !== null && seq <= last) return;
    if (seq !== null) {
      if (c.ready) this.lastSeq = seq;
      else c.last = seq;
    }
    var detail = {
      data: data,
      seq: seq,
      from: m.from === undefined ? null : idOf(m.from),
      server: m.server === true,
      recovered: m.recovered === true
    };
    if (c.ready) this._emit('message', detail);
    else c.buffer.push(detail);
  };

  /** A presence snapshot replaces what was known. */
  TsugiNotify.prototype._snapshot = function (m) {
    var p = {
      countsOnly: !Array.isArray(m.users),
      count: typeof m.count === 'number' ? m.count : 0,
      connections: typeof m.connections === 'number' ? m.connections : 0,
      anonymous: typeof m.anonymous === 'number' ? m.anonymous : 0,
      byUser: Object.create(null),   // user -> {conns: {conn: true}, n}
      order: [],                      // users with a socket, in the order they came
      gone: Object.create(null),      // conns that left: a late join of one is stale
      anonBase: typeof m.anonymous === 'number' ? m.anonymous : 0,
      anonBaseLeft: 0,
      anonJoined: 0,
      anonIn: Object.create(null)
    };
    if (!p.countsOnly) {
      for (var i = 0; i < m.users.length; i++) {
        var e = m.users[i];
        var user = e && idOf(e.user);
        if (user === null || !Array.isArray(e.conns)) continue;
        for (var j = 0; j < e.conns.length; j++) {
          var conn = idOf(e.conns[j]);
          if (conn !== null) this._add(p, user, conn);
        }
      }
    }
    this._presence = p;
    this._emit('presence', {
      users: this.presence(),
      count: p.count,
      connections: p.connections,
      anonymous: p.anonymous
    });
  };

  /** Adds a socket of a named user: its entry, or null when the socket was known. */
  TsugiNotify.prototype._add = function (p, user, conn) {
    var u = p.byUser[user];
    if (!u) {
      u = p.byUser[user] = { conns: Object.create(null), n: 0 };
      p.order.push(user);
    }
    if (u.conns[conn]) return null;
    u.conns[conn] = true;
    u.n += 1;
    return u;
  };

  /** A join or leave frame: idempotent, it names a socket. */
  TsugiNotify.prototype._member = function (isJoin, m) {
    var p = this._presence;
    if (!p || p.countsOnly) return;
    var conn = idOf(m.conn);
    if (conn === null) return;
    var user = m.user === null || m.user === undefined ? null : idOf(m.user);
    if (user === null && m.user !== null && m.user !== undefined) return;
    if (isJoin && p.gone[conn]) return;
    if (!isJoin) {
      if (p.gone[conn]) return;
      p.gone[conn] = true;
    }
    if (user === null) {
      if (isJoin) {
        if (p.anonIn[conn]) return;
        p.anonIn[conn] = true;
        p.anonJoined += 1;
      } else if (p.anonIn[conn]) {
        delete p.anonIn[conn];
        p.anonJoined -= 1;
      } else {
        p.anonBaseLeft += 1;   // one of the snapshot's anonymous sockets
      }
      this._emit('change', { user: null, conn: conn, connections: this.presenceCounts().anonymous });
      return;
    }
    var u = p.byUser[user];
    if (isJoin) {
      if (!this._add(p, user, conn)) return;
      u = p.byUser[user];
      if (u.n === 1) this._emit('join', { user: user, connections: 1 });
    } else {
      if (!u || !u.conns[conn]) return;
      delete u.conns[conn];
      u.n -= 1;
      if (u.n === 0) {
        delete p.byUser[user];
        p.order.splice(p.order.indexOf(user), 1);
        this._emit('leave', { user: user, connections: 0 });
      }
    }
    this._emit('change', { user: user, conn: conn, connections: u.n });
  };

  root.tsugiNotifySocket = tsugiNotifySocket;
  root.TsugiNotify = TsugiNotify;
  if (typeof module === 'object' && module.exports) {
    module.exports = { tsugiNotifySocket: tsugiNotifySocket, TsugiNotify: TsugiNotify };
  }
})(typeof window !== 'undefined' ? window : globalThis);
