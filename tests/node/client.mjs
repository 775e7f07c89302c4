// An independent WebSocket client (Node's `ws` library) for the daemon's tests.
//   node client.mjs URL [--send TEXT]... [--send-binary HEX]... [--expect N] [--timeout MS]
// Prints one JSON line per event: {"event":"open"}, {"event":"message","type":"text"|
// "binary","data":...}, {"event":"refused","status":403}, {"event":"close","code":1001}.
import WebSocket from 'ws';

const args = process.argv.slice(2);
const url = args.shift();
const sends = [];
let expect = 0;
let timeout = 5000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--send') sends.push(args[++i]);
  else if (args[i] === '--send-binary') sends.push(Buffer.from(args[++i], 'hex'));
  else if (args[i] === '--expect') expect = Number(args[++i]);
  else if (args[i] === '--timeout') timeout = Number(args[++i]);
}
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ws = new WebSocket(url, { perMessageDeflate: false });
let got = 0;
const done = () => { ws.terminate(); process.exit(0); };
setTimeout(done, timeout);
ws.on('unexpected-response', (_req, res) => { out({ event: 'refused', status: res.statusCode }); process.exit(0); });
ws.on('error', (e) => { out({ event: 'error', message: String(e.message) }); process.exit(0); });
ws.on('open', () => {
  out({ event: 'open' });
  for (const s of sends) ws.send(s);
  if (expect === 0 && sends.length > 0) setTimeout(done, 300);
});
ws.on('message', (data, isBinary) => {
  out({ event: 'message', type: isBinary ? 'binary' : 'text', data: isBinary ? data.toString('hex') : data.toString() });
  if (++got >= expect && expect > 0) done();
});
ws.on('close', (code) => { out({ event: 'close', code }); process.exit(0); });
