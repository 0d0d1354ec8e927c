// STOMP scenarios shared by the Node tests and the browser test page.
// Plain ES module: no Node-only or browser-only API, so the same code runs in both.
//
// Three real STOMP clients are wrapped in one small interface (an "adapter"), so that one
// scenario drives all of them:
//
//   @stomp/stompjs 7   (Client with webSocketFactory, or brokerURL for raw WebSocket)
//   stompjs 2.3.3      (Stomp.over(socket))
//   webstomp-client    (webstomp.over(socket))
//
// An adapter's connect() resolves with a connection object:
//   { lib, socket, version, userName, connectedHeaders, inbox: [...], closeEvent,
//     subscribe(destination, id) -> Promise (resolves on the RECEIPT),
//     send(destination, body, headers),
//     disconnect() -> Promise<{receipt, close}> }

// The three messages published on the topic, in this order.
export const TOPIC_BODIES = [
  'first message',
  '100% %41 </script>',
  'third: caf\u00e9 \u4e2d\u6587 \ud83d\ude00 "quotes" \\backslash',
];

export const NOTIFY_SUBSCRIBED = '/user/queue/notify'; // what a user subscribes to
export const NOTIFY_TO_ALICE = '/user/alice/queue/notify'; // what a sender addresses
export const FROM_BOB = 'for alice, from bob';
export const FROM_ALICE = 'alice to her own user destination';

const WAIT_MS = 8000; // any single wait in the scenario
const GRACE_MS = 300; // how long to watch for duplicates or strays at the end

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

// The number of UTF-8 bytes of a string (no TextEncoder needed; well-formed input).
export function utf8Length(s) {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

export function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export function makeLog(t0, prefix) {
  const log = [];
  const note = (s) => {
    const line = String(s).replace(/\0/g, '^@').replace(/\n/g, '\\n');
    if (log.length < 80) log.push(`+${Math.round(now() - t0)}ms ${prefix} ${line.length > 200 ? line.slice(0, 200) + '...' : line}`);
  };
  return { log, note };
}

// The parts common to all adapters: inbox, receipts by id, close tracking.
function baseConnection(lib, note) {
  const receiptWaiters = new Map();
  const conn = {
    lib,
    socket: null,
    version: null,
    userName: null,
    connectedHeaders: null,
    inbox: [],
    receipts: [],
    errors: [],
    closeEvent: null,
    carrierAtConnect: null,
    _closeWaiters: [],
    _onConnected(frame) {
      conn.version = frame.headers.version;
      conn.userName = frame.headers['user-name'];
      conn.connectedHeaders = { ...frame.headers };
      // Read now: sockjs-client sets `transport` back to null once the socket closes.
      conn.carrierAtConnect = conn.carrier();
      note(`CONNECTED version ${conn.version} over ${conn.carrierAtConnect}`);
    },
    _onReceipt(frame) {
      const id = frame.headers['receipt-id'];
      conn.receipts.push(id);
      note(`RECEIPT ${id}`);
      const w = receiptWaiters.get(id);
      if (w) {
        receiptWaiters.delete(id);
        w();
      }
    },
    _waitReceipt(id) {
      return withTimeout(new Promise((resolve) => receiptWaiters.set(id, resolve)), WAIT_MS, `RECEIPT ${id}`);
    },
    _onMessage(frame) {
      const h = frame.headers;
      conn.inbox.push({
        subscription: h.subscription,
        destination: h.destination,
        messageId: h['message-id'],
        contentLength: h['content-length'] === undefined ? null : Number(h['content-length']),
        body: frame.body,
      });
      note(`MESSAGE ${h.subscription} ${h.destination} ${JSON.stringify(frame.body)}`);
    },
    _watchClose(socket) {
      conn.socket = socket;
      // addEventListener, not onclose: every library sets (and some clear) onclose itself.
      socket.addEventListener('close', (e) => {
        conn.closeEvent = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        note(`socket close ${e.code} ${e.reason}`);
        for (const w of conn._closeWaiters.splice(0)) w();
      });
    },
    _waitClose() {
      if (conn.closeEvent) return Promise.resolve();
      return withTimeout(new Promise((r) => conn._closeWaiters.push(r)), WAIT_MS, 'socket close');
    },
    // The SockJS transport, or for a raw WebSocket the negotiated subprotocol.
    carrier() {
      const s = conn.socket;
      if (!s) return null;
      return s.transport !== undefined ? s.transport : `ws subprotocol ${JSON.stringify(s.protocol)}`;
    },
    messagesOn(subscription) {
      return conn.inbox.filter((m) => m.subscription === subscription);
    },
    waitFor(pred, what) {
      const t0 = now();
      return new Promise((resolve, reject) => {
        const tick = () => {
          if (pred()) return resolve();
          if (conn.closeEvent) return reject(new Error(`socket closed while waiting for ${what}`));
          if (now() - t0 > WAIT_MS) return reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`));
          setTimeout(tick, 10);
        };
        tick();
      });
    },
    summary() {
      return {
        lib,
        carrier: conn.carrierAtConnect,
        version: conn.version,
        userName: conn.userName,
        connectedHeaders: conn.connectedHeaders,
        inbox: conn.inbox,
        receipts: conn.receipts,
        errors: conn.errors,
        close: conn.closeEvent,
      };
    },
  };
  return conn;
}

// ---------------------------------------------------------------------------------------------
// @stomp/stompjs 7. `target` is {webSocketFactory} (SockJS) or {brokerURL} (raw WebSocket).
// versions: optional list such as ['1.1'] (limits accept-version and the offered subprotocols).
export function stompjs7Adapter(StompJs, target, { versions } = {}) {
  return {
    lib: '@stomp/stompjs',
    disconnectReceipt: true,
    connect(headers, note, register = () => {}) {
      const conn = baseConnection('@stomp/stompjs', note);
      register(conn);
      return new Promise((resolve, reject) => {
        const config = {
          ...target,
          connectHeaders: headers,
          reconnectDelay: 0, // one attempt only
          debug: (s) => note(`debug ${s}`),
          onConnect: (frame) => {
            conn._onConnected(frame);
            resolve(conn);
          },
          onStompError: (frame) => {
            conn.errors.push(`ERROR ${frame.headers.message}: ${frame.body}`);
            reject(new Error(`STOMP ERROR ${frame.headers.message}`));
          },
          onWebSocketClose: (e) => reject(new Error(`socket closed before CONNECTED: ${e.code} ${e.reason}`)),
          onDisconnect: (frame) => {
            conn.disconnectFrame = { command: frame.command, headers: frame.headers };
          },
          onUnhandledReceipt: (frame) => conn._onReceipt(frame),
        };
        if (config.webSocketFactory) {
          const make = config.webSocketFactory;
          config.webSocketFactory = () => {
            const s = make();
            conn._watchClose(s);
            return s;
          };
        }
        if (versions) config.stompVersions = new StompJs.Versions(versions);
        const client = new StompJs.Client(config);
        conn.client = client;
        client.activate();
        if (!config.webSocketFactory) {
          // brokerURL: the client made the socket itself, synchronously in activate() or
          // just after; pick it up as soon as it exists.
          const until = now() + WAIT_MS;
          const grab = () => {
            if (client.webSocket) conn._watchClose(client.webSocket);
            else if (now() < until) setTimeout(grab, 1);
          };
          grab();
        }
      }).then((c) => {
        c.subscribe = (destination, id) => {
          const receipt = `sub-${id}`;
          const p = c._waitReceipt(receipt);
          c.client.subscribe(destination, (m) => c._onMessage(m), { id, receipt });
          return p;
        };
        c.send = (destination, body, headers = {}) => c.client.publish({ destination, body, headers });
        c.disconnect = async () => {
          await withTimeout(c.client.deactivate(), WAIT_MS, 'deactivate()');
          await c._waitClose();
          return { receipt: c.disconnectFrame ? c.disconnectFrame.headers['receipt-id'] || null : null, close: c.closeEvent };
        };
        return c;
      });
    },
  };
}

// stompjs 2.3.3 (Jeff Mesnil's stomp-websocket). makeSocket() returns a new SockJS.
export function stompjs2Adapter(Stomp, makeSocket) {
  return {
    lib: 'stompjs',
    disconnectReceipt: false, // disconnect() closes the socket at once, before any RECEIPT
    connect(headers, note, register = () => {}) {
      const conn = baseConnection('stompjs', note);
      register(conn);
      return new Promise((resolve, reject) => {
        const socket = makeSocket();
        conn._watchClose(socket);
        const client = Stomp.over(socket);
        conn.client = client;
        client.debug = (s) => note(`debug ${s}`);
        client.onreceipt = (frame) => conn._onReceipt(frame);
        client.connect(
          { ...headers },
          (frame) => {
            conn._onConnected(frame);
            resolve(conn);
          },
          (err) => {
            const text = typeof err === 'string' ? err : `ERROR ${err.headers && err.headers.message}: ${err.body}`;
            conn.errors.push(text);
            reject(new Error(text));
          },
        );
      }).then((c) => {
        c.subscribe = (destination, id) => {
          const receipt = `sub-${id}`;
          const p = c._waitReceipt(receipt);
          c.client.subscribe(destination, (m) => c._onMessage(m), { id, receipt });
          return p;
        };
        c.send = (destination, body, headers = {}) => c.client.send(destination, { ...headers }, body);
        c.disconnect = async () => {
          c.client.disconnect(() => {}, {});
          await c._waitClose();
          return { receipt: null, close: c.closeEvent };
        };
        return c;
      });
    },
  };
}

// webstomp-client. makeSocket() returns a new SockJS; options go to webstomp.over().
export function webstompAdapter(webstomp, makeSocket, options = {}) {
  return {
    lib: 'webstomp-client',
    disconnectReceipt: false, // disconnect() closes the socket at once, before any RECEIPT
    connect(headers, note, register = () => {}) {
      const conn = baseConnection('webstomp-client', note);
      register(conn);
      return new Promise((resolve, reject) => {
        const socket = makeSocket();
        conn._watchClose(socket);
        const client = webstomp.over(socket, { debug: false, ...options });
        conn.client = client;
        client.debug = (...a) => note(`debug ${a[0]}`);
        client.onreceipt = (frame) => conn._onReceipt(frame);
        client.connect(
          { ...headers },
          (frame) => {
            conn._onConnected(frame);
            resolve(conn);
          },
          (err) => {
            const text =
              err && err.command === 'ERROR'
                ? `ERROR ${err.headers.message}: ${err.body}`
                : `socket closed: ${err && err.code} ${err && err.reason}`;
            conn.errors.push(text);
            reject(new Error(text));
          },
        );
      }).then((c) => {
        c.subscribe = (destination, id) => {
          const receipt = `sub-${id}`;
          const p = c._waitReceipt(receipt);
          c.client.subscribe(destination, (m) => c._onMessage(m), { id, receipt });
          return p;
        };
        c.send = (destination, body, headers = {}) => c.client.send(destination, body, { ...headers });
        c.disconnect = async () => {
          c.client.disconnect(() => {}, {});
          await c._waitClose();
          return { receipt: null, close: c.closeEvent };
        };
        return c;
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The scenario, for one library over one carrier:
//
//  1. alice#1 connects (CONNECT header uid:alice), subscribes to `topic` with a receipt, and
//     once the RECEIPT is in sends TOPIC_BODIES to the topic; all three must come back.
//  2. alice#2 and bob connect (together); all three subscribe to /user/queue/notify with receipts.
//  3. bob sends to /user/alice/queue/notify: both of alice's connections get it, bob does not
//     (spec §7.5: a known user whose sessions do not include the sender → all its sessions).
//  4. alice#1 sends to /user/alice/queue/notify: only alice#1 gets it (spec §7.5: the
//     originating session belongs to that user → only that session; Spring does the same).
//  5. 300 ms of quiet (no duplicates, no strays), then all three disconnect (together).
//
// Resolves with a plain, serialisable result; never rejects.
export async function runStompScenario(adapter, { topic, label = '' } = {}) {
  const t0 = now();
  const result = { lib: adapter.lib, label, topic, error: null, step: 'connect alice#1', conns: {}, disconnects: {}, log: [] };
  const conns = {}; // connected, by name
  const started = []; // every connection attempt, for the clean-up after a failure
  const logs = {};
  const open = async (name, uid) => {
    const { log, note } = makeLog(t0, name);
    logs[name] = log;
    const c = await withTimeout(
      adapter.connect({ uid }, note, (c) => started.push(c)),
      WAIT_MS,
      `${name}: CONNECTED`,
    );
    conns[name] = c;
    return c;
  };
  const snapshot = () => {
    for (const [name, c] of Object.entries(conns)) result.conns[name] = c.summary();
    result.log = Object.values(logs).flat().sort((a, b) => Number(a.slice(1).split('ms')[0]) - Number(b.slice(1).split('ms')[0]));
  };
  try {
    const a1 = await open('alice#1', 'alice');
    result.step = 'subscribe to the topic';
    await a1.subscribe(topic, 'news');
    result.step = 'three topic messages';
    for (const body of TOPIC_BODIES) a1.send(topic, body, { 'content-type': 'text/plain' });
    await a1.waitFor(() => a1.messagesOn('news').length >= TOPIC_BODIES.length, 'the three topic messages');

    result.step = 'connect alice#2 and bob';
    const [a2, b] = await Promise.all([open('alice#2', 'alice'), open('bob', 'bob')]);
    result.step = 'subscribe to /user/queue/notify';
    await Promise.all([a1, a2, b].map((c) => c.subscribe(NOTIFY_SUBSCRIBED, 'notify')));

    result.step = 'bob sends to /user/alice/queue/notify';
    b.send(NOTIFY_TO_ALICE, FROM_BOB);
    await a1.waitFor(() => a1.messagesOn('notify').length >= 1, 'alice#1: the message from bob');
    await a2.waitFor(() => a2.messagesOn('notify').length >= 1, 'alice#2: the message from bob');

    result.step = 'alice#1 sends to /user/alice/queue/notify';
    a1.send(NOTIFY_TO_ALICE, FROM_ALICE);
    await a1.waitFor(() => a1.messagesOn('notify').length >= 2, "alice#1: her own message");

    result.step = 'quiet period';
    await new Promise((r) => setTimeout(r, GRACE_MS));

    result.step = 'disconnect';
    await Promise.all(
      Object.entries(conns).map(async ([name, c]) => {
        result.disconnects[name] = await c.disconnect();
      }),
    );
    result.step = 'done';
  } catch (e) {
    result.error = `${result.step}: ${e && e.message}`;
    for (const c of started) {
      try {
        if (c.client && c.client.deactivate) Promise.resolve(c.client.deactivate()).catch(() => {});
        else if (c.socket) c.socket.close();
      } catch {
        /* ignore */
      }
    }
  }
  snapshot();
  return result;
}
