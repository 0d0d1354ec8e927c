// sockjs-client 1.6.x in headless Chromium against the real gateway binary: all nine browser
// transports, from a page on the gateway's own origin and from a page on a second origin.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { assertEchoed, assertNotPermitted, assertServerClosed } from '../lib/checks.mjs';
import {
  assertReceivingRequests,
  launchChromium,
  NOT_PERMITTED,
  PAGE_HOST,
  PAGE_LOAD_TIMEOUT_MS,
  TRANSPORTS,
  watchPage,
} from '../lib/browser.mjs';
import { startGateway, testServices } from '../lib/gateway.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { MESSAGES } from '../page/scenario.mjs';

const TEST_TIMEOUT_MS = 40_000;


let staticServer;
let gw;
let browser;
let context;

before(async () => {
  staticServer = await startStaticServer(PAGE_HOST);
  // The iframe page served by the gateway loads sockjs-client from here: the same file the
  // test page loads, as sockjs-client requires the same version on both sides.
  gw = await startGateway({ services: testServices(`${staticServer.origin}/sockjs.min.js`) });
  browser = await launchChromium();
  context = await browser.newContext();
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
  if (staticServer) await staticServer.close();
});

// Opens the test page.
// same-origin: the document is the gateway's own iframe page, http://127.0.0.1:GWPORT/echo/iframe.html.
//   It is a real page on the gateway's origin, served by the gateway, and it already loads the
//   sockjs-client bundle (through sockjs_url); the scenario module is then imported into it.
//   (Its SockJS.bootstrap_iframe() only listens for postMessage from a parent window; at top
//   level it has none, so it does nothing.)
// cross-origin: the page is index.html from the static server at http://127.0.0.2:PAGEPORT/.
async function openPage(originKind) {
  const page = await context.newPage();
  const { problems, receiving } = watchPage(page);
  if (originKind === 'same-origin') {
    await page.goto(`${gw.origin}/echo/iframe.html`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => window.SockJS, null, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.evaluate(async (url) => {
      window.scenario = await import(url);
    }, `${staticServer.origin}/scenario.mjs`);
  } else {
    await page.goto(`${staticServer.origin}/index.html`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => window.scenario && window.SockJS, null, { timeout: PAGE_LOAD_TIMEOUT_MS });
  }
  const diagnostics = () =>
    `  page: ${page.url()}\n  page problems:\n    ${problems.slice(0, 20).join('\n    ') || '(none)'}` +
    `\n  receiving requests: ${receiving.join(' ') || '(none)'}` +
    `\n  gateway output (tail):\n${gw.logTail(30)}`;
  return { page, diagnostics, receiving };
}

async function inPage(originKind, fn, arg) {
  const { page, diagnostics, receiving } = await openPage(originKind);
  try {
    return { result: await page.evaluate(fn, arg), diagnostics, receiving };
  } finally {
    await page.close();
  }
}

const echoInPage = ([url, transport]) =>
  window.scenario.runEcho(window.SockJS, url, transport, window.scenario.MESSAGES);
const serverCloseInPage = ([url, transport]) => window.scenario.runServerClose(window.SockJS, url, transport);

for (const originKind of ['same-origin', 'cross-origin']) {
  describe(`Chromium, ${originKind} page`, () => {
    test('the page origin is as intended', { timeout: TEST_TIMEOUT_MS }, async () => {
      const { page } = await openPage(originKind);
      try {
        const origin = await page.evaluate(() => window.location.origin);
        if (originKind === 'same-origin' && origin !== gw.origin) throw new Error(`page origin ${origin} != ${gw.origin}`);
        if (originKind === 'cross-origin' && origin === gw.origin) throw new Error(`page origin ${origin} == gateway`);
      } finally {
        await page.close();
      }
    });

    for (const transport of TRANSPORTS) {
      const why = NOT_PERMITTED[originKind]?.[transport];
      if (why) {
        test(`${transport}: not applicable (${why}); sockjs-client refuses it`, { timeout: TEST_TIMEOUT_MS }, async () => {
          const { result, diagnostics, receiving } = await inPage(originKind, echoInPage, [`${gw.origin}/echo`, transport]);
          assertNotPermitted(result, diagnostics);
          assert.deepEqual(receiving, [], `no session request expected\n${diagnostics()}`);
        });
        continue;
      }

      test(`${transport}: echo of ${MESSAGES.length} messages`, { timeout: TEST_TIMEOUT_MS }, async () => {
        const { result, diagnostics, receiving } = await inPage(originKind, echoInPage, [`${gw.origin}/echo`, transport]);
        assertEchoed(result, transport, diagnostics);
        assertReceivingRequests(transport, receiving, diagnostics);
      });

      test(`${transport}: /close gives 3000 "Go away!"`, { timeout: TEST_TIMEOUT_MS }, async () => {
        const { result, diagnostics } = await inPage(originKind, serverCloseInPage, [`${gw.origin}/close`, transport]);
        assertServerClosed(result, transport, diagnostics);
      });
    }

    test('no forced transport: websocket is chosen and echoes', { timeout: TEST_TIMEOUT_MS }, async () => {
      const { result, diagnostics } = await inPage(originKind, echoInPage, [`${gw.origin}/echo`, null]);
      assertEchoed(result, 'websocket', diagnostics);
    });
  });
}
