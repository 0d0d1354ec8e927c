// Assertions on the results of page/scenario.mjs, shared by the Node and browser tests.
import assert from 'node:assert/strict';
import { compareEchoes, MESSAGES } from '../page/scenario.mjs';

function context(result, extra) {
  return (
    `\n  url: ${result.url}\n  forced transport: ${result.forced}\n  transport used: ${result.transport}` +
    `\n  close: ${JSON.stringify(result.close)}\n  error: ${result.error}` +
    (result.log ? `\n  client log:\n    ${result.log.join('\n    ')}` : '') +
    (extra ? `\n${extra()}` : '')
  );
}

// extra: optional function returning more diagnostics (gateway log tail, page errors).
export function assertEchoed(result, transport, extra) {
  const ctx = () => context(result, extra);
  assert.equal(result.error, null, `client scenario failed: ${result.error}${ctx()}`);
  assert.ok(result.opened, `connection never opened${ctx()}`);
  assert.equal(result.transport, transport, `transport in use differs from the forced one${ctx()}`);
  const diff = compareEchoes(MESSAGES, result.received);
  assert.equal(diff, null, `echoes wrong: ${diff}${ctx()}`);
  assert.equal(result.phase, 'closing', `connection closed before the client closed it${ctx()}`);
  assert.deepEqual(
    result.close,
    { code: 1000, reason: 'Normal closure', wasClean: true },
    `unexpected close event${ctx()}`,
  );
}

export function assertServerClosed(result, transport, extra) {
  const ctx = () => context(result, extra);
  assert.equal(result.error, null, `client scenario failed: ${result.error}${ctx()}`);
  assert.ok(result.opened, `connection never opened${ctx()}`);
  assert.equal(result.transport, transport, `transport in use differs from the forced one${ctx()}`);
  assert.equal(result.messages, 0, `unexpected messages before the close${ctx()}`);
  assert.deepEqual(
    result.close,
    { code: 3000, reason: 'Go away!', wasClean: true },
    `unexpected close event${ctx()}`,
  );
}

// sockjs-client refused the forced transport without opening (it is not enabled there).
export function assertNotPermitted(result, extra) {
  const ctx = () => context(result, extra);
  assert.equal(result.error, null, `client scenario failed: ${result.error}${ctx()}`);
  assert.equal(result.opened, false, `connection opened${ctx()}`);
  assert.deepEqual(
    result.close,
    { code: 2000, reason: 'All transports failed', wasClean: false },
    `unexpected close event${ctx()}`,
  );
}
