// TLS with Node clients that trust only a certificate made for this run (openssl): the
// gateway's HTTPS listener answers /info, a SockJS WebSocket and raw STOMP over `wss://`
// (`ws` with `ca`), and a client without that CA is refused by its own TLS check.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { startGateway, stompService } from '../lib/gateway.mjs';

const WAIT_MS = 10_000;
let gw;
let dir;
let ca;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  ca = readFileSync(cert);
  gw = await startGateway({
    services: [{ prefix: '/echo', app: 'echo' }, stompService('/sockjs.min.js')],
    server: { tls_cert: cert, tls_key: key },
  });
});

after(async () => {
  if (gw) await gw.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function get(url, options) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ...options, timeout: WAIT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

// The next `count` messages of a WebSocket, as text.
function messages(ws, count) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`timed out after ${JSON.stringify(got)}`)), WAIT_MS);
    ws.on('message', (data) => {
      got.push(data.toString());
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
    ws.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

test('the listener says https and answers /info to a client that trusts its CA', async () => {
  assert.match(gw.origin, /^https:\/\/127\.0\.0\.1:\d+$/);
  const info = await get(`${gw.origin}/echo/info`, { ca, servername: 'localhost' });
  assert.equal(info.status, 200);
  assert.equal(JSON.parse(info.body).websocket, true);
});

test('a SockJS WebSocket echoes over wss://', async () => {
  const ws = new WebSocket(`${gw.origin.replace('https', 'wss')}/echo/000/tlsnode/websocket`, { ca });
  const first = messages(ws, 2);
  ws.on('open', () => ws.send('["hello over tls"]'));
  const [open, echoed] = await first;
  ws.close();
  assert.equal(open, 'o');
  assert.equal(echoed, 'a["hello over tls"]');
});

test('raw STOMP over wss:// connects, subscribes and receives', async () => {
  const ws = new WebSocket(`${gw.origin.replace('https', 'wss')}/stomp/websocket`, 'v12.stomp', { ca });
  const frames = messages(ws, 3);
  ws.on('open', () => {
    ws.send('CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0');
    ws.send('SUBSCRIBE\nid:0\ndestination:/topic/tls\nreceipt:r\n\n\0');
    ws.send('SEND\ndestination:/topic/tls\n\nsecret\0');
  });
  const [connected, receipt, message] = await frames;
  ws.close();
  assert.match(connected, /^CONNECTED\n/);
  assert.match(receipt, /^RECEIPT\nreceipt-id:r\n/);
  assert.match(message, /^MESSAGE\n/);
  assert.ok(message.endsWith('\n\nsecret\0'), JSON.stringify(message));
});

test('a client without the CA is refused by certificate verification', async () => {
  await assert.rejects(get(`${gw.origin}/echo/info`, { servername: 'localhost' }), (err) => {
    assert.match(err.code || err.message, /SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/);
    return true;
  });
});
