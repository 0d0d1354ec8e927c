// Fault test: the three-node example behind nginx, 200 users each with a durable inbox
// (/user/queue/notify, ack:client-individual, ACK after each message), a publisher sending
// 2,000 messages to them (ten each) through node 1; halfway through, node 3 is killed with
// SIGKILL. Its users' clients (@stomp/stompjs over sockjs-client, reconnecting) come back
// through nginx to the surviving nodes, subscribe again and get what they missed from the
// inbox. Printed: sent, delivered, lost (must be 0), duplicates (allowed only with the same
// message-id).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { WebSocket as WsWebSocket } from 'ws';
import { startCluster } from '../lib/cluster.mjs';

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

const USERS = 200;
const MESSAGES = 2000;
const DEADLINE_MS = 90_000;

let cluster;
before(async () => {
  cluster = await startCluster();
});
after(async () => {
  if (cluster) await cluster.stop();
  http.globalAgent.destroy();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One user's client: reconnects by itself and subscribes again on every CONNECTED.
function user(i, origin) {
  const name = `fault-user${i}`;
  const state = { name, received: [], connects: 0, subscribed: false };
  const client = new StompJs.Client({
    webSocketFactory: () => new SockJS(`${origin}/stomp`, null, { transports: [i % 2 ? 'websocket' : 'xhr-streaming'] }),
    connectHeaders: { uid: name },
    reconnectDelay: 300,
    // Heart-beats are how a client learns that the node behind its session died: a
    // streaming response cut by nginx does not always surface as a close.
    heartbeatIncoming: 1000,
    heartbeatOutgoing: 1000,
    debug: () => {},
    onConnect: () => {
      state.connects += 1;
      client.subscribe(
        '/user/queue/notify',
        (m) => {
          state.received.push({ id: m.headers['message-id'], body: m.body });
          m.ack();
        },
        { ack: 'client-individual', receipt: `sub-${state.connects}` },
      );
    },
    onUnhandledReceipt: () => {
      state.subscribed = true;
    },
  });
  client.activate();
  state.client = client;
  return state;
}

test('kill -9 one of three nodes halfway: no inbox message is lost', { timeout: DEADLINE_MS + 60_000 }, async () => {
  const users = Array.from({ length: USERS }, (_, i) => user(i, cluster.origin));
  const start = Date.now();
  while (!users.every((u) => u.subscribed)) {
    assert.ok(Date.now() - start < 30_000, 'users did not all subscribe');
    await sleep(50);
  }
  // The publisher is a backend on node 1 (not through nginx), with a receipt per message: a
  // message counts as sent once node 1 has taken it.
  const publisher = new StompJs.Client({
    webSocketFactory: () => new SockJS(`${cluster.nodeOrigin(1)}/stomp`, null, { transports: ['websocket'] }),
    connectHeaders: { uid: 'fault-publisher' },
    reconnectDelay: 0,
    debug: () => {},
  });
  const receipts = new Map();
  publisher.onUnhandledReceipt = (f) => receipts.get(f.headers['receipt-id'])?.();
  await new Promise((resolve) => {
    publisher.onConnect = resolve;
    publisher.activate();
  });
  const sent = [];
  for (let n = 0; n < MESSAGES; n += 1) {
    if (n === MESSAGES / 2) cluster.kill(3);
    const to = `fault-user${n % USERS}`;
    const receipt = `m${n}`;
    const done = new Promise((r) => receipts.set(receipt, r));
    publisher.publish({ destination: `/user/${to}/queue/notify`, body: `msg-${n}`, headers: { receipt } });
    if (n % 50 === 49) await done;
    sent.push({ to, body: `msg-${n}` });
    if (n % 10 === 0) await sleep(2);
  }
  const expected = new Map(users.map((u) => [u.name, new Set()]));
  for (const s of sent) expected.get(s.to).add(s.body);
  const complete = () => users.every((u) => {
    const got = new Set(u.received.map((r) => r.body));
    return [...expected.get(u.name)].every((b) => got.has(b));
  });
  while (!complete() && Date.now() - start < DEADLINE_MS) await sleep(100);
  await sleep(500);

  let delivered = 0;
  let duplicates = 0;
  let badDuplicates = 0;
  let reconnected = 0;
  for (const u of users) {
    const byBody = new Map();
    for (const r of u.received) {
      // Every copy after the first of a body is a duplicate; each must carry the same id.
      if (byBody.has(r.body)) duplicates += 1;
      else byBody.set(r.body, new Set());
      byBody.get(r.body).add(r.id);
    }
    for (const ids of byBody.values()) if (ids.size > 1) badDuplicates += 1;
    for (const b of expected.get(u.name)) if (byBody.has(b)) delivered += 1;
    if (u.connects > 1) reconnected += 1;
  }
  const lost = sent.length - delivered;
  const missing = users
    .map((u) => {
      const got = new Set(u.received.map((r) => r.body));
      const gone = [...expected.get(u.name)].filter((b) => !got.has(b));
      return gone.length ? `${u.name} (connects ${u.connects}): ${gone.join(' ')}` : null;
    })
    .filter(Boolean);
  console.log(
    `cluster fault test: sent ${sent.length}, delivered ${delivered}, lost ${lost}, ` +
      `duplicates ${duplicates} (with another message-id: ${badDuplicates}), ` +
      `users reconnected after the kill ${reconnected} of ${USERS}`,
  );
  for (const u of users) u.client.deactivate();
  await publisher.deactivate();
  assert.ok(reconnected > 0, 'no user was on the killed node');
  assert.equal(lost, 0, `lost messages:\n  ${missing.slice(0, 10).join('\n  ')}\n${cluster.logTail(5)}`);
  assert.equal(badDuplicates, 0, 'a duplicate carried another message-id');
});
