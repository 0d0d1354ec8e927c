// What the browser test files share: the Chromium to drive and its flags, sockjs-client's nine
// browser transports, and a watcher for a page's problems and SockJS receiving requests.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server', // loopback only, whatever the environment says
];
export const PAGE_HOST = '127.0.0.2'; // the second origin; the gateway is on 127.0.0.1
export const PAGE_LOAD_TIMEOUT_MS = 15_000;

// sockjs-client's transport names, in its own order of preference.
export const TRANSPORTS = [
  'websocket',
  'xhr-streaming',
  'eventsource',
  'iframe-eventsource',
  'htmlfile',
  'iframe-htmlfile',
  'xhr-polling',
  'iframe-xhr-polling',
  'jsonp-polling',
];

// (origin kind, transport) pairs that sockjs-client 1.6.1 itself refuses, and why.
export const NOT_PERMITTED = {
  'cross-origin': {
    htmlfile:
      'sockjs-client enables htmlfile only when info.sameOrigin (lib/transport/htmlfile.js); ' +
      'from another origin it is reached through iframe-htmlfile instead',
  },
};

// The route each transport receives on.
export const RECEIVING_ROUTE = {
  websocket: 'websocket',
  'xhr-streaming': 'xhr_streaming',
  eventsource: 'eventsource',
  'iframe-eventsource': 'eventsource',
  htmlfile: 'htmlfile',
  'iframe-htmlfile': 'htmlfile',
  'xhr-polling': 'xhr',
  'iframe-xhr-polling': 'xhr',
  'jsonp-polling': 'jsonp',
};
export const STREAMING = new Set(['xhr_streaming', 'eventsource', 'htmlfile']);
const RECEIVING_ROUTE_RE = /\/[^/]+\/[^/]+\/(xhr_streaming|eventsource|htmlfile|xhr|jsonp)$/; // HTTP ones

export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_BIN`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

// Collects the page's errors and warnings, and the receiving requests on SockJS session
// routes (from the page and its iframes), by route name.
export function watchPage(page) {
  const problems = [];
  const receiving = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('request', (r) => {
    const m = RECEIVING_ROUTE_RE.exec(new URL(r.url()).pathname);
    if (m) receiving.push(m[1]);
  });
  page.on('websocket', (ws) => {
    if (/\/[^/]+\/[^/]+\/websocket$/.test(new URL(ws.url()).pathname)) receiving.push('websocket');
  });
  page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  return { problems, receiving };
}

// Every receiving request went to the forced transport's route. On streaming transports the
// 70 KiB echo passes /echo's response_limit (4096), so the response must have ended and the
// client reconnected at least once (spec §5.11).
export function assertReceivingRequests(transport, receiving, diagnostics) {
  const route = RECEIVING_ROUTE[transport];
  assert.ok(receiving.length >= 1, `no ${route} request seen\n${diagnostics()}`);
  assert.ok(
    receiving.every((r) => r === route),
    `receiving requests other than ${route}: ${receiving.join(' ')}\n${diagnostics()}`,
  );
  if (STREAMING.has(route)) {
    assert.ok(
      receiving.length >= 2,
      `expected the ${route} response to end at response_limit and the client to reconnect; ` +
        `saw ${receiving.length} request(s)\n${diagnostics()}`,
    );
  }
}
