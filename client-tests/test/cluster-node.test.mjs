// The three-node example behind nginx (examples/cluster: a private Redis, three gateway
// nodes, nginx hashing the SockJS session id) with @stomp/stompjs over sockjs-client under
// Node: the shared STOMP scenario over each Node transport, a topic message crossing from one
// node to subscribers on the other two, and user destinations across nodes.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { WebSocket as WsWebSocket } from 'ws';
import { redisCli, startCluster } from '../lib/cluster.mjs';
import { assertStompScenario, SOCKJS_NORMAL_CLOSE } from '../lib/stomp-checks.mjs';
import { runStompScenario, stompjs7Adapter } from '../page/stomp-scenario.mjs';

const NODE_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const TEST_TIMEOUT_MS = 60_000;
const PREFIX = 'sockjs-gateway-example:';

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

let cluster;
const logs = () => `  cluster logs (tail):\n${cluster ? cluster.logTail() : '(not started)'}`;

before(async () => {
  cluster = await startCluster();
});

after(async () => {
  if (cluster) await cluster.stop();
  http.globalAgent.destroy();
});

const adapter = (transport) =>
  stompjs7Adapter(StompJs, {
    webSocketFactory: () => new SockJS(`${cluster.origin}/stomp`, null, { transports: [transport] }),
  });

const noteNothing = () => {};

async function numsub(channel) {
  const out = await redisCli(cluster.redisUrl, 'PUBSUB', 'NUMSUB', channel);
  return Number(out.split('\n')[1]);
}

// Open subscribers of `destination` through nginx until all three nodes have one (every node
// is then subscribed to the channel in Redis); returns them.
async function subscribersOnEveryNode(transport, destination, users) {
  const conns = [];
  for (let i = 0; i < 30 && (await numsub(PREFIX + destination)) < 3; i += 1) {
    const c = await adapter(transport).connect({ uid: users(i) }, noteNothing);
    await c.subscribe(destination, 'sub');
    conns.push(c);
    // The Redis SUBSCRIBE follows the STOMP RECEIPT by a moment.
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && (await numsub(PREFIX + destination)) < Math.min(3, conns.length)) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  assert.equal(await numsub(PREFIX + destination), 3, `subscribers never spread over three nodes\n${logs()}`);
  return conns;
}

describe('@stomp/stompjs through nginx to three nodes, under Node', () => {
  for (const transport of NODE_TRANSPORTS) {
    test(`${transport}: the STOMP scenario through nginx`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const result = await runStompScenario(adapter(transport), {
        topic: `/topic/news.cluster.${transport}`,
        label: `over ${transport} through nginx`,
      });
      assertStompScenario(
        result,
        { carrier: transport, version: '1.2', disconnectReceipt: true, close: SOCKJS_NORMAL_CLOSE },
        logs,
      );
    });

    test(`${transport}: a topic message reaches subscribers on all three nodes once each, in order`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const destination = `/topic/spread.${transport}`;
      const subs = await subscribersOnEveryNode(transport, destination, (i) => `reader${i}`);
      const publisher = await adapter(transport).connect({ uid: 'publisher' }, noteNothing);
      const bodies = ['one', 'two', 'three', 'four', 'five'];
      for (const body of bodies) publisher.send(destination, body);
      for (const s of subs) {
        await s.waitFor(() => s.messagesOn('sub').length >= bodies.length, `five messages on ${destination}`);
      }
      await new Promise((r) => setTimeout(r, 300));
      for (const s of subs) {
        assert.deepEqual(s.messagesOn('sub').map((m) => m.body), bodies, `each once, in order\n${logs()}`);
      }
      for (const c of [...subs, publisher]) await c.disconnect();
    });
  }

  test('user destinations: every session of alice, on whichever node, gets one copy', { timeout: TEST_TIMEOUT_MS }, async () => {
    const alices = [];
    const channel = `${PREFIX}user:alice-multi`;
    for (let i = 0; i < 30 && (await numsub(channel)) < 2; i += 1) {
      const c = await adapter('websocket').connect({ uid: 'alice-multi' }, noteNothing);
      await c.subscribe('/user/queue/notify', 'n');
      alices.push(c);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok((await numsub(channel)) >= 2, `alice's sessions never spread over two nodes\n${logs()}`);
    const bob = await adapter('xhr-streaming').connect({ uid: 'bob' }, noteNothing);
    bob.send('/user/alice-multi/queue/notify', 'for every alice');
    for (const a of alices) await a.waitFor(() => a.messagesOn('n').length >= 1, 'the notification');
    await new Promise((r) => setTimeout(r, 300));
    const ids = new Set();
    for (const a of alices) {
      assert.deepEqual(a.messagesOn('n').map((m) => m.body), ['for every alice']);
      ids.add(a.messagesOn('n')[0].messageId);
    }
    assert.equal(ids.size, 1, 'one message, one id');
    for (const c of [...alices, bob]) await c.disconnect();
  });
});
