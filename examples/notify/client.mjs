// The browser side of a Spring-style notification app, as a Node script: connect to the
// gateway's STOMP service through sockjs-client as user `alice` (CONNECT header `uid`),
// subscribe to the user's private queue and to a public topic, and print what arrives.
//
//   node client.mjs [--url http://127.0.0.1:8080/stomp] [--uid alice] [--transport websocket]
//
// --transport forces one sockjs-client transport (websocket, xhr-streaming, xhr-polling,
// eventsource); without it sockjs-client picks the best one. Stop with Ctrl-C: the client
// sends DISCONNECT, waits for its receipt and exits.
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080/stomp' },
    uid: { type: 'string', default: 'alice' },
    transport: { type: 'string' },
  },
});

let sock;
const client = new Client({
  webSocketFactory: () => (sock = new SockJS(opts.url, null, opts.transport ? { transports: [opts.transport] } : {})),
  connectHeaders: { uid: opts.uid },
  reconnectDelay: 5000, // come back after a gateway restart, as a page would
});

client.onConnect = (frame) => {
  console.log(`connected as ${frame.headers['user-name']} (STOMP ${frame.headers.version} over ${sock.transport})`);
  const show = (m) => console.log(`[${m.headers.destination}] ${m.body}`);
  // Spring's user destination: each session subscribes to /user/queue/notify, and the broker
  // turns it into a queue of that session alone. Messages sent to /user/alice/queue/notify
  // reach every session of alice, with the destination shown as /user/queue/notify.
  client.subscribe('/user/queue/notify', show, { receipt: 'sub-notify' });
  client.subscribe('/topic/news', show, { receipt: 'sub-news' });
  // The receipts arrive in order, so the second one means both subscriptions are active.
  client.watchForReceipt('sub-news', () => console.log('subscribed to /user/queue/notify and /topic/news'));
};
client.onStompError = (frame) => console.error(`STOMP error: ${frame.headers.message} ${frame.body}`);
client.onWebSocketClose = (e) => {
  if (client.active) console.error(`connection closed (${e.code} ${e.reason}); reconnecting`);
};

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await client.deactivate(); // DISCONNECT with a receipt, then close
  console.log('disconnected');
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

client.activate();
