// @stomp/stompjs 7 (its UMD bundle) over sockjs-client 1.6.1 in headless Chromium through
// nginx to the three-node example (examples/cluster): all nine browser transports, from a page
// on nginx's origin (a node's iframe page, served through nginx) and from a page on a second
// origin. Every request of one SockJS session must reach the same node (nginx hashes the
// session id), and the user destinations of the scenario cross nodes through Redis. The
// scenario is page/stomp-scenario.mjs, the same one the other tests run.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  launchChromium,
  NOT_PERMITTED,
  PAGE_HOST,
  PAGE_LOAD_TIMEOUT_MS,
  RECEIVING_ROUTE,
  TRANSPORTS,
  watchPage,
} from '../lib/browser.mjs';
import { startCluster } from '../lib/cluster.mjs';
import { assertStompScenario, SOCKJS_NORMAL_CLOSE } from '../lib/stomp-checks.mjs';
import { startStaticServer } from '../lib/static-server.mjs';

const TEST_TIMEOUT_MS = 60_000;

let staticServer;
let gw;
let browser;
let context;

before(async () => {
  staticServer = await startStaticServer(PAGE_HOST);
  // sockjs_url: the iframe transports load this same sockjs-client file in the gateway's
  // iframe page, as sockjs-client requires the same version on both sides.
  gw = await startCluster({ sockjsUrl: `${staticServer.origin}/sockjs.min.js` });
  browser = await launchChromium();
  context = await browser.newContext();
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
  if (staticServer) await staticServer.close();
});

// Opens a page with SockJS, StompJs (the UMD global) and window.stompScenario.
// same-origin: the gateway's own iframe page for the STOMP service,
//   http://127.0.0.1:GWPORT/stomp/iframe.html, which loads sockjs-client through sockjs_url;
//   the @stomp/stompjs bundle is added with a <script> tag and the scenario module imported
//   (the static server sends Access-Control-Allow-Origin: * for that).
// cross-origin: stomp.html from the static server at http://127.0.0.2:PAGEPORT/.
async function openPage(originKind) {
  const page = await context.newPage();
  const { problems, receiving } = watchPage(page);
  if (originKind === 'same-origin') {
    await page.goto(`${gw.origin}/stomp/iframe.html`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => window.SockJS, null, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.addScriptTag({ url: `${staticServer.origin}/stomp.umd.min.js` });
    await page.evaluate(async (url) => {
      window.stompScenario = await import(url);
    }, `${staticServer.origin}/stomp-scenario.mjs`);
  } else {
    await page.goto(`${staticServer.origin}/stomp.html`, { timeout: PAGE_LOAD_TIMEOUT_MS });
  }
  await page.waitForFunction(() => window.stompScenario && window.SockJS && window.StompJs, null, {
    timeout: PAGE_LOAD_TIMEOUT_MS,
  });
  const diagnostics = () =>
    `  page: ${page.url()}\n  page problems:\n    ${problems.slice(0, 20).join('\n    ') || '(none)'}` +
    `\n  receiving requests: ${receiving.join(' ') || '(none)'}` +
    `\n  cluster logs (tail):\n${gw.logTail(10)}`;
  return { page, diagnostics, receiving };
}

// Runs in the page.
const stompInPage = ([url, transport, topic]) => {
  const s = window.stompScenario;
  const adapter = s.stompjs7Adapter(window.StompJs, {
    webSocketFactory: () => new window.SockJS(url, null, { transports: [transport] }),
  });
  return s.runStompScenario(adapter, { topic, label: `over ${transport} in Chromium` });
};

async function runInPage(originKind, transport) {
  const { page, diagnostics, receiving } = await openPage(originKind);
  try {
    const topic = `/topic/news.cluster.${originKind}.${transport}`;
    const result = await page.evaluate(stompInPage, [`${gw.origin}/stomp`, transport, topic]);
    return { result, diagnostics, receiving };
  } finally {
    await page.close();
  }
}

for (const originKind of ['same-origin', 'cross-origin']) {
  describe(`@stomp/stompjs in Chromium through nginx to three nodes, ${originKind} page`, () => {
    for (const transport of TRANSPORTS) {
      const why = NOT_PERMITTED[originKind]?.[transport];
      if (why) {
        test(`${transport}: not applicable (${why}); the STOMP client never connects`, { timeout: TEST_TIMEOUT_MS }, async () => {
          const { result, diagnostics, receiving } = await runInPage(originKind, transport);
          assert.match(
            String(result.error),
            /^connect alice#1: socket closed before CONNECTED: 2000 All transports failed$/,
            `expected sockjs-client to refuse ${transport}\n${diagnostics()}`,
          );
          assert.deepEqual(receiving, [], `no session request expected\n${diagnostics()}`);
        });
        continue;
      }

      test(`${transport}: connect, subscribe with receipt, 3 messages, user destinations, disconnect`, { timeout: TEST_TIMEOUT_MS }, async () => {
        const { result, diagnostics, receiving } = await runInPage(originKind, transport);
        assertStompScenario(
          result,
          { carrier: transport, version: '1.2', disconnectReceipt: true, close: SOCKJS_NORMAL_CLOSE },
          diagnostics,
        );
        // Every receiving request of the three connections went to the forced transport's route.
        const route = RECEIVING_ROUTE[transport];
        assert.ok(receiving.length >= 3, `expected a ${route} request per connection, saw ${receiving.join(' ')}\n${diagnostics()}`);
        assert.ok(
          receiving.every((r) => r === route),
          `receiving requests other than ${route}: ${receiving.join(' ')}\n${diagnostics()}`,
        );
      });
    }
  });
}
