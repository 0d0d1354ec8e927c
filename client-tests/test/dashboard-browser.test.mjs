// The admin listener's dashboard page in headless Chromium against the real gateway binary:
// the page loads behind the API key (HTTP Basic, as a person's browser would send it), needs
// nothing from any other origin, and its numbers change while real clients make traffic
// (@stomp/stompjs over sockjs-client and over raw WebSocket, plus admin API publishes).
// A screenshot is saved to DASHBOARD_OUTPUT_DIR (default client-tests/test-output/).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { WebSocket as WsWebSocket } from 'ws';
import { launchChromium, PAGE_LOAD_TIMEOUT_MS } from '../lib/browser.mjs';
import { PACKAGE_DIR, startGateway } from '../lib/gateway.mjs';

const API_KEY = 'dashboard-test-key';
const TEST_TIMEOUT_MS = 60_000;
const TRAFFIC_MS = 6_000; // the traffic loop's bound
const OUTPUT_DIR = process.env.DASHBOARD_OUTPUT_DIR || path.join(PACKAGE_DIR, 'test-output');

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

let gw;
let browser;
let configDir;
const clients = [];

before(async () => {
  configDir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-dashboard-'));
  const configFile = path.join(configDir, 'gateway.toml');
  writeFileSync(
    configFile,
    [
      '[server]',
      'listen = "127.0.0.1:0"',
      '',
      '[[service]]',
      'prefix = "/stomp"',
      'app = "stomp"',
      '',
      '[admin]',
      'listen = "127.0.0.1:0"',
      `api_key = "${API_KEY}"`,
      '',
    ].join('\n'),
  );
  gw = await startGateway({ configFile });
  assert.ok(gw.adminOrigin, `no admin listener line in the gateway's log\n${gw.logTail()}`);
  browser = await launchChromium();
});

after(async () => {
  for (const c of clients) await c.deactivate().catch(() => {});
  if (browser) await browser.close();
  if (gw) await gw.stop();
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

// A connected @stomp/stompjs client subscribed to `destination`; resolves once subscribed.
function stompClient(webSocketFactory, login, destination) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${login}: no CONNECTED within 10 s`)), 10_000);
    const client = new StompJs.Client({
      webSocketFactory,
      connectHeaders: { login },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      onConnect: () => {
        client.subscribe(destination, () => {});
        clearTimeout(timer);
        resolve(client);
      },
      onStompError: (frame) => reject(new Error(`${login}: ${frame.headers.message}`)),
    });
    client.activate();
    clients.push(client);
  });
}

async function publish(body) {
  const res = await fetch(`${gw.adminOrigin}/api/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

const number = (page, id) => page.$eval(`#${id}`, (e) => Number(e.textContent.replace(/,/g, '')));

test('the dashboard loads with the key and shows live numbers that follow the traffic', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Without the key the page is refused with a Basic challenge, so a browser asks for it.
  const denied = await fetch(`${gw.adminOrigin}/dashboard`);
  assert.equal(denied.status, 401);
  assert.match(denied.headers.get('www-authenticate'), /^Basic /);

  const context = await browser.newContext({
    httpCredentials: { username: 'admin', password: API_KEY },
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const problems = [];
  const foreign = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(gw.adminOrigin)) foreign.push(r.url());
  });
  const response = await page.goto(`${gw.adminOrigin}/dashboard`, { timeout: PAGE_LOAD_TIMEOUT_MS });
  assert.equal(response.status(), 200);
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1, null, { timeout: 10_000 });
  assert.equal(await number(page, 'sessions-total'), 0);
  assert.match(await page.textContent('#nodes'), /\(this node\)/);

  // Real clients on three carriers, all subscribed to /topic/dash.
  const sockjsUrl = `${gw.origin}/stomp`;
  await stompClient(() => new SockJS(sockjsUrl, null, { transports: ['websocket'] }), 'ws-user', '/topic/dash');
  await stompClient(() => new SockJS(sockjsUrl, null, { transports: ['xhr-streaming'] }), 'xhr-user', '/topic/dash');
  const raw = await stompClient(
    () => new WsWebSocket(`${gw.origin.replace('http', 'ws')}/stomp/websocket`, ['v12.stomp']),
    'raw-user',
    '/topic/dash',
  );
  await page.waitForFunction(() => document.getElementById('sessions-total').textContent === '3', null, { timeout: 10_000 });

  // Bounded traffic: publishes through the API and SENDs from a client, for TRAFFIC_MS.
  let sawRates = false;
  const deadline = Date.now() + TRAFFIC_MS;
  for (let i = 0; Date.now() < deadline; i++) {
    await publish({ destination: '/topic/dash', body: `api ${i}` });
    raw.publish({ destination: '/topic/dash', body: `client ${i}` });
    await new Promise((r) => setTimeout(r, 50));
    if (i % 10 === 9 && (await number(page, 'rate-in')) > 0 && (await number(page, 'rate-out')) > 0) {
      const byRate = await page.textContent('#top-rate');
      if (byRate.includes('/topic/dash')) {
        sawRates = true;
        break;
      }
    }
  }
  assert.ok(sawRates, `the page never showed the traffic: ${await page.textContent('main')}`);
  assert.match(await page.textContent('#top-subscribers'), /\/topic\/dash\s*3/);
  assert.match(await page.textContent('#by-transport'), /websocket/);
  assert.match(await page.textContent('#by-transport'), /xhr-streaming/);
  assert.match(await page.textContent('#by-transport'), /websocket-raw/);

  mkdirSync(OUTPUT_DIR, { recursive: true });
  const shot = path.join(OUTPUT_DIR, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });

  // When the traffic stops the rates fall back to zero.
  await page.waitForFunction(() => document.getElementById('rate-in').textContent === '0', null, { timeout: 10_000 });
  assert.deepEqual(problems, [], problems.join('\n'));
  assert.deepEqual(foreign, [], `requests to other origins: ${foreign.join(' ')}`);
  await context.close();
});
