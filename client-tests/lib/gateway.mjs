// Starts the sockjs-gateway binary for a test file and stops it again.
//
// The binary is GATEWAY_BIN, or ../target/debug/sockjs-gateway next to this package.
// It is started as `sockjs-gateway --config FILE --listen 127.0.0.1:0`, and the port is
// read from the line `listening on http://127.0.0.1:PORT` (https:// with TLS) it prints at
// start-up.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = path.resolve(HERE, '..');

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 3_000;
const LOG_LINES_KEPT = 300;
const LISTENING_RE = /listening on (https?):\/\/127\.0\.0\.1:(\d+)/;
// Logged before the main listener's line when the config has an [admin] listener.
const ADMIN_RE = /admin listener at http:\/\/127\.0\.0\.1:(\d+)/;
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;

export function gatewayBinary() {
  const bin = process.env.GATEWAY_BIN
    ? path.resolve(process.env.GATEWAY_BIN)
    : path.resolve(PACKAGE_DIR, '..', 'target', 'debug', 'sockjs-gateway');
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(
      `gateway binary not found or not executable: ${bin}\n` +
        'Build it first (cargo build) or set GATEWAY_BIN.',
    );
  }
  return bin;
}

function tomlString(s) {
  return JSON.stringify(String(s)); // a JSON string is a valid TOML basic string for our values
}

function tomlValue(v) {
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  return tomlString(v);
}

// services: [{prefix, app, ...other per-service keys}]
// stomp: optional {key: value} for the [stomp] table (STOMP core settings).
// extraToml: optional raw TOML appended as is (e.g. [[backend]] tables).
// server: optional {key: value} added to the [server] table (e.g. tls_cert, tls_key).
export function configToml(services, stomp, extraToml, server) {
  const out = ['[server]', 'listen = "127.0.0.1:0"'];
  for (const [k, v] of Object.entries(server || {})) {
    if (v !== undefined) out.push(`${k} = ${tomlValue(v)}`);
  }
  out.push('');
  for (const svc of services) {
    out.push('[[service]]');
    for (const [k, v] of Object.entries(svc)) {
      if (v !== undefined) out.push(`${k} = ${tomlValue(v)}`);
    }
    out.push('');
  }
  if (stomp) {
    out.push('[stomp]');
    for (const [k, v] of Object.entries(stomp)) {
      if (v !== undefined) out.push(`${k} = ${tomlValue(v)}`);
    }
    out.push('');
  }
  if (extraToml) out.push(extraToml);
  return out.join('\n');
}

// The services of spec §12.1 that these tests use.
export function testServices(sockjsUrl) {
  return [
    { prefix: '/echo', app: 'echo', sockjs_url: sockjsUrl, response_limit: 4096 },
    { prefix: '/close', app: 'close', sockjs_url: sockjsUrl },
    { prefix: '/disabled_websocket_echo', app: 'echo', sockjs_url: sockjsUrl, websocket: false },
    { prefix: '/cookie_needed_echo', app: 'echo', sockjs_url: sockjsUrl, cookie_needed: true },
  ];
}

// The STOMP service and settings the STOMP tests use: STOMP at /stomp over every SockJS
// transport and raw WebSocket (/stomp/websocket); the CONNECT header `uid` names the user; and
// clients may send to /user/{name}/... (Spring's behaviour, off by default in the gateway) so
// that user destinations can be exercised without a backend.
export function stompService(sockjsUrl) {
  return { prefix: '/stomp', app: 'stomp', sockjs_url: sockjsUrl };
}
export const STOMP_SETTINGS = { principal_header: 'uid', allow_client_send_to_user: true };

// configFile: an existing TOML file to use as it is (services and stomp are then ignored).
export async function startGateway({ services, stomp, extraToml, server, configFile: givenConfig, args = [] }) {
  const bin = gatewayBinary();
  const dir = mkdtempSync(path.join(tmpdir(), 'sockjs-gw-client-tests-'));
  const configFile = givenConfig || path.join(dir, 'gateway.toml');
  if (!givenConfig) writeFileSync(configFile, configToml(services, stomp, extraToml, server));

  const child = spawn(bin, ['--config', configFile, '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  let exited = null;
  const exitWaiters = [];
  let onLine = null;

  // The listening line is expected on stderr; stdout is read too (a tracing subscriber
  // writes to stdout by default), and both are drained for the whole run so the child
  // never blocks on a full pipe.
  for (const [name, stream] of [['stderr', child.stderr], ['stdout', child.stdout]]) {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(ANSI_RE, '');
        buf = buf.slice(i + 1);
        lines.push(`[${name}] ${line}`);
        if (lines.length > LOG_LINES_KEPT) lines.shift();
        if (onLine) onLine(line);
      }
    });
  }
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    for (const w of exitWaiters.splice(0)) w(exited);
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);

  const logTail = (n = 40) =>
    `  (gateway process: ${exited ? `exited, code ${exited.code}, signal ${exited.signal}` : 'running'})\n` +
    lines.slice(-n).join('\n');
  const waitExit = (ms) =>
    new Promise((resolve) => {
      if (exited) return resolve(exited);
      const t = setTimeout(() => resolve(null), ms);
      exitWaiters.push((e) => {
        clearTimeout(t);
        resolve(e);
      });
    });

  async function stop() {
    process.removeListener('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      if (!(await waitExit(STOP_TIMEOUT_MS))) {
        child.kill('SIGKILL');
        await waitExit(STOP_TIMEOUT_MS);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }

  let port;
  let scheme = 'http';
  let adminPort = null;
  try {
    port = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`gateway printed no "listening on" line within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      );
      const check = (line) => {
        const admin = ADMIN_RE.exec(line);
        if (admin) adminPort = Number(admin[1]);
        const m = LISTENING_RE.exec(line);
        if (m) {
          clearTimeout(timer);
          onLine = null;
          scheme = m[1];
          resolve(Number(m[2]));
        }
      };
      for (const l of lines) check(l);
      onLine = check;
      exitWaiters.push((e) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited before listening (code ${e.code}, signal ${e.signal})`));
      });
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  } catch (err) {
    await stop();
    err.message += `\nconfig: ${configFile}\n${givenConfig ? '' : configToml(services, stomp, extraToml, server)}\ngateway output:\n${logTail()}`;
    throw err;
  }

  return {
    port,
    origin: `${scheme}://127.0.0.1:${port}`,
    // The admin listener's origin, when the config has one.
    adminOrigin: adminPort === null ? null : `http://127.0.0.1:${adminPort}`,
    logTail,
    alive: () => exited === null,
    stop,
  };
}
