// The soak driver of scripts/soak: churns SESSIONS STOMP sessions through a running gateway
// over every SockJS transport the server has (websocket, xhr-streaming, xhr-polling and
// eventsource through sockjs-client; htmlfile and jsonp-polling through the small clients
// below, which speak those transports as a browser's script tags would; raw WebSocket through
// `ws`), with a bounded number open at once. Every session CONNECTs, SUBSCRIBEs to one of
// ROOMS topics, SENDs a message every INTERVAL ms for its lifetime, waits until each of its
// own messages came back through the broker, and DISCONNECTs. Meanwhile the gateway's RSS and
// open file descriptors are read from /proc/PID every SAMPLE seconds; at the end a table and a
// verdict are printed. Exit status 0 when flat and error-free, 1 otherwise.
//
//   node soak.mjs --url http://127.0.0.1:PORT/stomp --pid PID [--log FILE]
//                 [--sessions 5000] [--duration 600] [--lifetime 20] [--max-open 400]
//                 [--interval 2000] [--rooms 20] [--sample 10] [--tolerance 0.10]
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import * as StompJs from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { WebSocket as WsWebSocket } from 'ws';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    pid: { type: 'string' },
    log: { type: 'string' },
    sessions: { type: 'string', default: '5000' },
    duration: { type: 'string', default: '600' },
    lifetime: { type: 'string', default: '20' },
    'max-open': { type: 'string', default: '400' },
    interval: { type: 'string', default: '2000' },
    rooms: { type: 'string', default: '20' },
    sample: { type: 'string', default: '10' },
    tolerance: { type: 'string', default: '0.10' },
  },
});
if (!opt.url || !opt.pid) {
  console.error('usage: node soak.mjs --url http://127.0.0.1:PORT/stomp --pid PID [options]');
  process.exit(2);
}
const BASE = opt.url.replace(/\/$/, '');
const PID = Number(opt.pid);
const SESSIONS = Number(opt.sessions);
const DURATION_S = Number(opt.duration);
const LIFETIME_S = Number(opt.lifetime);
const MAX_OPEN = Number(opt['max-open']);
const INTERVAL_MS = Number(opt.interval);
const ROOMS = Number(opt.rooms);
const SAMPLE_S = Number(opt.sample);
const TOLERANCE = Number(opt.tolerance);
const FD_SLACK = 16; // descriptors: absolute slack on top of the relative tolerance
const CONNECT_TIMEOUT_MS = 20_000;
const ECHO_WAIT_MS = 15_000;
// Nothing runs past this: the launch window, the last lifetimes, and the echo waits.
const HARD_DEADLINE_MS = (DURATION_S + 2 * LIFETIME_S + 60) * 1000;
const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'htmlfile', 'jsonp-polling', 'raw-websocket'];

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket;

// ---- htmlfile and jsonp-polling clients (a WebSocket-like object for @stomp/stompjs) ----

const agent = new http.Agent({ keepAlive: true, maxSockets: 2000 });
let serverSeq = 0;

// HTTP request on the loopback gateway; resolves with {status, body} or streams chunks to
// onChunk. Rejects on network errors.
function request(method, url, { body, contentType, onChunk, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: contentType ? { 'content-type': contentType } : {} }, (res) => {
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (d) => (onChunk ? onChunk(d) : (text += d)));
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// A SockJS session over htmlfile (streaming script chunks) or jsonp (one frame a poll),
// sending with xhr_send / jsonp_send, shaped like a WebSocket: onopen, onmessage({data}),
// onclose({code, reason}), onerror, send(), close(), readyState.
class ScriptTransportSocket {
  constructor(kind) {
    this.kind = kind;
    this.readyState = 0;
    this.protocol = '';
    this.binaryType = 'blob';
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    const server = String(serverSeq++ % 1000).padStart(3, '0');
    const session = `soak${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    this.session = `${BASE}/${server}/${session}`;
    this.callback = `_soak_${kind === 'htmlfile' ? 'h' : 'j'}`;
    this.outbox = [];
    this.sending = false;
    this.receive();
  }

  frame(f) {
    if (this.readyState >= 2) return;
    if (f === 'o') {
      this.readyState = 1;
      this.onopen?.({});
    } else if (f === 'h') {
      // heartbeat
    } else if (f[0] === 'a') {
      for (const m of JSON.parse(f.slice(1))) {
        if (this.readyState !== 1) break;
        this.onmessage?.({ data: m });
      }
    } else if (f[0] === 'c') {
      const [code, reason] = JSON.parse(f.slice(1));
      this.finish(code, reason);
    }
  }

  async receive() {
    while (this.readyState < 2) {
      const url = `${this.session}/${this.kind === 'htmlfile' ? 'htmlfile' : 'jsonp'}?c=${this.callback}`;
      try {
        if (this.kind === 'htmlfile') {
          let buf = '';
          const res = await request('GET', url, {
            onChunk: (d) => {
              buf += d;
              for (;;) {
                const start = buf.indexOf('<script>\np(');
                const end = buf.indexOf(');\n</script>\r\n', start);
                if (start < 0 || end < 0) break;
                this.frame(JSON.parse(buf.slice(start + 11, end)));
                buf = buf.slice(end + 13);
              }
            },
          });
          if (res.status !== 200) throw new Error(`htmlfile answered ${res.status}`);
        } else {
          const res = await request('GET', url);
          if (res.status !== 200) throw new Error(`jsonp answered ${res.status}`);
          const prefix = `/**/${this.callback}(`;
          if (!res.body.startsWith(prefix) || !res.body.endsWith(');\r\n')) throw new Error(`unexpected jsonp body ${res.body.slice(0, 80)}`);
          this.frame(JSON.parse(res.body.slice(prefix.length, -4)));
        }
      } catch (e) {
        if (this.readyState < 2) {
          this.onerror?.({ message: e.message });
          this.finish(1006, e.message);
        }
      }
    }
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.outbox.push(String(data));
    this.flush();
  }

  async flush() {
    if (this.sending || this.outbox.length === 0) return;
    this.sending = true;
    const batch = this.outbox.splice(0);
    const json = JSON.stringify(batch);
    try {
      const res =
        this.kind === 'htmlfile'
          ? await request('POST', `${this.session}/xhr_send`, { body: json, contentType: 'text/plain;charset=UTF-8' })
          : await request('POST', `${this.session}/jsonp_send`, {
              body: `d=${encodeURIComponent(json)}`,
              contentType: 'application/x-www-form-urlencoded',
            });
      if (res.status !== 204 && res.status !== 200) throw new Error(`send answered ${res.status} ${res.body}`);
    } catch (e) {
      if (this.readyState === 1) {
        this.onerror?.({ message: e.message });
        this.finish(1006, e.message);
      }
    }
    this.sending = false;
    this.flush();
  }

  close(code = 1000, reason = 'Normal closure') {
    this.finish(code, reason);
  }

  finish(code, reason) {
    if (this.readyState >= 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
}

function socketFactory(transport) {
  switch (transport) {
    case 'htmlfile':
    case 'jsonp-polling':
      return () => new ScriptTransportSocket(transport === 'htmlfile' ? 'htmlfile' : 'jsonp');
    case 'raw-websocket':
      return () => new WsWebSocket(`${BASE.replace(/^http/, 'ws')}/websocket`, ['v12.stomp']);
    default:
      return () => new SockJS(BASE, null, { transports: [transport] });
  }
}

// ---- sessions ----

const stats = {
  launched: 0,
  completed: 0,
  open: 0,
  sent: 0,
  received: 0,
  byTransport: Object.fromEntries(TRANSPORTS.map((t) => [t, 0])),
  errors: new Map(), // kind -> count
  examples: [],
};
function error(kind, detail) {
  stats.errors.set(kind, (stats.errors.get(kind) || 0) + 1);
  if (stats.examples.length < 10) stats.examples.push(`${kind}: ${detail}`);
}

const live = new Set();

function runSession(index) {
  return new Promise((resolve) => {
    const transport = TRANSPORTS[index % TRANSPORTS.length];
    const room = `/topic/soak.${index % ROOMS}`;
    const sid = `s${index}`;
    const lifetimeMs = LIFETIME_S * 1000 * (0.5 + Math.random());
    const pending = new Set();
    let seq = 0;
    let done = false;
    let sender;
    let connectTimer;
    let ending = false;
    stats.launched++;
    stats.open++;
    const client = new StompJs.Client({
      webSocketFactory: socketFactory(transport),
      connectHeaders: { login: sid },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      onConnect: () => {
        clearTimeout(connectTimer);
        client.subscribe(room, (m) => {
          stats.received++;
          if (m.body.startsWith(`${sid}:`)) pending.delete(m.body);
        });
        // The first message goes out once the SUBSCRIBE is surely in (frames are ordered).
        sender = setInterval(() => {
          const body = `${sid}:${seq++}`;
          pending.add(body);
          client.publish({ destination: room, body });
          stats.sent++;
        }, INTERVAL_MS);
        setTimeout(end, lifetimeMs);
      },
      onStompError: (frame) => fail('stomp-error', `${transport} ${frame.headers.message}`),
      onWebSocketClose: (evt) => {
        if (!ending) fail('unexpected-close', `${transport} code=${evt.code} ${evt.reason || ''}`);
      },
    });
    const entry = { client, fail: (why) => fail('cut-at-deadline', `${transport} ${why}`) };
    live.add(entry);
    connectTimer = setTimeout(() => fail('connect-timeout', transport), CONNECT_TIMEOUT_MS);
    client.activate();

    async function end() {
      clearInterval(sender);
      const until = Date.now() + ECHO_WAIT_MS;
      while (pending.size > 0 && Date.now() < until && !done) await new Promise((r) => setTimeout(r, 100));
      if (done) return;
      if (pending.size > 0) {
        fail('lost-messages', `${transport} ${pending.size} of ${seq} own messages never came back`);
        return;
      }
      ending = true;
      await client.deactivate();
      finish(true);
    }
    function fail(kind, detail) {
      if (done) return;
      error(kind, detail);
      ending = true;
      client.deactivate().catch(() => {});
      finish(false);
    }
    function finish(ok) {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      clearInterval(sender);
      live.delete(entry);
      stats.open--;
      if (ok) {
        stats.completed++;
        stats.byTransport[transport]++;
      }
      resolve();
    }
  });
}

// ---- sampling ----

function sampleProc() {
  const status = readFileSync(`/proc/${PID}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] || NaN);
  const fds = readdirSync(`/proc/${PID}/fd`).length;
  return { rssKb, fds };
}

const samples = [];
const started = Date.now();
let lastCounts = { sent: 0, received: 0 };
function takeSample(phase) {
  const { rssKb, fds } = sampleProc();
  const s = {
    t: Math.round((Date.now() - started) / 1000),
    phase,
    rssMb: rssKb / 1024,
    fds,
    open: stats.open,
    launched: stats.launched,
    sentPerS: (stats.sent - lastCounts.sent) / SAMPLE_S,
    recvPerS: (stats.received - lastCounts.received) / SAMPLE_S,
    errors: [...stats.errors.values()].reduce((a, b) => a + b, 0),
  };
  lastCounts = { sent: stats.sent, received: stats.received };
  samples.push(s);
  console.log(row(s));
}
const pad = (v, n) => String(v).padStart(n);
const header = `${pad('t/s', 5)} ${pad('phase', 8)} ${pad('RSS MiB', 8)} ${pad('fds', 6)} ${pad('open', 5)} ${pad('started', 7)} ${pad('sent/s', 7)} ${pad('recv/s', 7)} ${pad('errors', 6)}`;
const row = (s) =>
  `${pad(s.t, 5)} ${pad(s.phase, 8)} ${pad(s.rssMb.toFixed(1), 8)} ${pad(s.fds, 6)} ${pad(s.open, 5)} ${pad(s.launched, 7)} ${pad(s.sentPerS.toFixed(0), 7)} ${pad(s.recvPerS.toFixed(0), 7)} ${pad(s.errors, 6)}`;

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length === 0 ? NaN : v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

function gatewayLogProblems() {
  if (!opt.log) return { errors: 0, warnings: 0, lines: [] };
  // eslint-disable-next-line no-control-regex
  const text = readFileSync(opt.log, 'utf8').replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
  const lines = text.split('\n');
  const errors = lines.filter((l) => /\bERROR\b/.test(l));
  const warnings = lines.filter((l) => /\bWARN\b/.test(l));
  return { errors: errors.length, warnings: warnings.length, lines: [...errors, ...warnings].slice(0, 10) };
}

// ---- main ----

console.log(
  `soak: ${SESSIONS} STOMP sessions over ${TRANSPORTS.join(', ')}; launched over ${DURATION_S - LIFETIME_S} s, ` +
    `lifetime ${LIFETIME_S} s ± 50 %, at most ${MAX_OPEN} open, a SEND every ${INTERVAL_MS} ms to one of ${ROOMS} rooms; ` +
    `gateway pid ${PID}, samples every ${SAMPLE_S} s`,
);
console.log(header);
takeSample('baseline');
const baseline = samples[0];
const sampler = setInterval(() => takeSample('load'), SAMPLE_S * 1000);
const hardDeadline = setTimeout(() => {
  for (const entry of [...live]) entry.fail('still open at the hard deadline');
}, HARD_DEADLINE_MS);

const launchWindowMs = Math.max(1, DURATION_S - LIFETIME_S) * 1000;
const running = [];
for (let i = 0; i < SESSIONS; i++) {
  const due = started + (i * launchWindowMs) / SESSIONS;
  while (Date.now() < due || stats.open >= MAX_OPEN) {
    await new Promise((r) => setTimeout(r, Math.max(5, Math.min(100, due - Date.now()))));
  }
  running.push(runSession(i));
}
await Promise.all(running);
clearTimeout(hardDeadline);
clearInterval(sampler);
// Close this side's idle keep-alive connections (ours and sockjs-client's, on Node's global
// agent), then let the server finish closing the last sessions (polling sessions end at
// disconnect_delay) before the idle sample.
agent.destroy();
http.globalAgent.destroy();
await new Promise((r) => setTimeout(r, 8_000));
takeSample('idle');

const load = samples.filter((s) => s.phase === 'load');
const third = Math.floor(load.length / 3);
const middle = load.slice(third, 2 * third);
const last = load.slice(2 * third);
const rssMid = median(middle.map((s) => s.rssMb));
const rssLast = median(last.map((s) => s.rssMb));
const fdMid = median(middle.map((s) => s.fds));
const fdLast = median(last.map((s) => s.fds));
const idle = samples[samples.length - 1];
const log = gatewayLogProblems();
const totalErrors = [...stats.errors.values()].reduce((a, b) => a + b, 0);

const checks = [
  [`enough samples (${load.length} under load, at least 9)`, load.length >= 9],
  [
    `RSS flat: last-third median ${rssLast.toFixed(1)} MiB <= middle-third median ${rssMid.toFixed(1)} MiB + ${TOLERANCE * 100} %`,
    rssLast <= rssMid * (1 + TOLERANCE),
  ],
  [
    `fds flat: last-third median ${fdLast} <= middle-third median ${fdMid} + ${TOLERANCE * 100} % + ${FD_SLACK}`,
    fdLast <= fdMid * (1 + TOLERANCE) + FD_SLACK,
  ],
  [`fds back to baseline when idle: ${idle.fds} <= ${baseline.fds} + ${FD_SLACK}`, idle.fds <= baseline.fds + FD_SLACK],
  [`every session completed: ${stats.completed} of ${SESSIONS}`, stats.completed === SESSIONS],
  [`no client errors: ${totalErrors}`, totalErrors === 0],
  [`no ERROR lines in the gateway log: ${log.errors}`, log.errors === 0],
];

console.log('');
console.log(`sessions completed by transport: ${TRANSPORTS.map((t) => `${t} ${stats.byTransport[t]}`).join(', ')}`);
console.log(`messages: ${stats.sent} sent, ${stats.received} delivered; elapsed ${Math.round((Date.now() - started) / 1000)} s`);
console.log(
  `RSS MiB: baseline ${baseline.rssMb.toFixed(1)}, middle third ${rssMid.toFixed(1)}, last third ${rssLast.toFixed(1)}, ` +
    `max ${Math.max(...load.map((s) => s.rssMb)).toFixed(1)}, idle ${idle.rssMb.toFixed(1)}`,
);
console.log(`fds: baseline ${baseline.fds}, middle third ${fdMid}, last third ${fdLast}, max ${Math.max(...load.map((s) => s.fds))}, idle ${idle.fds}`);
if (stats.errors.size > 0) console.log(`client errors: ${[...stats.errors].map(([k, v]) => `${k} ${v}`).join(', ')}\n  ${stats.examples.join('\n  ')}`);
console.log(`gateway log: ${log.errors} ERROR, ${log.warnings} WARN lines${log.lines.length ? `\n  ${log.lines.join('\n  ')}` : ''}`);
for (const [what, ok] of checks) console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
const pass = checks.every(([, ok]) => ok);
console.log(`verdict: ${pass ? 'PASS (flat after warm-up, no errors)' : 'FAIL'}`);
process.exit(pass ? 0 : 1);
