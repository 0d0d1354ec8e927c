// The Socket.IO 4 peer of the cluster benchmark: one node of a Socket.IO cluster joined by
// @socket.io/redis-adapter, as its documentation sets it up (a pub and a sub Redis client).
// A `publish` event from any client is emitted to every client of every node as `m`.
//
//   node socketio-cluster-server.js PORT REDIS_URL KEY
//
// Prints "listening on PORT" once ready. Loopback only.
const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

async function main() {
  const [port, url, key] = process.argv.slice(2);
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer();
  const io = new Server(server, { transports: ['websocket'], serveClient: false });
  io.adapter(createAdapter(pub, sub, { key }));
  io.on('connection', (socket) => {
    socket.on('publish', (payload) => io.emit('m', payload));
  });
  server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
