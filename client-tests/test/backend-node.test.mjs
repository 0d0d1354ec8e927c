// @stomp/stompjs over sockjs-client (websocket and xhr-streaming) under Node, against a
// gateway whose /app destinations and CONNECT hook go to a real HTTP backend
// (fixtures/test_backend.py), and a second backend that accepts requests and never answers.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { startTestBackend } from '../lib/backend.mjs';
import { startGateway, stompService } from '../lib/gateway.mjs';

const TRANSPORTS = ['websocket', 'xhr-streaming'];
const WAIT_MS = 10_000;
const TEST_TIMEOUT_MS = 40_000;

let gw;
let backend;
let hung;
const diagnostics = () => `  gateway output (tail):\n${gw ? gw.logTail(30) : '(not started)'}`;

before(async () => {
  backend = await startTestBackend();
  hung = await startTestBackend(['--hang-all']);
  const extraToml = [
    '[[backend]]',
    'destinations = ["/app/stuck/**"]',
    `url = "${hung.url('/stomp')}"`,
    'timeout_ms = 8000',
    '',
    '[[backend]]',
    'destinations = ["/app/**"]',
    `url = "${backend.url('/stomp')}"`,
    `connect_url = "${backend.url('/connect')}"`,
    `disconnect_url = "${backend.url('/disconnect')}"`,
    '',
  ].join('\n');
  gw = await startGateway({ services: [stompService('/sockjs.min.js')], extraToml });
});

after(async () => {
  if (gw) await gw.stop();
  if (backend) await backend.stop();
  if (hung) await hung.stop();
  http.globalAgent.destroy();
});

function withTimeout(promise, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms: ${what}\n${diagnostics()}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Connect @stomp/stompjs over one forced transport; resolves once CONNECTED (or ERROR) came.
// The connection records every MESSAGE by subscription id, every RECEIPT, and every ERROR.
function connect(transport, connectHeaders) {
  const conn = { inbox: {}, receipts: [], errors: [], sock: null, waiters: [] };
  const changed = () => {
    for (const w of conn.waiters.splice(0)) w();
  };
  conn.until = (pred, what) =>
    withTimeout(
      (async () => {
        while (!pred()) await new Promise((r) => conn.waiters.push(r));
      })(),
      what,
    );
  conn.client = new Client({
    webSocketFactory: () => (conn.sock = new SockJS(`${gw.origin}/stomp`, null, { transports: [transport] })),
    connectHeaders,
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
  });
  conn.client.onUnhandledReceipt = (f) => {
    conn.receipts.push(f.headers['receipt-id']);
    changed();
  };
  conn.client.onStompError = (f) => {
    conn.errors.push(f);
    changed();
  };
  conn.client.onWebSocketClose = (e) => {
    conn.closed = e;
    changed();
  };
  conn.connected = new Promise((resolve) => {
    conn.client.onConnect = (f) => resolve(f);
  });
  conn.subscribe = (destination, id) => {
    conn.inbox[id] = [];
    conn.client.subscribe(
      destination,
      (m) => {
        conn.inbox[id].push(m);
        changed();
      },
      { id, receipt: `sub-${id}` },
    );
    return conn.until(() => conn.receipts.includes(`sub-${id}`), `RECEIPT for ${destination}`);
  };
  conn.client.activate();
  return conn;
}

describe('@stomp/stompjs over sockjs-client with an HTTP backend', () => {
  for (const transport of TRANSPORTS) {
    test(`over ${transport}: the connect hook names the user, /app SEND and SUBSCRIBE reach the backend, answers come back`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const alice = connect(transport, { token: 'good-alice' });
      const connected = await withTimeout(alice.connected, 'CONNECTED');
      assert.equal(alice.sock.transport, transport);
      assert.equal(connected.headers['user-name'], 'alice');
      assert.equal(connected.headers['x-tenant'], 't1');

      await alice.subscribe('/topic/echo', 'echo');
      await alice.subscribe('/user/queue/private', 'private');
      await alice.subscribe('/app/init', 'init');
      assert.deepEqual(alice.inbox.init.map((m) => m.body), ['snapshot for alice'], '@SubscribeMapping: once, before the RECEIPT');
      assert.equal(alice.inbox.init[0].headers.destination, '/app/init');

      const text = `chat over ${transport}: caf\u00e9 \ud83d\ude00 </script>`;
      alice.client.publish({ destination: '/app/echo', body: text, headers: { receipt: 'chat' } });
      await alice.until(() => alice.receipts.includes('chat'), 'the chat RECEIPT');
      assert.deepEqual(alice.inbox.echo.map((m) => m.body), [text], 'the answer was published before the RECEIPT');
      assert.equal(alice.inbox.echo[0].headers.destination, '/topic/echo');

      alice.client.publish({ destination: '/app/private', body: 'psst', headers: { receipt: 'priv' } });
      await alice.until(() => alice.receipts.includes('priv'), 'the private RECEIPT');
      assert.deepEqual(alice.inbox.private.map((m) => m.body), ['private: psst']);
      assert.equal(alice.inbox.private[0].headers.destination, '/user/queue/private');

      const log = await backend.log();
      const hook = log.filter((e) => e.kind === 'connect').map((e) => e.request).find((r) => r.session === connected.headers.session);
      assert.ok(hook, `the hook saw this session: ${JSON.stringify(log)}`);
      assert.equal(hook.headers.token, 'good-alice');
      assert.equal(hook.transport, transport);
      assert.match(hook.handshake.url, /^\/stomp\/\d+\/[^/]+\/(websocket|xhr_streaming)/);
      assert.ok(hook.handshake.headers.host, `handshake headers: ${JSON.stringify(hook.handshake)}`);
      const frames = log.filter((e) => e.kind === 'frame' && e.request.session === connected.headers.session).map((e) => e.request);
      assert.deepEqual(frames.map((f) => [f.type, f.destination, f.user]), [
        ['subscribe', '/app/init', 'alice'],
        ['send', '/app/echo', 'alice'],
        ['send', '/app/private', 'alice'],
      ]);
      assert.equal(frames[1].body, text);

      await withTimeout(alice.client.deactivate(), 'DISCONNECT');
      await withTimeout(
        (async () => {
          for (;;) {
            const notices = (await backend.log()).filter((e) => e.kind === 'disconnect').flatMap((e) => e.request.sessions);
            const mine = notices.find((s) => s.session === connected.headers.session);
            if (mine) return assert.deepEqual([mine.user, mine.cause], ['alice', 'disconnect']);
            await new Promise((r) => setTimeout(r, 50));
          }
        })(),
        'the disconnect notice',
      );
    });

    test(`over ${transport}: a denied token and a failing backend are STOMP errors`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const denied = connect(transport, { token: 'deny' });
      await denied.until(() => denied.errors.length > 0, 'ERROR for a denied token');
      assert.equal(denied.errors[0].headers.message, 'Authentication failed');
      assert.equal(denied.errors[0].body, 'bad token');
      await denied.client.deactivate();

      const bob = connect(transport, { token: 'good-bob' });
      await withTimeout(bob.connected, 'CONNECTED');
      bob.client.publish({ destination: '/app/garbage', body: 'x', headers: { receipt: 'g' } });
      await bob.until(() => bob.errors.length > 0, 'ERROR for a garbage answer');
      assert.equal(bob.errors[0].headers.message, 'Backend error');
      assert.equal(bob.errors[0].headers['receipt-id'], 'g');
      assert.match(bob.errors[0].body, /not \{"messages"/);
      await bob.until(() => bob.closed, 'the close after ERROR');
      await bob.client.deactivate();
    });
  }

  test('a hung backend holds only its own session: another session keeps round-tripping through the other backend and the broker', { timeout: TEST_TIMEOUT_MS }, async () => {
    const stuck = connect('websocket', { token: 'good-carol' });
    await withTimeout(stuck.connected, 'CONNECTED');
    stuck.client.publish({ destination: '/app/stuck/x', body: 'hello?', headers: { receipt: 'never' } });
    await withTimeout(
      (async () => {
        while (!(await hung.log()).length) await new Promise((r) => setTimeout(r, 50));
      })(),
      'the hung backend to hold the request',
    );
    const dave = connect('xhr-streaming', { token: 'good-dave' });
    await withTimeout(dave.connected, 'CONNECTED');
    await dave.subscribe('/topic/echo', 'echo');
    await dave.subscribe('/topic/plain', 'plain');
    const started = Date.now();
    for (let i = 0; i < 10; i++) {
      dave.client.publish({ destination: '/app/echo', body: `backend ${i}` });
      dave.client.publish({ destination: '/topic/plain', body: `broker ${i}` });
      await dave.until(() => dave.inbox.echo.length === i + 1 && dave.inbox.plain.length === i + 1, `round trip ${i}`);
    }
    assert.ok(Date.now() - started < 5000, `10 round trips took ${Date.now() - started} ms`);
    assert.deepEqual(stuck.receipts, [], 'the stuck frame is still waiting');
    assert.equal(stuck.errors.length, 0);
    await dave.client.deactivate();
    await stuck.client.deactivate({ force: true });
  });
});
