// app = "proxy" with real clients under Node against the real gateway binary and real
// upstreams: sockjs-client over websocket, xhr-streaming, xhr-polling and eventsource to a
// `ws` echo server; the Python websockets server's custom close codes; an unreachable
// upstream; raw WebSocket (text and binary); and @stomp/stompjs to RabbitMQ Web-STOMP over
// every Node transport and over raw WebSocket with the v12.stomp subprotocol.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { WebSocket as WsWebSocket } from 'ws';
import { assertEchoed } from '../lib/checks.mjs';
import { startGateway } from '../lib/gateway.mjs';
import { assertClose, assertRabbitScenario, directDisconnect } from '../lib/proxy-checks.mjs';
import { CLOSE_CASES, proxyServices, rabbitUrl, startCloseUpstream, startWsEcho, unusedPort } from '../lib/proxy-upstreams.mjs';
import { MESSAGES, runEcho, runServerClose } from '../page/scenario.mjs';
import { runRabbitScenario } from '../page/proxy-scenario.mjs';
import { stompjs7Adapter } from '../page/stomp-scenario.mjs';

const NODE_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const TEST_TIMEOUT_MS = 30_000;

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

let gw;
let echo;
let closer;
let direct; // how RabbitMQ ends the scenario when reached directly
const diagnostics = () =>
  `  gateway output (tail):\n${gw ? gw.logTail(30) : '(not started)'}` +
  (closer ? `\n  close-upstream.py output:\n${closer.output()}` : '');

before(async () => {
  const rabbit = rabbitUrl();
  echo = await startWsEcho();
  closer = await startCloseUpstream();
  const services = proxyServices({
    sockjsUrl: '/sockjs.min.js',
    echo: echo.url,
    closer: closer.origin,
    unreachablePort: await unusedPort(),
    rabbit,
  });
  gw = await startGateway({ services });
  const tag = `node.direct.${process.pid}`;
  direct = directDisconnect(
    await runRabbitScenario(stompjs7Adapter(StompJs, { brokerURL: rabbit }), { topic: `/topic/proxy.${tag}`, queue: `/queue/proxy.${tag}`, label: 'directly' }),
  );
});

after(async () => {
  if (gw) await gw.stop();
  if (closer) await closer.stop();
  if (echo) await echo.close();
  http.globalAgent.destroy();
});

describe('proxy to a ws echo upstream, sockjs-client under Node', () => {
  for (const transport of NODE_TRANSPORTS) {
    test(`${transport}: echo of ${MESSAGES.length} messages through the upstream`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const r = await runEcho(SockJS, `${gw.origin}/echo`, transport, MESSAGES);
      assertEchoed(r, transport, diagnostics);
    });
  }

  test('raw WebSocket: text stays text, binary stays binary, subprotocol passed through', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ws = new WsWebSocket(`ws://127.0.0.1:${gw.port}/echo/websocket`, ['chat.v2', 'chat.v1']);
    const got = [];
    const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
    ws.on('message', (data, isBinary) => got.push(isBinary ? { binary: [...data] } : { text: String(data) }));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    assert.equal(ws.protocol, 'chat.v2', 'the client\'s first subprotocol, agreed by the upstream');
    ws.send('héllo');
    ws.send(Buffer.from([0, 255, 1, 128]));
    ws.send('</script>');
    const deadline = Date.now() + 8000;
    while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got, [{ text: 'héllo' }, { binary: [0, 255, 1, 128] }, { text: '</script>' }], diagnostics());
    ws.close(1000);
    const c = await closed;
    assert.ok([1000, 1005].includes(c.code), `close ${c.code}\n${diagnostics()}`);
  });
});

describe('upstream close codes (Python websockets upstream) reach sockjs-client', () => {
  for (const transport of NODE_TRANSPORTS) {
    for (const c of CLOSE_CASES) {
      test(`${transport}: upstream ${c.path} → close ${c.close.code} ${JSON.stringify(c.close.reason)}`, { timeout: TEST_TIMEOUT_MS }, async () => {
        const r = await new Promise((resolve) => {
          const sock = new SockJS(`${gw.origin}${c.prefix}`, null, { transports: [transport] });
          const out = { transport: null, echoed: [], close: null };
          const timer = setTimeout(() => resolve({ ...out, error: 'no close within 15 s' }), 15_000);
          sock.onopen = () => {
            out.transport = sock.transport;
            sock.send('ping before the close');
          };
          sock.onmessage = (e) => out.echoed.push(e.data);
          sock.onclose = (e) => {
            clearTimeout(timer);
            resolve({ ...out, close: { code: e.code, reason: e.reason, wasClean: e.wasClean } });
          };
        });
        const where = `${transport} ${c.prefix}: ${JSON.stringify(r)}\n${diagnostics()}`;
        assert.equal(r.transport, transport, where);
        // The upstream echoed the message before closing: it arrives first, never lost.
        assert.deepEqual(r.echoed, ['ping before the close'], where);
        assertClose(r.close, c.close, where);
      });
    }

    test(`${transport}: an unreachable upstream → close 1011 "Upstream unavailable"`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const t0 = Date.now();
      const r = await runServerClose(SockJS, `${gw.origin}/unreachable`, transport);
      const where = `${JSON.stringify(r)}\n${diagnostics()}`;
      assert.equal(r.error, null, where);
      assert.ok(r.opened, where);
      assertClose(r.close, { code: 1011, reason: 'Upstream unavailable' }, where);
      assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
    });
  }
});

describe('@stomp/stompjs to RabbitMQ Web-STOMP through the proxy', () => {
  for (const transport of NODE_TRANSPORTS) {
    test(`over ${transport}: CONNECTED from RabbitMQ, topic fan-out, a queue, receipts, disconnect`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const adapter = stompjs7Adapter(StompJs, { webSocketFactory: () => new SockJS(`${gw.origin}/rabbit`, null, { transports: [transport] }) });
      const tag = `node.${transport}.${process.pid}`;
      const r = await runRabbitScenario(adapter, { topic: `/topic/proxy.${tag}`, queue: `/queue/proxy.${tag}`, label: `over ${transport}` });
      assertRabbitScenario(r, { carrier: transport, disconnect: direct }, diagnostics);
    });
  }

  test('over raw WebSocket /rabbit/websocket with v12.stomp', { timeout: TEST_TIMEOUT_MS }, async () => {
    const adapter = stompjs7Adapter(StompJs, { brokerURL: `ws://127.0.0.1:${gw.port}/rabbit/websocket` });
    const tag = `node.raw.${process.pid}`;
    const r = await runRabbitScenario(adapter, { topic: `/topic/proxy.${tag}`, queue: `/queue/proxy.${tag}`, label: 'raw WebSocket' });
    assertRabbitScenario(
      r,
      { carrier: 'ws subprotocol "v12.stomp"', disconnect: direct },
      diagnostics,
    );
  });
});
