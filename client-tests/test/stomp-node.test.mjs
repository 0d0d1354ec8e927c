// Real STOMP clients under Node against the real gateway binary:
// @stomp/stompjs 7, stompjs 2.3.3 and webstomp-client over sockjs-client (websocket,
// xhr-streaming, xhr-polling, eventsource), and @stomp/stompjs over raw WebSocket
// (/stomp/websocket, `ws` as Node 20's WebSocket) with each STOMP subprotocol.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import Stomp from 'stompjs';
import webstomp from 'webstomp-client';
import { WebSocket as WsWebSocket } from 'ws';
import { startGateway, STOMP_SETTINGS, stompService } from '../lib/gateway.mjs';
import { assertStompScenario, SOCKJS_NORMAL_CLOSE } from '../lib/stomp-checks.mjs';
import {
  runStompScenario,
  stompjs2Adapter,
  stompjs7Adapter,
  webstompAdapter,
} from '../page/stomp-scenario.mjs';

const NODE_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const TEST_TIMEOUT_MS = 30_000;

// Node 20 has no global WebSocket; @stomp/stompjs's brokerURL mode needs one.
if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

let gw;
const gatewayLog = () => `  gateway output (tail):\n${gw ? gw.logTail(30) : '(not started)'}`;

before(async () => {
  gw = await startGateway({ services: [stompService('/sockjs.min.js')], stomp: STOMP_SETTINGS });
});

after(async () => {
  if (gw) await gw.stop();
  http.globalAgent.destroy();
});

// Each library over one forced sockjs-client transport.
const LIBRARIES = [
  {
    name: '@stomp/stompjs 7',
    // accept-version 1.2,1.1,1.0 → 1.2; waits for the DISCONNECT receipt.
    version: '1.2',
    adapter: (url, t) => stompjs7Adapter(StompJs, { webSocketFactory: () => new SockJS(url, null, { transports: [t] }) }),
  },
  {
    name: 'stompjs 2.3.3',
    // accept-version 1.1,1.0 → 1.1.
    version: '1.1',
    adapter: (url, t) => stompjs2Adapter(Stomp, () => new SockJS(url, null, { transports: [t] })),
  },
  {
    name: 'webstomp-client 1.2.6',
    // SockJS has no subprotocol, so webstomp falls back to accept-version 1.2.
    version: '1.2',
    adapter: (url, t) => webstompAdapter(webstomp, () => new SockJS(url, null, { transports: [t] })),
  },
];

describe('STOMP clients over sockjs-client under Node', () => {
  for (const lib of LIBRARIES) {
    for (const transport of NODE_TRANSPORTS) {
      test(`${lib.name} over ${transport}: connect, subscribe with receipt, 3 messages, user destinations, disconnect`, { timeout: TEST_TIMEOUT_MS }, async () => {
        const adapter = lib.adapter(`${gw.origin}/stomp`, transport);
        const r = await runStompScenario(adapter, { topic: `/topic/news.${lib.name.split(' ')[0].replace(/\W/g, '')}.${transport}`, label: `over ${transport}` });
        assertStompScenario(
          r,
          { carrier: transport, version: lib.version, disconnectReceipt: adapter.disconnectReceipt, close: SOCKJS_NORMAL_CLOSE },
          gatewayLog,
        );
      });
    }
  }

  test('webstomp-client with protocols [v10.stomp] over websocket: STOMP 1.0', { timeout: TEST_TIMEOUT_MS }, async () => {
    // webstomp takes accept-version from its `protocols` option when the socket has no
    // subprotocol (SockJS), which gives a STOMP 1.0 session over SockJS.
    const url = `${gw.origin}/stomp`;
    const adapter = webstompAdapter(webstomp, () => new SockJS(url, null, { transports: ['websocket'] }), { protocols: ['v10.stomp'] });
    const r = await runStompScenario(adapter, { topic: '/topic/news.v10', label: 'STOMP 1.0' });
    assertStompScenario(r, { carrier: 'websocket', version: '1.0', disconnectReceipt: false, close: SOCKJS_NORMAL_CLOSE }, gatewayLog);
  });
});

describe('@stomp/stompjs over raw WebSocket (/stomp/websocket)', () => {
  for (const [versions, subprotocol, version] of [
    [null, 'v12.stomp', '1.2'], // the default offer: v12.stomp, v11.stomp, v10.stomp
    [['1.1'], 'v11.stomp', '1.1'],
    [['1.0'], 'v10.stomp', '1.0'],
  ]) {
    test(`brokerURL ws://…/stomp/websocket offering ${versions ? `[${subprotocol}]` : 'v12/v11/v10'}: ${subprotocol} selected, STOMP ${version}`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const brokerURL = `ws://127.0.0.1:${gw.port}/stomp/websocket`;
      const adapter = stompjs7Adapter(StompJs, { brokerURL }, versions ? { versions } : {});
      const r = await runStompScenario(adapter, { topic: `/topic/news.raw.${version}`, label: `raw WebSocket ${subprotocol}` });
      assertStompScenario(
        r,
        {
          carrier: `ws subprotocol ${JSON.stringify(subprotocol)}`,
          version,
          disconnectReceipt: true,
          // After the DISCONNECT receipt both sides close; whichever close frame goes first,
          // the close is clean, and 1000 (or 1005, "no code", for a client-initiated close).
          close: (c, where) => {
            assert.ok(c, `no close event: ${where}`);
            assert.ok([1000, 1005].includes(c.code), `close code ${c.code}: ${where}`);
          },
        },
        gatewayLog,
      );
    });
  }
});
