// The main listener's demo chat page (/demo) in headless Chromium against the real gateway
// binary: the page loads sockjs-client and @stomp/stompjs from the gateway (files of the demo/
// npm package, nothing from another origin), and over each of sockjs-client's nine browser
// transports it joins a room, shows a message a Node @stomp/stompjs client sends, sends one the
// Node client receives, and its live numbers (counts, rates, transport in use) follow. A
// screenshot per transport is saved to DEMO_OUTPUT_DIR (default client-tests/test-output/).
// Without the libraries installed the page says what to run.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import { WebSocket as WsWebSocket } from 'ws';
import { launchChromium, PAGE_LOAD_TIMEOUT_MS, RECEIVING_ROUTE, TRANSPORTS, watchPage } from '../lib/browser.mjs';
import { PACKAGE_DIR, startGateway } from '../lib/gateway.mjs';

const TEST_TIMEOUT_MS = 45_000;
const WAIT_MS = 15_000;
const OUTPUT_DIR = process.env.DEMO_OUTPUT_DIR || path.join(PACKAGE_DIR, 'test-output');
const ASSETS_DIR = path.resolve(PACKAGE_DIR, '..', 'demo', 'node_modules');

let browser;
const cleanups = [];

function demoConfig(dir, assetsDir) {
  const file = path.join(dir, 'gateway.toml');
  writeFileSync(
    file,
    [
      '[server]',
      'listen = "127.0.0.1:0"',
      '',
      '[[service]]',
      'prefix = "/stomp"',
      'app = "stomp"',
      'sockjs_url = "/demo/sockjs.min.js"',
      '',
      '[demo]',
      'enabled = true',
      'path = "/demo"',
      'service = "/stomp"',
      `assets_dir = ${JSON.stringify(assetsDir)}`,
      '',
    ].join('\n'),
  );
  return file;
}

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  if (browser) await browser.close();
});

// A Node @stomp/stompjs client over raw WebSocket, subscribed to `destination`; resolves with
// the client and the bodies it receives.
function nodeClient(origin, destination) {
  return new Promise((resolve, reject) => {
    const received = [];
    const timer = setTimeout(() => reject(new Error('node client: no CONNECTED within 10 s')), 10_000);
    const client = new StompJs.Client({
      webSocketFactory: () => new WsWebSocket(`${origin.replace('http', 'ws')}/stomp/websocket`, ['v12.stomp']),
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      onConnect: () => {
        client.subscribe(destination, (m) => received.push(m.body), { receipt: 'sub' });
        client.watchForReceipt('sub', () => {
          clearTimeout(timer);
          resolve({ client, received });
        });
      },
      onStompError: (frame) => reject(new Error(`node client: ${frame.headers.message}`)),
    });
    client.activate();
  });
}

// The page's problems, less one warning that is not the page's: the gateway's iframe and
// htmlfile pages set document.domain as sockjs-client's protocol asks, and Chromium, whose
// agent clusters are origin-keyed, says it ignores that.
const unexpected = (problems) => problems.filter((p) => !/^console\.warning: document\.domain mutation is ignored/.test(p));

const text = (page, id) => page.$eval(`#${id}`, (e) => e.textContent);
const number = async (page, id) => Number(await text(page, id));

describe('with the client libraries installed', () => {
  let gw;

  before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-demo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    gw = await startGateway({ configFile: demoConfig(dir, ASSETS_DIR) });
    cleanups.push(() => gw.stop());
  });

  test('/ redirects to the demo page, which serves its two libraries and nothing else', async () => {
    const root = await fetch(`${gw.origin}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/demo');
    for (const file of ['sockjs.min.js', 'stomp.umd.min.js']) {
      const res = await fetch(`${gw.origin}/demo/${file}`);
      assert.equal(res.status, 200, file);
      assert.match(res.headers.get('content-type'), /^application\/javascript/);
      assert.ok((await res.text()).length > 10_000, `${file} is the library`);
    }
    assert.equal((await fetch(`${gw.origin}/demo/package.json`)).status, 404);
    assert.match(gw.logTail(), /demo page http:\/\/127\.0\.0\.1:\d+\/demo/);
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: join, receive, send, live numbers`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const room = `r-${transport}`;
      const destination = `/topic/chat.${room}`;
      const node = await nodeClient(gw.origin, destination);
      cleanups.push(() => node.client.deactivate());
      const context = await browser.newContext({ viewport: { width: 1200, height: 860 } });
      const page = await context.newPage();
      const { problems, receiving } = watchPage(page);
      const foreign = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(gw.origin)) foreign.push(r.url());
      });
      const diagnostics = () => `problems: ${problems.join('\n')}\n${gw.logTail(20)}`;

      const response = await page.goto(`${gw.origin}/demo?transport=${transport}&room=${room}&nick=browser`, {
        timeout: PAGE_LOAD_TIMEOUT_MS,
      });
      assert.equal(response.status(), 200);
      await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: WAIT_MS });
      assert.equal(await number(page, 'received'), 0);
      await page.click('#join');
      await page.waitForFunction(() => document.body.dataset.state === 'connected', null, { timeout: WAIT_MS }).catch((e) => {
        throw new Error(`${e.message}\n${diagnostics()}`);
      });
      assert.equal(await text(page, 'transport-in-use'), transport);
      assert.equal(await text(page, 'destination'), destination);

      // The Node client talks until the page shows its messages arriving at a rate.
      const deadline = Date.now() + WAIT_MS;
      let i = 0;
      while (Date.now() < deadline) {
        node.client.publish({
          destination,
          body: JSON.stringify({ nick: 'node', text: `hello ${transport} ${i++}`, transport: 'raw websocket' }),
        });
        await new Promise((r) => setTimeout(r, 150));
        if ((await number(page, 'rate-in')) > 0) break;
      }
      assert.ok((await number(page, 'rate-in')) > 0, `no receive rate shown\n${diagnostics()}`);
      await page.waitForFunction((n) => Number(document.getElementById('received').textContent) >= n, i, { timeout: WAIT_MS });
      assert.match(await text(page, 'messages'), new RegExp(`node: hello ${transport} 0`));

      // The page's own message reaches the Node client (and comes back to the page).
      await page.fill('#message', `from the browser over ${transport}`);
      await page.press('#message', 'Enter');
      await page.waitForFunction(() => document.getElementById('sent').textContent === '1', null, { timeout: WAIT_MS });
      const until = Date.now() + WAIT_MS;
      while (!node.received.some((b) => b.includes(`from the browser over ${transport}`)) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const mine = node.received.map((b) => JSON.parse(b)).find((m) => m.text === `from the browser over ${transport}`);
      assert.ok(mine, `the Node client never got the page's message: ${node.received.slice(-3).join(' ')}`);
      assert.equal(mine.nick, 'browser');
      assert.equal(mine.transport, transport);
      await page.waitForFunction(() => /ms$/.test(document.getElementById('round-trip').textContent), null, { timeout: WAIT_MS });
      assert.match(await text(page, 'messages'), new RegExp(`browser: from the browser over ${transport}via ${transport}`));

      mkdirSync(OUTPUT_DIR, { recursive: true });
      const shot = path.join(OUTPUT_DIR, `demo-${transport}.png`);
      rmSync(shot, { force: true });
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok(statSync(shot).size > 1000, `${shot} was written`);

      // Every receiving request went to the transport's own route.
      const route = RECEIVING_ROUTE[transport];
      assert.ok(receiving.length >= 1 && receiving.every((r) => r === route), `receiving ${receiving.join(' ')}, expected ${route}`);
      assert.deepEqual(unexpected(problems), [], diagnostics());

      const seen = problems.length;
      await page.click('#leave');
      await page.waitForFunction(() => document.body.dataset.state === 'idle', null, { timeout: WAIT_MS });
      // Rates fall back to zero when the traffic stops.
      await page.waitForFunction(() => document.getElementById('rate-in').textContent === '0', null, { timeout: WAIT_MS });
      // Leaving cancels the session's requests still in flight; nothing else may go wrong.
      const cancelled = (p) => /^requestfailed: (GET|POST) \S+\/stomp\/\d+\/\w+\/\w+\S* net::ERR_ABORTED$/.test(p);
      assert.deepEqual(unexpected(problems.slice(seen)).filter((p) => !cancelled(p)), [], diagnostics());
      assert.deepEqual(foreign, [], `requests to other origins: ${foreign.join(' ')}`);
      await node.client.deactivate();
      await context.close();
    });
  }

  test('a transport this browser cannot use is reported on the page', { timeout: TEST_TIMEOUT_MS }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${gw.origin}/demo?transport=xdr-streaming`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: WAIT_MS });
    await page.click('#join');
    await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: WAIT_MS });
    assert.match(await text(page, 'error'), /Could not connect over xdr-streaming.*cannot use that transport/);
    assert.equal(await page.isDisabled('#join'), false);
    await context.close();
  });
});

describe('without the client libraries', () => {
  let gw;

  before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-demo-empty-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(path.join(dir, 'empty'));
    gw = await startGateway({ configFile: demoConfig(dir, path.join(dir, 'empty')) });
    cleanups.push(() => gw.stop());
  });

  test('the page and the start-up log say to run npm ci --prefix demo', { timeout: TEST_TIMEOUT_MS }, async () => {
    assert.match(gw.logTail(), /demo page .*cannot connect.*npm ci --prefix demo/);
    const res = await fetch(`${gw.origin}/demo/sockjs.min.js`);
    assert.equal(res.status, 404);
    assert.match(await res.text(), /npm ci --prefix demo/);

    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${gw.origin}/demo`, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => document.body.dataset.state === 'no-libraries', null, { timeout: WAIT_MS });
    assert.equal(await page.isVisible('#libs-missing'), true);
    assert.match(await text(page, 'libs-missing'), /npm ci --prefix demo/);
    assert.equal(await page.isDisabled('#join'), true);
    await context.close();
  });
});
