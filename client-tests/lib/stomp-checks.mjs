// Assertions on the results of page/stomp-scenario.mjs, shared by the Node and browser tests.
import assert from 'node:assert/strict';
import {
  FROM_ALICE,
  FROM_BOB,
  NOTIFY_SUBSCRIBED,
  TOPIC_BODIES,
  utf8Length,
} from '../page/stomp-scenario.mjs';

function context(result, extra) {
  const conns = Object.entries(result.conns)
    .map(([name, c]) => `    ${name}: ${JSON.stringify(c)}`)
    .join('\n');
  return (
    `\n  library: ${result.lib} ${result.label}\n  step: ${result.step}\n  error: ${result.error}` +
    `\n  connections:\n${conns || '    (none)'}` +
    `\n  disconnects: ${JSON.stringify(result.disconnects)}` +
    `\n  client log (frames and events):\n    ${result.log.join('\n    ')}` +
    (extra ? `\n${extra()}` : '')
  );
}

// expect: {
//   carrier:   the SockJS transport name, or `ws subprotocol "v12.stomp"` for raw WebSocket
//   version:   the STOMP version CONNECTED must carry
//   disconnectReceipt: whether the library waits for the DISCONNECT receipt
//   close:     the close event expected after disconnect (deepEqual), or a function(closeEvent)
// }
export function assertStompScenario(result, expect, extra) {
  const ctx = () => context(result, extra);
  assert.equal(result.error, null, `STOMP scenario failed: ${result.error}${ctx()}`);

  const names = ['alice#1', 'alice#2', 'bob'];
  for (const name of names) {
    const c = result.conns[name];
    assert.ok(c, `${name} missing${ctx()}`);
    assert.equal(c.carrier, expect.carrier, `${name}: carrier in use differs${ctx()}`);
    assert.equal(c.version, expect.version, `${name}: CONNECTED version${ctx()}`);
    assert.equal(c.userName, name === 'bob' ? 'bob' : 'alice', `${name}: CONNECTED user-name${ctx()}`);
    assert.deepEqual(c.errors, [], `${name}: errors${ctx()}`);
  }

  // Three topic messages: once each, in order, exact bodies and headers.
  const a1 = result.conns['alice#1'];
  const news = a1.inbox.filter((m) => m.subscription === 'news');
  assert.deepEqual(
    news.map((m) => m.body),
    TOPIC_BODIES,
    `topic messages differ (each once, in order)${ctx()}`,
  );
  for (const m of news) {
    assert.equal(m.destination, result.topic, `topic MESSAGE destination${ctx()}`);
    assert.ok(/^[A-Za-z0-9_-]+$/.test(m.messageId || ''), `message-id ${m.messageId} not a token${ctx()}`);
    assert.equal(m.contentLength, utf8Length(m.body), `content-length must be the body's UTF-8 length${ctx()}`);
  }
  assert.equal(new Set(news.map((m) => m.messageId)).size, 3, `message-ids must differ${ctx()}`);

  // User destinations.
  const notify = (name) => result.conns[name].inbox.filter((m) => m.subscription === 'notify');
  assert.deepEqual(
    notify('alice#1').map((m) => m.body),
    [FROM_BOB, FROM_ALICE],
    `alice#1 must get bob's message, then her own${ctx()}`,
  );
  assert.deepEqual(
    notify('alice#2').map((m) => m.body),
    [FROM_BOB],
    `alice#2 must get bob's message only (alice#1's own send reaches only alice#1, spec §7.5)${ctx()}`,
  );
  assert.deepEqual(notify('bob').map((m) => m.body), [], `bob must get nothing on /user/queue/notify${ctx()}`);
  for (const name of ['alice#1', 'alice#2']) {
    for (const m of notify(name)) {
      assert.equal(m.destination, NOTIFY_SUBSCRIBED, `${name}: user MESSAGE destination must be rewritten${ctx()}`);
    }
  }
  assert.equal(
    notify('alice#1')[0].messageId,
    notify('alice#2')[0].messageId,
    `both copies of bob's message must carry the same message-id (spec §8.1)${ctx()}`,
  );
  for (const name of names) {
    const other = result.conns[name].inbox.filter((m) => m.subscription !== 'news' && m.subscription !== 'notify');
    assert.deepEqual(other, [], `${name}: MESSAGE on an unknown subscription${ctx()}`);
    for (const r of ['sub-notify', ...(name === 'alice#1' ? ['sub-news'] : [])]) {
      assert.equal(
        result.conns[name].receipts.filter((x) => x === r).length,
        1,
        `${name}: RECEIPT ${r} exactly once${ctx()}`,
      );
    }
  }

  // Disconnect.
  for (const name of names) {
    const d = result.disconnects[name];
    assert.ok(d, `${name}: no disconnect result${ctx()}`);
    if (expect.disconnectReceipt) {
      assert.ok(d.receipt, `${name}: DISCONNECT receipt not received${ctx()}`);
    }
    if (typeof expect.close === 'function') expect.close(d.close, `${name}${ctx()}`);
    else assert.deepEqual(d.close, expect.close, `${name}: close event after DISCONNECT${ctx()}`);
  }
}

export const SOCKJS_NORMAL_CLOSE = { code: 1000, reason: 'Normal closure', wasClean: true };
