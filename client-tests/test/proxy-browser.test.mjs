// app = "proxy" in headless Chromium on all nine sockjs-client transports, against the real
// gateway binary and real upstreams: the 15-message echo through a `ws` echo upstream, a
// custom close code from the Python websockets upstream, and @stomp/stompjs (its UMD
// bundle) to RabbitMQ Web-STOMP. The page is the proxy service's own iframe page on the
// gateway's origin, where every transport, htmlfile included, is permitted.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import { WebSocket as WsWebSocket } from 'ws';
import { assertReceivingRequests, launchChromium, PAGE_HOST, PAGE_LOAD_TIMEOUT_MS, RECEIVING_ROUTE, TRANSPORTS, watchPage } from '../lib/browser.mjs';
import { assertEchoed } from '../lib/checks.mjs';
import { startGateway } from '../lib/gateway.mjs';
import { assertClose, assertRabbitScenario, directDisconnect } from '../lib/proxy-checks.mjs';
import { CLOSE_CASES, proxyServices, rabbitUrl, startCloseUpstream, startWsEcho, unusedPort } from '../lib/proxy-upstreams.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { MESSAGES } from '../page/scenario.mjs';
import { runRabbitScenario } from '../page/proxy-scenario.mjs';
import { stompjs7Adapter } from '../page/stomp-scenario.mjs';

const TEST_TIMEOUT_MS = 40_000;
const CUSTOM = CLOSE_CASES[0]; // close 4001 "custom reason"

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

let staticServer;
let echo;
let closer;
let gw;
let browser;
let context;
let direct;

before(async () => {
  const rabbit = rabbitUrl();
  staticServer = await startStaticServer(PAGE_HOST);
  echo = await startWsEcho();
  closer = await startCloseUpstream();
  const services = proxyServices({
    sockjsUrl: `${staticServer.origin}/sockjs.min.js`,
    echo: echo.url,
    closer: closer.origin,
    unreachablePort: await unusedPort(),
    rabbit,
  });
  gw = await startGateway({ services });
  const tag = `browser.direct.${process.pid}`;
  direct = directDisconnect(
    await runRabbitScenario(stompjs7Adapter(StompJs, { brokerURL: rabbit }), { topic: `/topic/proxy.${tag}`, queue: `/queue/proxy.${tag}`, label: 'directly' }),
  );
  browser = await launchChromium();
  context = await browser.newContext();
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
  if (closer) await closer.stop();
  if (echo) await echo.close();
  if (staticServer) await staticServer.close();
});

// The gateway's iframe page for /rabbit (it loads sockjs-client through sockjs_url), with the
// @stomp/stompjs bundle added and the scenario modules imported from the static server.
async function inPage(fn, arg) {
  const page = await context.newPage();
  const { problems, receiving } = watchPage(page);
  const diagnostics = () =>
    `  page: ${page.url()}\n  page problems:\n    ${problems.slice(0, 20).join('\n    ') || '(none)'}` +
    `\n  receiving requests: ${receiving.join(' ') || '(none)'}` +
    `\n  gateway output (tail):\n${gw.logTail(30)}`;
  try {
    await page.goto(`${gw.origin}/rabbit/iframe.html`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => window.SockJS, null, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.addScriptTag({ url: `${staticServer.origin}/stomp.umd.min.js` });
    await page.evaluate(async (origin) => {
      window.scenario = await import(`${origin}/scenario.mjs`);
      window.stompScenario = await import(`${origin}/stomp-scenario.mjs`);
      window.proxyScenario = await import(`${origin}/proxy-scenario.mjs`);
    }, staticServer.origin);
    return { result: await page.evaluate(fn, arg), diagnostics, receiving };
  } finally {
    await page.close();
  }
}

const echoInPage = ([url, transport]) => window.scenario.runEcho(window.SockJS, url, transport, window.scenario.MESSAGES);

const closeInPage = ([url, transport]) =>
  new Promise((resolve) => {
    const sock = new window.SockJS(url, null, { transports: [transport] });
    const out = { transport: null, echoed: [], close: null };
    const timer = setTimeout(() => resolve({ ...out, error: 'no close within 15 s' }), 15000);
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

const rabbitInPage = ([url, transport, tag]) => {
  const adapter = window.stompScenario.stompjs7Adapter(window.StompJs, {
    webSocketFactory: () => new window.SockJS(url, null, { transports: [transport] }),
  });
  return window.proxyScenario.runRabbitScenario(adapter, { topic: `/topic/proxy.${tag}`, queue: `/queue/proxy.${tag}`, label: `over ${transport} in Chromium` });
};

describe('proxy in Chromium, all nine transports', () => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: echo of ${MESSAGES.length} messages through the ws upstream`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const { result, diagnostics, receiving } = await inPage(echoInPage, [`${gw.origin}/echo`, transport]);
      assertEchoed(result, transport, diagnostics);
      assertReceivingRequests(transport, receiving, diagnostics);
    });

    test(`${transport}: the upstream's close 4001 "custom reason" reaches the page`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const { result, diagnostics } = await inPage(closeInPage, [`${gw.origin}${CUSTOM.prefix}`, transport]);
      const where = `${JSON.stringify(result)}\n${diagnostics()}`;
      assert.equal(result.transport, transport, where);
      assert.deepEqual(result.echoed, ['ping before the close'], where);
      assertClose(result.close, CUSTOM.close, where);
    });

    test(`${transport}: @stomp/stompjs to RabbitMQ Web-STOMP`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const tag = `browser.${transport}.${process.pid}`;
      const { result, diagnostics, receiving } = await inPage(rabbitInPage, [`${gw.origin}/rabbit`, transport, tag]);
      assertRabbitScenario(result, { carrier: transport, disconnect: direct }, diagnostics);
      const route = RECEIVING_ROUTE[transport];
      assert.ok(receiving.length >= 2 && receiving.every((r) => r === route), `receiving requests: ${receiving.join(' ')}\n${diagnostics()}`);
    });
  }
});
