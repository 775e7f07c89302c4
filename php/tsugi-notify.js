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
 * Events of TsugiNotify (notify.on(name, fn)):
 *   open     {reconnected: bool}  the socket is open; after a reconnect, resync state
 *   message  {data}               a message from another browser of the same room
 *   close    {code, reason}       the socket closed; a reconnect is scheduled
 *   retry    {attempt, delay}     the next attempt and its delay (ms)
 *   dropped  {data}               the queue was full: this oldest unsent message is gone
 *   giveup   {failures}           opening failed maxFailures times in a row; stopped
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

  var DEFAULTS = {
    minDelay: 500,      // ms, first retry's ceiling
    maxDelay: 30000,    // ms, cap of the backoff
    maxQueue: 100,      // messages kept while down
    maxFailures: 8,     // opens that fail in a row before giving up
    random: Math.random,
    WebSocket: null     // defaults to the browser's
  };

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

  TsugiNotify.prototype._connect = function () {
    var self = this;
    var Ws = this.options.WebSocket || root.WebSocket;
    var opened = false;
    var ws;
    try {
      ws = new Ws(notifyUrl(this.room));
    } catch (e) {
      this._closed(false, 1006, String(e && e.message));
      return;
    }
    this.socket = ws;
    ws.onopen = function () {
      opened = true;
      var reconnected = self.everOpened;
      self.everOpened = true;
      self.failures = 0;
      self.attempt = 0;
      var pending = self.queue;
      self.queue = [];
      for (var i = 0; i < pending.length; i++) ws.send(pending[i]);
      self._emit('open', { reconnected: reconnected });
    };
    ws.onmessage = function (ev) { self._emit('message', { data: ev.data }); };
    ws.onerror = function () { /* onclose follows */ };
    ws.onclose = function (ev) {
      if (self.socket === ws) self.socket = null;
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

  root.tsugiNotifySocket = tsugiNotifySocket;
  root.TsugiNotify = TsugiNotify;
  if (typeof module === 'object' && module.exports) {
    module.exports = { tsugiNotifySocket: tsugiNotifySocket, TsugiNotify: TsugiNotify };
  }
})(typeof window !== 'undefined' ? window : globalThis);
