// Assertions on the proxy tests' results: the RabbitMQ scenario (page/proxy-scenario.mjs)
// and a SockJS close event.
import assert from 'node:assert/strict';
import { QUEUED_BODY } from '../page/proxy-scenario.mjs';
import { TOPIC_BODIES, utf8Length } from '../page/stomp-scenario.mjs';

function context(result, extra) {
  const conns = Object.entries(result.conns)
    .map(([name, c]) => `    ${name}: ${JSON.stringify(c)}`)
    .join('\n');
  return (
    `\n  ${result.lib} ${result.label}\n  step: ${result.step}\n  error: ${result.error}` +
    `\n  connections:\n${conns || '    (none)'}\n  disconnects: ${JSON.stringify(result.disconnects)}` +
    `\n  client log:\n    ${result.log.join('\n    ')}` +
    (extra ? `\n${extra()}` : '')
  );
}

// expect: {
//   carrier:    the SockJS transport, or `ws subprotocol "v12.stomp"` for raw WebSocket
//   disconnect: what the same scenario got from RabbitMQ directly ({receipt, close: {code,
//               reason}}): RabbitMQ 3.10 answers DISCONNECT by closing with 1000 "STOMP died"
//               and no RECEIPT, and the proxy must pass exactly that on
// }
export function assertRabbitScenario(result, expect, extra) {
  const ctx = () => context(result, extra);
  assert.equal(result.error, null, `RabbitMQ scenario failed: ${result.error}${ctx()}`);
  for (const [name, sub] of [['first', 't1'], ['second', 't2']]) {
    const c = result.conns[name];
    assert.ok(c, `${name} missing${ctx()}`);
    assert.equal(c.carrier, expect.carrier, `${name}: carrier${ctx()}`);
    assert.equal(c.version, '1.2', `${name}: CONNECTED version${ctx()}`);
    assert.match(String(c.connectedHeaders.server), /^RabbitMQ\//, `${name}: CONNECTED comes from RabbitMQ${ctx()}`);
    const topic = c.inbox.filter((m) => m.subscription === sub);
    assert.deepEqual(topic.map((m) => m.body), TOPIC_BODIES, `${name}: topic messages, once each, in order${ctx()}`);
    for (const m of topic) {
      assert.equal(m.destination, result.topic, `${name}: destination${ctx()}`);
      assert.equal(m.contentLength, utf8Length(m.body), `${name}: content-length${ctx()}`);
    }
    assert.deepEqual(c.receipts.filter((r) => r.startsWith('sub-')).sort(), name === 'first' ? ['sub-t1'] : ['sub-q', 'sub-t2'], `${name}: receipts${ctx()}`);
  }
  const queued = result.conns.second.inbox.filter((m) => m.subscription === 'q');
  assert.deepEqual(queued.map((m) => m.body), [QUEUED_BODY], `the queue message, once${ctx()}`);
  assert.equal(queued[0].destination, result.queue, `queue destination${ctx()}`);
  for (const name of ['first', 'second']) {
    const d = result.disconnects[name];
    assert.ok(d, `${name}: no disconnect${ctx()}`);
    assert.equal(Boolean(d.receipt), expect.disconnect.receipt, `${name}: DISCONNECT receipt as from RabbitMQ directly${ctx()}`);
    assert.deepEqual(d.close, { ...expect.disconnect.close, wasClean: true }, `${name}: close as from RabbitMQ directly${ctx()}`);
  }
}

// What RabbitMQ itself does at the end of the scenario, from a run straight to it.
export function directDisconnect(direct) {
  assert.equal(direct.error, null, `the scenario fails against RabbitMQ directly: ${direct.error}${context(direct)}`);
  const d = direct.disconnects.first;
  return { receipt: Boolean(d.receipt), close: { code: d.close.code, reason: d.close.reason } };
}

// The close a SockJS client sees, exactly.
export function assertClose(close, expected, where) {
  assert.deepEqual(close, { ...expected, wasClean: true }, `close event: ${where}`);
}
