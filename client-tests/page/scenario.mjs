// Client scenarios shared by the Node tests and the browser test page.
// Plain ES module: no Node-only or browser-only API, so the same code runs in both.

// Every character that the server must send as a \uXXXX escape (spec §4.1), raw.
function range(from, to) {
  let s = '';
  for (let c = from; c <= to; c++) s += String.fromCharCode(c);
  return s;
}
export const ESCAPED_SET =
  range(0x200c, 0x200f) + range(0x2028, 0x202f) + range(0x2060, 0x206f) + range(0xfff0, 0xffff);

function bigMessage(minLength) {
  const unit =
    'The quick brown fox %20 %41 100% </script> <!-- "q" \\b/ \u2028\u2029\uffff é ü ĳ 中文 \ud83d\ude00 | ';
  let s = '';
  while (s.length < minLength) s += unit;
  return s; // ends on a whole unit, so no surrogate pair is split
}

export const BIG_LENGTH = 70 * 1024;

// The messages sent on every transport, in this order.
export const MESSAGES = [
  'hello',
  '</script>',
  '<script>alert("x")</script><!-- --></SCRIPT>',
  '%41',
  '100% %20',
  '%',
  '%E2%82%AC %zz %%',
  'line\u2028separator\u2029paragraph',
  'nonchar \uffff end',
  'emoji \ud83d\ude00\ud83c\udf89 and \ud800\udc00',
  ESCAPED_SET,
  'controls \u0000\u0001\u001f\b\f\n\r\t "quotes" \\backslash\\ /slash/ \u007f\u0085\u00ad',
  'JSON-like ["a","b"] {"c":1} a["x"] c[3000,"Go away!"] o h',
  bigMessage(BIG_LENGTH),
  'after the big one',
];

// Short printable description of a string, for failure messages.
export function describe(s) {
  if (typeof s !== 'string') return String(s);
  const shown = s.length > 60 ? s.slice(0, 60) : s;
  const esc = shown.replace(/[^\x20-\x7e]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  return `"${esc}"${s.length > 60 ? `... (${s.length} UTF-16 units)` : ''}`;
}

// null when received equals expected exactly (each once, in order), else a description.
export function compareEchoes(expected, received) {
  const n = Math.min(expected.length, received.length);
  for (let i = 0; i < n; i++) {
    if (expected[i] !== received[i]) {
      let at = 0;
      const a = expected[i];
      const b = received[i];
      while (at < a.length && at < b.length && a[at] === b[at]) at++;
      return (
        `echo #${i} differs at UTF-16 index ${at}: ` +
        `expected ${describe(a.slice(Math.max(0, at - 10)))} (length ${a.length}), ` +
        `got ${describe(typeof b === 'string' ? b.slice(Math.max(0, at - 10)) : b)} ` +
        `(length ${typeof b === 'string' ? b.length : '-'})`
      );
    }
  }
  if (received.length !== expected.length) {
    return (
      `expected ${expected.length} echoes, got ${received.length}` +
      (received.length > expected.length
        ? `; extra: ${received.slice(expected.length, expected.length + 3).map(describe).join(', ')}`
        : `; first missing: ${describe(expected[received.length])}`)
    );
  }
  return null;
}

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

// Open a SockJS connection forced to one transport (or the default list when transport is
// null), send `messages` once the connection is open, collect the echoes, wait `graceMs`
// for duplicates, then close. Resolves with what happened; never rejects.
export function runEcho(SockJS, url, transport, messages, { timeoutMs = 20000, graceMs = 300 } = {}) {
  return new Promise((resolve) => {
    const t0 = now();
    const log = [];
    const note = (s) => {
      if (log.length < 50) log.push(`+${Math.round(now() - t0)}ms ${s}`);
    };
    const result = {
      url,
      forced: transport,
      transport: null,
      opened: false,
      received: [],
      phase: 'connecting',
      close: null,
      log,
      error: null,
    };
    let sock;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      note(`timeout in phase ${result.phase}`);
      result.error = `no close within ${timeoutMs} ms (phase ${result.phase}, ${result.received.length}/${messages.length} echoes)`;
      try {
        sock.close();
      } catch {
        /* ignore */
      }
      finish();
    }, timeoutMs);
    try {
      sock = new SockJS(url, null, transport ? { transports: [transport] } : {});
    } catch (e) {
      result.error = `constructor threw: ${e && e.message}`;
      finish();
      return;
    }
    sock.onopen = () => {
      result.opened = true;
      result.transport = sock.transport;
      result.phase = 'echo';
      note(`open via ${sock.transport}`);
      // All but the last message go at once; the last goes only after the others are
      // echoed. The 70 KiB echo before it crosses /echo's response_limit on streaming
      // transports, so the last echo must travel on a new receiving request: the reconnect
      // the checks look for is then certain, not a race with the closing grace period.
      for (const m of messages.slice(0, -1)) sock.send(m);
      if (messages.length === 1) sock.send(messages[0]);
    };
    sock.onmessage = (e) => {
      result.received.push(e.data);
      if (messages.length > 1 && result.received.length === messages.length - 1) {
        sock.send(messages[messages.length - 1]);
      }
      if (result.received.length === messages.length) {
        note('all echoes in');
        result.phase = 'grace';
        setTimeout(() => {
          result.phase = 'closing';
          note('close()');
          sock.close();
        }, graceMs);
      }
    };
    sock.onclose = (e) => {
      note(`close ${e.code} ${e.reason}`);
      result.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
      finish();
    };
  });
}

// Connect to a service that closes every session at once (/close). Resolves with the
// transport used and the close event.
export function runServerClose(SockJS, url, transport, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    const result = { url, forced: transport, transport: null, opened: false, messages: 0, close: null, error: null };
    let sock;
    const timer = setTimeout(() => {
      result.error = `no close within ${timeoutMs} ms`;
      try {
        sock.close();
      } catch {
        /* ignore */
      }
      resolve(result);
    }, timeoutMs);
    sock = new SockJS(url, null, transport ? { transports: [transport] } : {});
    sock.onopen = () => {
      result.opened = true;
      result.transport = sock.transport;
    };
    sock.onmessage = () => {
      result.messages++;
    };
    sock.onclose = (e) => {
      clearTimeout(timer);
      result.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
      resolve(result);
    };
  });
}
