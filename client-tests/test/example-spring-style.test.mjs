// The Spring-style example (examples/spring-style) end to end: its own backend.mjs on a free
// port, a gateway started with the example's gateway.toml (backend URLs pointed at that port),
// and client.mjs sessions of alice (websocket) and bob (xhr-streaming) typing on stdin: the
// chat through /app/chat, a private reply, the @SubscribeMapping snapshot, the token hook,
// an error on /user/queue/errors that keeps the session open, and (when the gateway has the
// admin API) a push to alice with a plain curl to /api/publish.
//
// The scripts are copied into a temporary directory whose node_modules links to this package's
// (the same pinned @stomp/stompjs and sockjs-client the example's package.json names).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { PACKAGE_DIR, startGateway } from '../lib/gateway.mjs';

const EXAMPLE_DIR = path.resolve(PACKAGE_DIR, '..', 'examples', 'spring-style');
const WAIT_MS = 10_000;

let gw;
let dir;
let backend;
let adminOrigin = null;
const procs = [];

// Runs `node <script> ...args` in the temporary directory and collects its output.
function run(script, args) {
  const child = spawn(process.execPath, [script, ...args], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
  procs.push(child);
  const p = { child, out: '', err: '', exited: null };
  child.stdout.setEncoding('utf8').on('data', (d) => (p.out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (p.err += d));
  p.done = new Promise((resolve) => child.on('exit', (code, signal) => resolve((p.exited = { code, signal }))));
  p.type = (line) => child.stdin.write(`${line}\n`);
  return p;
}

const diagnostics = (named) => () =>
  Object.entries(named)
    .map(([name, p]) => `  ${name}: exit ${JSON.stringify(p.exited)}\n    stdout: ${JSON.stringify(p.out)}\n    stderr: ${JSON.stringify(p.err)}`)
    .join('\n') + `\n  gateway output (tail):\n${gw ? gw.logTail(30) : ''}`;

// `promise`, or null after WAIT_MS (the timer is cleared, so it never holds the process).
function within(promise) {
  let t;
  return Promise.race([promise, new Promise((r) => (t = setTimeout(() => r(null), WAIT_MS)))]).finally(() => clearTimeout(t));
}

async function until(pred, what, diag) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > WAIT_MS) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}\n${diag()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-example-spring-'));
  for (const f of ['backend.mjs', 'client.mjs']) copyFileSync(path.join(EXAMPLE_DIR, f), path.join(dir, f));
  symlinkSync(path.join(PACKAGE_DIR, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  backend = run('backend.mjs', ['--port', '0']);
  await until(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(backend.out), 'the backend', diagnostics({ backend }));
  const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(backend.out)[1];
  const toml = readFileSync(path.join(EXAMPLE_DIR, 'gateway.toml'), 'utf8').replaceAll('127.0.0.1:9000', `127.0.0.1:${port}`);
  // The example's admin listener (127.0.0.1:9090 in the file) moves to a free port here.
  const withAdmin = path.join(dir, 'gateway-admin.toml');
  writeFileSync(withAdmin, toml.replace('listen = "127.0.0.1:9090"', 'listen = "127.0.0.1:0"'));
  gw = await startGateway({ configFile: withAdmin });
  const m = /admin listener at http:\/\/(127\.0\.0\.1:\d+)/.exec(gw.logTail(300));
  assert.ok(m, `the admin listener's address in the log: ${gw.logTail(300)}`);
  adminOrigin = `http://${m[1]}`;
});

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  if (gw) await gw.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('examples/spring-style: chat, private reply, @SubscribeMapping, token hook, error queue, admin push', { timeout: 60_000 }, async () => {
  const url = `${gw.origin}/stomp`;
  const alice = run('client.mjs', ['--url', url, '--token', 'alice-token', '--transport', 'websocket']);
  const bob = run('client.mjs', ['--url', url, '--token', 'bob-token', '--transport', 'xhr-streaming']);
  const diag = diagnostics({ alice, bob, backend });
  for (const [name, p] of [['alice', alice], ['bob', bob]]) {
    await until(() => p.out.includes('\nready\n'), `${name}: ready`, diag);
  }
  assert.match(alice.out, /^connected as alice \(STOMP 1\.2 over websocket\)$/m, diag());
  assert.match(bob.out, /^connected as bob \(STOMP 1\.2 over xhr-streaming\)$/m, diag());
  assert.match(alice.out, /^\[init\] \{"user":"alice","recent":\[\]\}$/m, diag());

  // SEND /app/chat -> backend -> /topic/chat for everyone.
  bob.type('hello alice');
  const CHAT = '[/topic/chat] {"from":"bob","text":"hello alice"}\n';
  await until(() => alice.out.includes(CHAT) && bob.out.includes(CHAT), 'the chat message on both', diag);

  // @SendToUser: only alice sees the answer to her question.
  alice.type('/private when is the meeting?');
  const REPLY = '[/user/queue/reply] only you see this: when is the meeting?\n';
  await until(() => alice.out.includes(REPLY), "alice's private reply", diag);

  // The backend refuses an empty chat message (400): bob gets it on /user/queue/errors and
  // stays connected.
  bob.type('');
  await until(() => bob.out.includes('[/user/queue/errors] ') && bob.out.includes('empty chat message'), "bob's error message", diag);
  bob.type('still here');
  await until(() => alice.out.includes('[/topic/chat] {"from":"bob","text":"still here"}'), 'the chat after the error', diag);

  // A bad token is refused by the connect hook.
  const mallory = run('client.mjs', ['--url', url, '--token', 'stolen']);
  const refused = await within(mallory.done);
  assert.deepEqual(refused, { code: 1, signal: null }, diagnostics({ mallory })());
  assert.match(mallory.err, /STOMP error: Authentication failed: invalid token/, diagnostics({ mallory })());

  // @SubscribeMapping keeps no subscription but sees the state: a second alice session gets
  // the recent chat in its snapshot.
  const alice2 = run('client.mjs', ['--url', url, '--token', 'alice-token']);
  await until(() => alice2.out.includes('\nready\n'), 'alice#2: ready', diagnostics({ alice2 }));
  assert.match(alice2.out, /\[init\] \{"user":"alice","recent":\[\{"from":"bob","text":"hello alice"\},\{"from":"bob","text":"still here"\}\]\}/, diagnostics({ alice2 }));

  // Server push to one user from a plain curl (the admin API's /api/publish).
  {
    const curl = spawn('curl', ['-sS', '-X', 'POST', `${adminOrigin}/api/publish`, '-H', 'content-type: application/json',
      '-d', '{"user":"alice","destination":"/queue/notify","body":"Your order #42 has shipped"}']);
    let curlOut = '';
    curl.stdout.on('data', (d) => (curlOut += d));
    const code = await new Promise((r) => curl.on('exit', r));
    assert.equal(code, 0, curlOut);
    assert.match(curlOut, /"delivered":\s*2/, curlOut);
    const NOTIFY = '[/user/queue/notify] Your order #42 has shipped\n';
    await until(() => alice.out.includes(NOTIFY) && alice2.out.includes(NOTIFY), "alice's push", diag);
    assert.ok(!bob.out.includes(NOTIFY), diag());
  }

  for (const p of [alice, bob, alice2]) p.child.kill('SIGINT');
  for (const [name, p] of [['alice', alice], ['bob', bob], ['alice#2', alice2]]) {
    const e = await within(p.done);
    assert.deepEqual(e, { code: 0, signal: null }, `${name} did not exit cleanly\n${diag()}`);
    assert.ok(p.out.endsWith('disconnected\n'), `${name}: no "disconnected" line\n${diag()}`);
    assert.equal(p.err, '', `${name}: stderr\n${diag()}`);
  }
  assert.ok(!alice.out.includes('[/user/queue/errors]'), 'only bob made an error');
  assert.ok(!bob.out.includes('[/user/queue/reply]'), "bob never sees alice's private reply");
  await until(() => (backend.out.match(/ended \(disconnect\)/g) || []).length >= 3, 'three disconnect notices', diag);
});
