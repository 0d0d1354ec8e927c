// The application backend of the Spring-style example: what a Spring app's controllers and
// CONNECT interceptor did, as a plain Node HTTP server (no dependencies) behind the gateway.
//
//   node backend.mjs [--port 9000]
//
//   POST /stomp       frames the gateway forwards (the gateway's backend contract):
//                     SEND /app/chat      {"text"} -> everyone on /topic/chat   (@MessageMapping + @SendTo)
//                     SEND /app/private   text     -> the sender's /user/queue/reply (@SendToUser)
//                     SUBSCRIBE /app/init          -> that subscription: recent chat (@SubscribeMapping)
//                     a bad chat message  -> 400, which the gateway turns into a message on
//                                            the sender's /user/queue/errors (@MessageExceptionHandler)
//   POST /connect     the CONNECT hook: the `token` header names the user (ChannelInterceptor)
//   POST /disconnect  ended sessions (SessionDisconnectEvent)
//
// Prints "backend listening on http://127.0.0.1:PORT", then one line per session that connects
// or ends.
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({ options: { port: { type: 'string', default: '9000' } } });

// Demo tokens; a real backend verifies a signed token or looks the session up.
const TOKENS = { 'alice-token': 'alice', 'bob-token': 'bob' };
const RECENT = 10;
const MAX_BODY = 64 * 1024;
const recent = [];

// Every handler answers [status, JSON value or undefined].
function onFrame(req) {
  if (req.type === 'subscribe' && req.path === '/init') {
    return [200, { messages: [{ body: { user: req.user, recent } }] }];
  }
  if (req.type === 'send' && req.path === '/chat') {
    let text;
    try {
      text = JSON.parse(req.body).text;
    } catch {
      return [400, { error: 'a chat message is JSON: {"text": "..."}' }];
    }
    if (typeof text !== 'string' || !text.trim()) return [400, { error: 'empty chat message' }];
    const entry = { from: req.user, text };
    recent.push(entry);
    recent.splice(0, recent.length - RECENT);
    // No destination: the gateway sends it to /topic/chat, as Spring's @SendTo default would.
    return [200, { messages: [{ body: entry }] }];
  }
  if (req.type === 'send' && req.path === '/private') {
    return [200, { messages: [{ user: true, destination: '/queue/reply', body: `only you see this: ${req.body}` }] }];
  }
  return [404, { error: `no handler for ${req.type} ${req.destination}` }];
}

function onConnect(req) {
  const user = TOKENS[req.headers.token];
  if (!user) return [200, { allow: false, reason: 'invalid token' }];
  console.log(`session ${req.session} connected as ${user} over ${req.transport}`);
  return [200, { allow: true, user }];
}

function onDisconnect(req) {
  for (const s of req.sessions) console.log(`session ${s.session} of ${s.user} ended (${s.cause})`);
  return [204, undefined];
}

const ROUTES = { '/stomp': onFrame, '/connect': onConnect, '/disconnect': onDisconnect };

const server = http.createServer((request, response) => {
  const answer = (status, value) => {
    const body = value === undefined ? '' : JSON.stringify(value);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    response.end(body);
  };
  const route = ROUTES[request.url];
  if (request.method !== 'POST' || !route) return answer(404, { error: 'not found' });
  let body = '';
  request.setEncoding('utf8');
  request.on('data', (chunk) => {
    body += chunk;
    if (body.length > MAX_BODY) request.destroy();
  });
  request.on('end', () => {
    let parsed;
    try {
      parsed = JSON.parse(body);
    } catch {
      return answer(400, { error: 'not JSON' });
    }
    answer(...route(parsed));
  });
});
server.keepAliveTimeout = 60_000; // the gateway keeps its connections to us open
server.listen(Number(opts.port), '127.0.0.1', () => {
  console.log(`backend listening on http://127.0.0.1:${server.address().port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
