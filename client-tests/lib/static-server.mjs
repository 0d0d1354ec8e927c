// A tiny static server for the browser tests: the test pages, the shared scenario modules,
// the sockjs-client bundle (which the gateway's iframe page also loads, via sockjs_url) and
// the @stomp/stompjs UMD bundle, and the proxy tests' RabbitMQ scenario.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { PACKAGE_DIR } from './gateway.mjs';

const require = createRequire(import.meta.url);
const SOCKJS_BUNDLE = path.join(path.dirname(require.resolve('sockjs-client/package.json')), 'dist', 'sockjs.min.js');
// @stomp/stompjs exports no package.json; its `require` entry is bundles/stomp.umd.js.
const STOMPJS_BUNDLE = path.join(path.dirname(require.resolve('@stomp/stompjs')), 'stomp.umd.min.js');

// URL path (below the page directory) → [file, content type]
const FILES = {
  'index.html': [path.join(PACKAGE_DIR, 'page', 'index.html'), 'text/html; charset=utf-8'],
  'scenario.mjs': [path.join(PACKAGE_DIR, 'page', 'scenario.mjs'), 'text/javascript; charset=utf-8'],
  'sockjs.min.js': [SOCKJS_BUNDLE, 'text/javascript; charset=utf-8'],
  'stomp.html': [path.join(PACKAGE_DIR, 'page', 'stomp.html'), 'text/html; charset=utf-8'],
  'stomp-scenario.mjs': [path.join(PACKAGE_DIR, 'page', 'stomp-scenario.mjs'), 'text/javascript; charset=utf-8'],
  'proxy-scenario.mjs': [path.join(PACKAGE_DIR, 'page', 'proxy-scenario.mjs'), 'text/javascript; charset=utf-8'],
  'stomp.umd.min.js': [STOMPJS_BUNDLE, 'text/javascript; charset=utf-8'],
};

export function readPageFile(name) {
  const entry = FILES[name];
  if (!entry) return null;
  return { body: readFileSync(entry[0]), contentType: entry[1] };
}

// Listens on host:0 (a loopback address); resolves with {origin, close()}.
export function startStaticServer(host) {
  const server = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\//, '') || 'index.html';
    const file = req.method === 'GET' ? readPageFile(name) : null;
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    // CORS: the same-origin tests import scenario.mjs into a page on the gateway's origin.
    res.writeHead(200, {
      'Content-Type': file.contentType,
      'Cache-Control': 'no-store',
      'Access-Control-Allow-Origin': '*',
    });
    res.end(file.body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      resolve({
        origin: `http://${host}:${port}`,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
