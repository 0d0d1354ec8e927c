// The RabbitMQ Web-STOMP scenario of the proxy tests, shared by Node and the browser page:
// @stomp/stompjs reaches RabbitMQ through the gateway's `app = "proxy"` service, so every
// STOMP frame below travels SockJS → gateway → one upstream WebSocket per session → RabbitMQ.
// Plain ES module (no Node-only or browser-only API).
import { makeLog, TOPIC_BODIES, withTimeout } from './stomp-scenario.mjs';

const WAIT_MS = 8000; // any single wait
const GRACE_MS = 300; // quiet period for duplicates at the end
const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

export const RABBIT_CONNECT = { login: 'guest', passcode: 'guest', host: '/' };
export const QUEUED_BODY = 'queued: caf\u00e9 </script> 100%';

// 1. `first` and `second` connect as guest (CONNECTED from RabbitMQ, STOMP 1.2);
// 2. both subscribe to `topic` with receipts; `first` sends the three TOPIC_BODIES, which
//    both must receive once each, in order, with exact bodies;
// 3. `second` subscribes to `queue` (receipt), `first` sends QUEUED_BODY there: `second`
//    receives it once;
// 4. 300 ms of quiet, then both disconnect (with receipts).
// Resolves with a plain, serialisable result; never rejects.
export async function runRabbitScenario(adapter, { topic, queue, label = '' } = {}) {
  const t0 = now();
  const result = { lib: adapter.lib, label, topic, queue, error: null, step: 'connect first', conns: {}, disconnects: {}, log: [] };
  const conns = {};
  const started = [];
  const logs = {};
  const open = async (name) => {
    const { log, note } = makeLog(t0, name);
    logs[name] = log;
    const c = await withTimeout(adapter.connect(RABBIT_CONNECT, note, (c) => started.push(c)), WAIT_MS, `${name}: CONNECTED`);
    conns[name] = c;
    return c;
  };
  try {
    const first = await open('first');
    result.step = 'connect second';
    const second = await open('second');
    result.step = 'subscribe to the topic';
    await Promise.all([first.subscribe(topic, 't1'), second.subscribe(topic, 't2')]);
    result.step = 'three topic messages';
    for (const body of TOPIC_BODIES) first.send(topic, body, { 'content-type': 'text/plain' });
    await first.waitFor(() => first.messagesOn('t1').length >= TOPIC_BODIES.length, 'first: the topic messages');
    await second.waitFor(() => second.messagesOn('t2').length >= TOPIC_BODIES.length, 'second: the topic messages');
    result.step = 'a queue message';
    await second.subscribe(queue, 'q');
    first.send(queue, QUEUED_BODY);
    await second.waitFor(() => second.messagesOn('q').length >= 1, 'second: the queue message');
    result.step = 'quiet period';
    await new Promise((r) => setTimeout(r, GRACE_MS));
    result.step = 'disconnect';
    await Promise.all(
      Object.entries(conns).map(async ([name, c]) => {
        result.disconnects[name] = await c.disconnect();
      }),
    );
    result.step = 'done';
  } catch (e) {
    result.error = `${result.step}: ${e && e.message}`;
    for (const c of started) {
      try {
        if (c.client && c.client.deactivate) Promise.resolve(c.client.deactivate()).catch(() => {});
        else if (c.socket) c.socket.close();
      } catch {
        /* ignore */
      }
    }
  }
  for (const [name, c] of Object.entries(conns)) result.conns[name] = c.summary();
  result.log = Object.values(logs)
    .flat()
    .sort((a, b) => Number(a.slice(1).split('ms')[0]) - Number(b.slice(1).split('ms')[0]));
  return result;
}
