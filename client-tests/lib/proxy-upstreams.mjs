// The upstreams of the proxy tests: the `ws` echo server (in this process), the Python
// close-code server (upstreams/close-upstream.py, a child process), and RabbitMQ Web-STOMP,
// whose URL scripts/proxy-tests passes in RABBITMQ_WEB_STOMP_URL after starting a private
// node. Also the gateway services that put the proxy in front of each of them.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { PACKAGE_DIR } from './gateway.mjs';
import { startWsEcho } from '../upstreams/ws-echo.mjs';

export { startWsEcho };

const START_TIMEOUT_MS = 15_000;

export function rabbitUrl() {
  const url = process.env.RABBITMQ_WEB_STOMP_URL;
  if (!url) {
    throw new Error(
      'RABBITMQ_WEB_STOMP_URL is not set: run scripts/proxy-tests, which starts a private RabbitMQ ' +
        'node with rabbitmq_web_stomp and sets it (e.g. ws://127.0.0.1:PORT/ws)',
    );
  }
  if (!/^ws:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+\//.test(url)) {
    throw new Error(`RABBITMQ_WEB_STOMP_URL must be a loopback ws:// URL, not ${url}`);
  }
  return url;
}

// Starts close-upstream.py; resolves with {origin: 'ws://127.0.0.1:PORT', stop()}.
export function startCloseUpstream() {
  const script = path.join(PACKAGE_DIR, 'upstreams', 'close-upstream.py');
  const child = spawn(process.env.PYTHON || 'python3', [script], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.stdin.end(); // it stops when its stdin closes
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`close-upstream.py did not start within ${START_TIMEOUT_MS} ms:\n${output}`));
    }, START_TIMEOUT_MS);
    const onData = (chunk) => {
      output += chunk;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve({ origin: `ws://127.0.0.1:${m[1]}`, stop, output: () => output });
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', (c) => (output += c));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`close-upstream.py exited (code ${code}) before listening:\n${output}\n` +
        '(pip install -r client-tests/upstreams/requirements.txt)'));
    });
  });
}

// How the Python upstream ends a connection, per gateway service, and what the SockJS client
// must see: the upstream's close passed through, no code as 1000, a dropped connection as 1011.
export const CLOSE_CASES = [
  { prefix: '/close4001', path: '/close/4001/custom%20reason', close: { code: 4001, reason: 'custom reason' } },
  { prefix: '/close1000', path: '/close/1000/bye', close: { code: 1000, reason: 'bye' } },
  { prefix: '/closenocode', path: '/close-no-code', close: { code: 1000, reason: 'Normal closure' } },
  { prefix: '/drop', path: '/drop', close: { code: 1011, reason: 'Upstream connection lost' } },
];

// The gateway services of the proxy tests.
//   /echo       → the ws echo upstream (response_limit 4096, so streaming transports reconnect)
//   /closeNNNN… → the Python upstream, one per CLOSE_CASES entry
//   /unreachable→ a port nothing listens on
//   /rabbit     → RabbitMQ Web-STOMP, offering the STOMP subprotocols
export function proxyServices({ sockjsUrl, echo, closer, unreachablePort, rabbit }) {
  const services = [
    { prefix: '/echo', app: 'proxy', upstream: echo, sockjs_url: sockjsUrl, response_limit: 4096 },
    ...CLOSE_CASES.map((c) => ({ prefix: c.prefix, app: 'proxy', upstream: `${closer}${c.path}`, sockjs_url: sockjsUrl })),
    { prefix: '/unreachable', app: 'proxy', upstream: `ws://127.0.0.1:${unreachablePort}/`, connect_timeout_ms: 2000, sockjs_url: sockjsUrl },
  ];
  if (rabbit) {
    services.push({
      prefix: '/rabbit',
      app: 'proxy',
      upstream: rabbit,
      upstream_subprotocols: ['v12.stomp', 'v11.stomp', 'v10.stomp'],
      sockjs_url: sockjsUrl,
    });
  }
  return services;
}

// A loopback port with nothing listening on it (bound, then released).
export async function unusedPort() {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
