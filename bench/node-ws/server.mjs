// Reference broadcast server on Node's `ws`, with tsugi-notifyd's /notify semantics:
// the space is the token string itself (no crypto), rooms compare exactly, a message
// goes to every other member of the same space and room with its opcode.
//   node server.mjs PORT     prints "listening PORT" when ready
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 0);
const rooms = new Map(); // "space\0room" -> Set<WebSocket>
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/notify') { ws.close(1008); return; }
  const key = (url.searchParams.get('token') || '') + '\0' + (url.searchParams.get('room') || '');
  let members = rooms.get(key);
  if (!members) { members = new Set(); rooms.set(key, members); }
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const other of members) {
      if (other !== ws && other.readyState === 1) other.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(key);
  });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
