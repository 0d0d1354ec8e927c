// The sockjs-node peer of scripts/bench: /echo and /broadcast with default options.
// Listens on 127.0.0.1 (port from argv[2], 0 = any) and logs the address on stderr.
'use strict';
const http = require('http');
const sockjs = require('sockjs');

const quiet = { log: () => {} };

const echo = sockjs.createServer(quiet);
echo.on('connection', (conn) => {
  conn.on('data', (msg) => conn.write(msg));
});

const members = new Map();
const broadcast = sockjs.createServer(quiet);
broadcast.on('connection', (conn) => {
  members.set(conn.id, conn);
  conn.on('data', (msg) => {
    for (const c of members.values()) c.write(msg);
  });
  conn.on('close', () => members.delete(conn.id));
});

const server = http.createServer();
echo.installHandlers(server, { prefix: '/echo' });
broadcast.installHandlers(server, { prefix: '/broadcast' });
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.error(`listening on http://127.0.0.1:${server.address().port}`);
});
