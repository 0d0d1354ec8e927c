// The Node upstream of the proxy benchmark: a `ws` 8.23.0 echo server (text back as text,
// binary as binary). Usage: node ws-echo-server.js [PORT]; listens on 127.0.0.1 and prints
// `listening on http://127.0.0.1:PORT` (port 0 picks a free one).
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.on('listening', () => {
  console.error(`listening on http://127.0.0.1:${server.address().port}`);
});
