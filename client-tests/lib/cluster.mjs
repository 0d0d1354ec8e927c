// Starts the three-node example (examples/cluster/run.sh: a private redis-server, three
// gateway nodes, nginx in front) for a test file, and stops it again by PID.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gatewayBinary, PACKAGE_DIR } from './gateway.mjs';

const run = promisify(execFile);
const SCRIPT = path.resolve(PACKAGE_DIR, '..', 'examples', 'cluster', 'run.sh');

// sockjsUrl: the sockjs-client the nodes' iframe page loads (optional).
export async function startCluster({ sockjsUrl } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'sockjs-cluster-'));
  const env = { ...process.env, RUN_DIR: dir, GATEWAY_BIN: gatewayBinary() };
  if (sockjsUrl) env.SOCKJS_URL = sockjsUrl;
  try {
    await run(SCRIPT, ['start'], { env, timeout: 90_000 });
  } catch (e) {
    await run(SCRIPT, ['stop'], { env }).catch(() => {});
    throw new Error(`cluster did not start: ${e.message}\n${e.stdout}\n${e.stderr}`);
  }
  const vars = Object.fromEntries(
    readFileSync(path.join(dir, 'env'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('=')),
  );
  const logTail = (lines = 15) =>
    [1, 2, 3]
      .map((i) => {
        const text = readFileSync(path.join(dir, `node${i}.log`), 'utf8').trim().split('\n');
        return `  node${i}:\n    ${text.slice(-lines).join('\n    ')}`;
      })
      .join('\n');
  return {
    dir,
    vars,
    origin: `http://127.0.0.1:${vars.HTTP_PORT}`,
    nodeOrigin: (i) => `http://127.0.0.1:${vars[`NODE${i}_PORT`]}`,
    redisUrl: vars.REDIS_URL,
    logTail,
    // kill -9 one node (1..3), as a crash would.
    kill(i) {
      const pid = Number(readFileSync(path.join(dir, `node${i}.pid`), 'utf8'));
      process.kill(pid, 'SIGKILL');
    },
    async stop() {
      await run(SCRIPT, ['stop'], { env });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A Redis command through redis-cli (PUBSUB NUMSUB and the like).
export async function redisCli(url, ...args) {
  const { stdout } = await run('redis-cli', ['-u', url, ...args]);
  return stdout.trim();
}
