// The browser side of the Spring-style chat, as a Node script: sockjs-client + @stomp/stompjs,
// logging in with a token that the backend's connect hook checks.
//
//   node client.mjs [--url http://127.0.0.1:8080/stomp] [--token alice-token] [--transport websocket]
//
// Each line typed (or piped) on stdin is a chat message (SEND /app/chat); a line starting with
// "/private " asks the backend something only this user sees (SEND /app/private). Every
// message that arrives is printed as "[destination] body". Ctrl-C (or the end of stdin with
// --exit-on-eof) sends DISCONNECT, waits for its receipt and exits.
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080/stomp' },
    token: { type: 'string', default: 'alice-token' },
    transport: { type: 'string' },
    'exit-on-eof': { type: 'boolean', default: false },
  },
});

let sock;
const client = new Client({
  webSocketFactory: () => (sock = new SockJS(opts.url, null, opts.transport ? { transports: [opts.transport] } : {})),
  connectHeaders: { token: opts.token },
  reconnectDelay: 0,
});

const show = (m) => console.log(`[${m.headers.destination}] ${m.body}`);

client.onConnect = (frame) => {
  console.log(`connected as ${frame.headers['user-name']} (STOMP ${frame.headers.version} over ${sock.transport})`);
  client.subscribe('/topic/chat', show);
  client.subscribe('/user/queue/reply', show); // @SendToUser("/queue/reply") answers
  client.subscribe('/user/queue/notify', show); // pushes from the admin API
  client.subscribe('/user/queue/errors', show); // @MessageExceptionHandler, on_error = "user-queue"
  // @SubscribeMapping: the backend answers this subscription once, with the recent chat.
  client.subscribe('/app/init', (m) => console.log(`[init] ${m.body}`), { receipt: 'ready' });
  client.watchForReceipt('ready', () => console.log('ready'));
};
client.onStompError = (frame) => {
  console.error(`STOMP error: ${frame.headers.message}: ${frame.body}`);
  process.exit(1);
};

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await client.deactivate();
  console.log('disconnected');
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!client.connected) return console.error('not connected yet');
  if (line.startsWith('/private ')) {
    client.publish({ destination: '/app/private', body: line.slice('/private '.length) });
  } else {
    client.publish({ destination: '/app/chat', body: JSON.stringify({ text: line }), headers: { 'content-type': 'application/json' } });
  }
}).on('close', () => {
  if (opts['exit-on-eof']) stop();
});

client.activate();
