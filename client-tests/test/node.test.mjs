// sockjs-client 1.6.x under Node against the real gateway binary.
// Under Node sockjs-client has four transports: websocket (faye-websocket), xhr-streaming and
// xhr-polling (Node's http module), and eventsource (the `eventsource` npm polyfill).
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import SockJS from 'sockjs-client';
import { assertEchoed, assertNotPermitted, assertServerClosed } from '../lib/checks.mjs';
import { startGateway, testServices } from '../lib/gateway.mjs';
import { MESSAGES, runEcho, runServerClose } from '../page/scenario.mjs';

const NODE_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const TEST_TIMEOUT_MS = 30_000;

let gw;
const gatewayLog = () => `  gateway output (tail):\n${gw ? gw.logTail(30) : '(not started)'}`;

before(async () => {
  gw = await startGateway({ services: testServices('/sockjs.min.js') });
});

after(async () => {
  if (gw) await gw.stop();
  http.globalAgent.destroy();
});

describe('sockjs-client under Node', () => {
  for (const transport of NODE_TRANSPORTS) {
    test(`${transport}: echo of ${MESSAGES.length} messages`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const r = await runEcho(SockJS, `${gw.origin}/echo`, transport, MESSAGES);
      assertEchoed(r, transport, gatewayLog);
    });

    test(`${transport}: /close gives 3000 "Go away!"`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const r = await runServerClose(SockJS, `${gw.origin}/close`, transport);
      assertServerClosed(r, transport, gatewayLog);
    });
  }

  test('no forced transport: websocket is chosen and echoes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await runEcho(SockJS, `${gw.origin}/echo`, null, MESSAGES);
    assertEchoed(r, 'websocket', gatewayLog);
  });

  test('cookie_needed service: xhr-streaming echoes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await runEcho(SockJS, `${gw.origin}/cookie_needed_echo`, 'xhr-streaming', MESSAGES);
    assertEchoed(r, 'xhr-streaming', gatewayLog);
  });

  test('websocket disabled: forced websocket gives 2000 "All transports failed"', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await runEcho(SockJS, `${gw.origin}/disabled_websocket_echo`, 'websocket', MESSAGES);
    assertNotPermitted(r, gatewayLog);
  });

  test('websocket disabled: the default list falls back to xhr-streaming', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await runEcho(SockJS, `${gw.origin}/disabled_websocket_echo`, null, MESSAGES);
    assertEchoed(r, 'xhr-streaming', gatewayLog);
  });
});
