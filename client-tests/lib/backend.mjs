// Starts the tests' HTTP application backend, fixtures/test_backend.py (Python standard
// library only), on a free loopback port, and reads what it recorded.
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { PACKAGE_DIR } from './gateway.mjs';

const SCRIPT = path.resolve(PACKAGE_DIR, '..', 'fixtures', 'test_backend.py');
const START_TIMEOUT_MS = 20_000;

// args: extra arguments (e.g. ['--hang-all']). Resolves with {url, log(), stop()}.
export async function startTestBackend(args = []) {
  const child = spawn('python3', [SCRIPT, '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  const origin = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`test backend did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      buf += d;
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`test backend exited (code ${code}) before listening`));
    });
  });
  // Every request the backend recorded: [{kind: 'frame'|'connect'|'disconnect'|'hung', request}].
  const log = () =>
    new Promise((resolve, reject) => {
      const req = http.get(`${origin}/log`, { agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d) => (body += d));
        res.on('end', () => resolve(JSON.parse(body).log));
      });
      req.on('timeout', () => req.destroy(new Error('GET /log timed out')));
      req.on('error', reject);
    });
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  };
  return { url: (p) => `${origin}${p}`, log, stop };
}
