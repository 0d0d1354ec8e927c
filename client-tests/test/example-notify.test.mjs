// The notification example (examples/notify) end to end, against a fresh gateway started with
// the example's own gateway.toml: two `client.mjs` sessions of alice (websocket and
// xhr-streaming) and one of bob, then `send.mjs`; both of alice's clients must print the
// private notification and the news, bob's only the news.
//
// The example's scripts are copied into a temporary directory whose node_modules is a link to
// this package's node_modules (the same pinned @stomp/stompjs and sockjs-client that
// examples/notify/package.json names), so the test needs no install in examples/notify.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { PACKAGE_DIR, startGateway } from '../lib/gateway.mjs';

const EXAMPLE_DIR = path.resolve(PACKAGE_DIR, '..', 'examples', 'notify');
const WAIT_MS = 10_000;

let gw;
let dir;
const procs = [];

before(async () => {
  gw = await startGateway({ configFile: path.join(EXAMPLE_DIR, 'gateway.toml') });
  dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-example-notify-'));
  for (const f of ['client.mjs', 'send.mjs']) copyFileSync(path.join(EXAMPLE_DIR, f), path.join(dir, f));
  symlinkSync(path.join(PACKAGE_DIR, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
});

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  if (gw) await gw.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// Runs `node <script> ...args` in the temporary directory and collects its output.
function run(script, args) {
  const child = spawn(process.execPath, [script, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(child);
  const p = { child, out: '', err: '', exited: null };
  child.stdout.setEncoding('utf8').on('data', (d) => (p.out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (p.err += d));
  p.done = new Promise((resolve) => child.on('exit', (code, signal) => resolve((p.exited = { code, signal }))));
  return p;
}

async function until(pred, what, diagnostics) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > WAIT_MS) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}\n${diagnostics()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function withTimeout(promise, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms: ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

test('examples/notify: client.mjs prints the user notification and the news that send.mjs sends', { timeout: 45_000 }, async () => {
  const url = `${gw.origin}/stomp`;
  const clients = {
    'alice (websocket)': run('client.mjs', ['--url', url, '--uid', 'alice', '--transport', 'websocket']),
    'alice (xhr-streaming)': run('client.mjs', ['--url', url, '--uid', 'alice', '--transport', 'xhr-streaming']),
    'bob (default transports)': run('client.mjs', ['--url', url, '--uid', 'bob']),
  };
  let sender = null;
  const diagnostics = () =>
    Object.entries({ ...clients, ...(sender ? { 'send.mjs': sender } : {}) })
      .map(([name, p]) => `  ${name}: exit ${JSON.stringify(p.exited)}\n    stdout: ${JSON.stringify(p.out)}\n    stderr: ${JSON.stringify(p.err)}`)
      .join('\n') + `\n  gateway output (tail):\n${gw.logTail(30)}`;

  for (const [name, p] of Object.entries(clients)) {
    await until(() => p.out.includes('subscribed to /user/queue/notify and /topic/news'), `${name}: subscribed`, diagnostics);
  }
  assert.match(clients['alice (websocket)'].out, /^connected as alice \(STOMP 1\.2 over websocket\)$/m, diagnostics());
  assert.match(clients['alice (xhr-streaming)'].out, /^connected as alice \(STOMP 1\.2 over xhr-streaming\)$/m, diagnostics());
  assert.match(clients['bob (default transports)'].out, /^connected as bob \(STOMP 1\.2 over websocket\)$/m, diagnostics());

  sender = run('send.mjs', ['--url', url]);
  const sent = await withTimeout(sender.done, 'send.mjs to exit');
  assert.deepEqual(sent, { code: 0, signal: null }, `send.mjs failed\n${diagnostics()}`);
  assert.equal(
    sender.out,
    'sent to /user/alice/queue/notify: Your order #42 has shipped\nsent to /topic/news: Sale starts at noon\n',
    diagnostics(),
  );

  const NOTIFY = '[/user/queue/notify] Your order #42 has shipped\n';
  const NEWS = '[/topic/news] Sale starts at noon\n';
  for (const [name, p] of Object.entries(clients)) {
    await until(() => p.out.includes(NEWS), `${name}: the news`, diagnostics);
  }
  await until(() => clients['alice (websocket)'].out.includes(NOTIFY) && clients['alice (xhr-streaming)'].out.includes(NOTIFY), "alice's notification", diagnostics);
  await new Promise((r) => setTimeout(r, 300)); // nothing more may arrive

  for (const p of Object.values(clients)) p.child.kill('SIGINT');
  for (const [name, p] of Object.entries(clients)) {
    const e = await withTimeout(p.done, `${name} to exit after SIGINT`);
    assert.deepEqual(e, { code: 0, signal: null }, `${name} did not exit cleanly\n${diagnostics()}`);
  }
  for (const [name, p] of Object.entries(clients)) {
    const lines = p.out.split('\n').filter((l) => l.startsWith('['));
    const expected = name.startsWith('alice') ? [NOTIFY.trim(), NEWS.trim()] : [NEWS.trim()];
    // The two sends are received in the order they were sent (one sender, one connection each).
    assert.deepEqual(lines, expected, `${name}: messages printed\n${diagnostics()}`);
    assert.ok(p.out.endsWith('disconnected\n'), `${name}: no "disconnected" line\n${diagnostics()}`);
    assert.equal(p.err, '', `${name}: stderr\n${diagnostics()}`);
  }
});
