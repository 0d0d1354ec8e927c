// A WebSocket echo upstream for the proxy tests, on the `ws` package: text comes back as
// text, binary as binary; the first subprotocol offered (if any) is agreed. Listens on
// 127.0.0.1 (a free port), in the test's own process.
import { WebSocketServer } from 'ws';

export function startWsEcho() {
  const connections = new Set();
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (protocols) => (protocols.size ? [...protocols][0] : false),
  });
  server.on('connection', (ws, req) => {
    connections.add(ws);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', () => connections.delete(ws));
    ws.handshakeHeaders = req.headers;
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => {
      const { port } = server.address();
      resolve({
        url: `ws://127.0.0.1:${port}/`,
        connections,
        close: () =>
          new Promise((r) => {
            for (const ws of connections) ws.terminate();
            server.close(() => r());
          }),
      });
    });
  });
}
