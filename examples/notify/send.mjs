// The server side of the notification example: send one private notification to a user and
// one public news item, then exit.
//
//   node send.mjs [--url http://127.0.0.1:8080/stomp] [--to alice] [--as notifier] \
//                 [--notify "Your order #42 has shipped"] [--news "Sale starts at noon"]
//
// It is a STOMP client too (sockjs-client + @stomp/stompjs, connecting as user --as). It sends
//   /user/{to}/queue/notify  — Spring's convertAndSendToUser(to, "/queue/notify", text):
//                              every session of that user that subscribed to
//                              /user/queue/notify gets it;
//   /topic/news              — every subscriber.
// A client may send to /user/... only because gateway.toml sets
// allow_client_send_to_user = true. Note that a user sending to its own name reaches only the
// sending session (Spring's rule), so --as must name another user than --to.
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080/stomp' },
    to: { type: 'string', default: 'alice' },
    as: { type: 'string', default: 'notifier' },
    notify: { type: 'string', default: 'Your order #42 has shipped' },
    news: { type: 'string', default: 'Sale starts at noon' },
  },
});

const fail = (why) => {
  console.error(`send.mjs: ${why}`);
  process.exit(1);
};
const timer = setTimeout(() => fail('no answer from the gateway within 10 s'), 10_000);

const client = new Client({
  webSocketFactory: () => new SockJS(opts.url),
  connectHeaders: { uid: opts.as },
  reconnectDelay: 0,
});
client.onStompError = (frame) => fail(`STOMP error: ${frame.headers.message} ${frame.body}`);
client.onWebSocketClose = (e) => {
  if (client.active) fail(`connection closed: ${e.code} ${e.reason}`);
};
client.onConnect = () => {
  // A user name containing '/' is written %2F inside a destination.
  const sends = [
    [`/user/${opts.to.replaceAll('/', '%2F')}/queue/notify`, opts.notify],
    ['/topic/news', opts.news],
  ];
  sends.forEach(([destination, body], i) => {
    // A RECEIPT for a SEND means the gateway has routed the message. Receipts come in frame
    // order, so once the last one is in, disconnect (DISCONNECT with a receipt) and exit.
    const receipt = `send-${i}`;
    client.watchForReceipt(receipt, async () => {
      console.log(`sent to ${destination}: ${body}`);
      if (i === sends.length - 1) {
        await client.deactivate();
        clearTimeout(timer);
      }
    });
    client.publish({ destination, body, headers: { receipt } });
  });
};
client.activate();
