// A CRM client written the way a seed-003 CRM is written: `fetch` for the REST routes, a
// WebSocket for the events, whatsapp-web.js-shaped JSON, an HS256 token signed by the CRM's
// own server. Nothing in it knows it talks to wasp rather than seed 003's server.
//
//   API_URL=http://127.0.0.1:8080 JWT_SECRET=... CRM_USER_ID=... \
//     node --experimental-websocket tests/js/seed003-crm.mjs
//
// It is an auto-responder: every inbound `message` gets a reply through POST /send. It prints one
// JSON line per step on stdout ({"step": "qr", ...}, ..., {"step": "done"}) for whoever plays the
// rest of the world (a phone scanning the QR, a contact writing), and exits 1 with
// {"step": "fail", "message": ...} on the first deviation from what seed 003's clients read.
//
// JWT_EXPIRES_IN: the token's lifetime in seconds (default 3600), or `none` for a token without
// `exp` like seed 003's example. With the argument `status` it only reads GET /status once.

import { createHmac } from 'node:crypto';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') fail(`${name} is not set`);
  return v;
};

function step(name, fields = {}) {
  process.stdout.write(JSON.stringify({ step: name, ...fields }) + '\n');
}

function fail(message, detail) {
  step('fail', { message, detail });
  console.error(`seed003-crm: ${message}${detail === undefined ? '' : `\n${JSON.stringify(detail)}`}`);
  process.exit(1);
}

function check(ok, message, detail) {
  if (!ok) fail(message, detail);
}

const API_URL = env('API_URL').replace(/\/$/, '');
const JWT_SECRET = env('JWT_SECRET');
const USER_ID = env('CRM_USER_ID');
const EMAIL = env('CRM_EMAIL', 'doctor@clinic.com');
const TIMEOUT_MS = Number(env('CRM_STEP_TIMEOUT_MS', '20000'));
const REPLY = 'Thank you for your message, the practice will call you back.';

const nowSeconds = () => Math.floor(Date.now() / 1000);

// The CRM server's token: HS256 over the seed's payload, as its auth middleware signs it.
function signJwt(payload, secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(payload)}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

const EXPIRES_IN = env('JWT_EXPIRES_IN', '3600');
const claims = { sub: USER_ID, email: EMAIL, iat: nowSeconds() };
if (EXPIRES_IN !== 'none') claims.exp = claims.iat + Number(EXPIRES_IN);
const token = signJwt(claims, JWT_SECRET);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(API_URL + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (e) {
    fail(`${method} ${path}: ${e}`);
  }
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    fail(`${method} ${path}: ${res.status} with a body that is not JSON`, text);
  }
  check(res.ok, `${method} ${path} answered ${res.status}`, { request: body, answer: json });
  return json;
}

const isString = (s) => typeof s === 'string' && s.length > 0;

// --- the event stream -------------------------------------------------------------------------

const events = [];
const waiters = [];
let replying = Promise.resolve();
let expectClose = false;

function waitFor(what, matches, ms = TIMEOUT_MS) {
  const seen = events.find(matches);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => fail(`no ${what} within ${ms} ms`, { eventsSeen: events.map((e) => e.type) }),
      ms,
    );
    waiters.push({
      matches,
      resolve: (e) => {
        clearTimeout(timer);
        resolve(e);
      },
    });
  });
}

function onFrame(raw) {
  let frame;
  try {
    frame = JSON.parse(raw);
  } catch {
    fail('a WebSocket frame that is not JSON', String(raw));
  }
  check(
    isString(frame.type) && 'data' in frame && !Number.isNaN(Date.parse(frame.timestamp)),
    'a WebSocket frame that is not {type, data, timestamp}',
    frame,
  );
  if (frame.type === 'message') {
    // An auto-responder answers every `message`: an own message here would loop forever.
    check(frame.data?.fromMe !== true, 'own message delivered as a `message` event', frame.data);
    replying = replying.then(() => answer(frame.data));
  }
  events.push(frame);
  for (let i = waiters.length - 1; i >= 0; i--) {
    if (waiters[i].matches(frame)) {
      waiters[i].resolve(frame);
      waiters.splice(i, 1);
    }
  }
}

// What the CRM does with an inbound message: read it like seed 003's clients do, answer it.
async function answer(msg) {
  check(isString(msg.body), 'message without body', msg);
  check(isString(msg.from) && msg.from.endsWith('@c.us'), 'message.from is not <phone>@c.us', msg);
  check(Number.isInteger(msg.timestamp), 'message.timestamp is not an integer', msg);
  check(
    Math.abs(msg.timestamp - Date.now() / 1000) < 60,
    'message.timestamp is not unix seconds of now',
    { timestamp: msg.timestamp, now: Date.now() },
  );
  check(msg.id && typeof msg.id === 'object' && isString(msg.id._serialized), 'message.id is not an id object', msg);
  step('message', { body: msg.body, from: msg.from, timestamp: msg.timestamp, id: msg.id._serialized });
  const sent = await api('POST', '/send', { chatId: msg.from, message: REPLY });
  check(sent.success === true, '/send without success: true', sent);
  const m = sent.message;
  check(
    m && isString(m.id?._serialized) && m.fromMe === true && m.body === REPLY,
    '/send did not answer the sent message',
    sent,
  );
  step('sent', { id: m.id._serialized, to: m.to, body: m.body, ack: m.ack });
  return m;
}

// --- the CRM's session, start to finish ----------------------------------------------------------

if (process.argv[2] === 'status') {
  const s = await api('GET', '/status');
  check(isString(s.status), '/status without status', s);
  step('status', { status: s.status, sessionName: s.sessionName });
  step('done');
  process.exit(0);
}

const ws = new WebSocket(`${API_URL.replace(/^http/, 'ws')}/?token=${encodeURIComponent(token)}`);
ws.addEventListener('message', (e) => onFrame(e.data));
ws.addEventListener('error', (e) => fail(`WebSocket error: ${e.message ?? e.type}`));
ws.addEventListener('close', (e) => {
  if (!expectClose) fail(`WebSocket closed (${e.code} ${e.reason})`, { eventsSeen: events.map((x) => x.type) });
});

const greeting = await waitFor('first status frame', (e) => e.type === 'status');
step('ws_open', { status: greeting.data.status });

const before = await api('GET', '/status');
check(isString(before.status), '/status without status', before);
step('status_before', { status: before.status });

const connected = await api('POST', '/connect');
check(connected.success === true, '/connect without success: true', connected);
step('connect', { sessionName: connected.session?.sessionName, status: connected.session?.status });

const qr = await waitFor('qr event', (e) => e.type === 'qr');
const url = qr.data.qrDataUrl;
check(isString(url) && url.startsWith('data:image/png;base64,'), 'qr.qrDataUrl is not a PNG data URL', qr.data);
const png = Buffer.from(url.slice('data:image/png;base64,'.length), 'base64');
check(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'qr.qrDataUrl holds no PNG');
check(isString(qr.data.qr), 'qr event without the raw code', qr.data);
step('qr', { qr: qr.data.qr, pngBytes: png.length });

const ready = await waitFor('ready event', (e) => e.type === 'ready');
check(isString(ready.data?.phone), 'ready without the phone number', ready.data);
step('ready', { phone: ready.data.phone });

// A contact writes; `answer` replies; its delivery receipt raises the reply's ack.
const inbound = (await waitFor('message event', (e) => e.type === 'message')).data;
const reply = await replying;
const acked = await waitFor(
  'message_ack of the reply with ack >= 2',
  (e) => e.type === 'message_ack' && e.data?.id?._serialized === reply.id._serialized && e.data.ack >= 2,
);
step('acked', { id: acked.data.id._serialized, ack: acked.data.ack });

const chats = await api('GET', '/chats');
check(Array.isArray(chats), '/chats is not an array', chats);
const chat = chats.find((c) => c.id?._serialized === inbound.from);
check(chat, `/chats has no chat with id._serialized ${inbound.from}`, chats);
check(isString(chat.name), 'chat without name', chat);
check(Number.isInteger(chat.unreadCount), 'chat.unreadCount is not a number', chat);
check(chat.lastMessage?.body === REPLY, 'chat.lastMessage is not the reply', chat);
step('chats', { count: chats.length, name: chat.name, unreadCount: chat.unreadCount, lastMessage: chat.lastMessage.body });

const messages = await api('GET', `/messages/${encodeURIComponent(inbound.from)}?limit=10`);
check(Array.isArray(messages), '/messages is not an array', messages);
const bodies = messages.map((m) => m.body);
const inAt = messages.findIndex((m) => m.id?._serialized === inbound.id._serialized);
const outAt = messages.findIndex((m) => m.id?._serialized === reply.id._serialized);
check(inAt >= 0 && outAt > inAt && outAt === messages.length - 1, '/messages is not oldest first', bodies);
check(
  messages.every((m, i) => i === 0 || m.timestamp >= messages[i - 1].timestamp),
  '/messages timestamps go backwards',
  messages.map((m) => m.timestamp),
);
step('messages', { bodies });

const status = await api('GET', '/status');
check(status.status === 'connected', '/status is not connected', status);
check(isString(status.phoneNumber), '/status without phoneNumber', status);
step('status', { status: status.status, phoneNumber: status.phoneNumber });

const phone = inbound.from.split('@')[0];
const byPhone = await api('GET', `/chat-by-phone?phone=${encodeURIComponent(`+${phone}`)}`);
check(byPhone.exists === true && byPhone.chatId === inbound.from, '/chat-by-phone did not find the chat', byPhone);
step('chat_by_phone', { chatId: byPhone.chatId, exists: byPhone.exists });

const logs = await api('GET', '/logs?limit=50');
check(Array.isArray(logs) && logs.length > 0, '/logs is empty', logs);
for (const entry of logs) {
  check(
    isString(entry.eventType) && typeof entry.eventData === 'string' && !Number.isNaN(Date.parse(entry.timestamp)),
    'a log entry without eventType, eventData, timestamp',
    entry,
  );
}
step('logs', { eventTypes: logs.map((l) => l.eventType) });

// Seed 000's whitelist routes on the same session.
const mobileNo = `+${phone}`;
const added = await api('POST', '/api/whatsapp/contact/add', { mobileNo, name: 'Ann (patient)' });
check(added.mobileNo === mobileNo && added.name === 'Ann (patient)', 'contact/add did not answer the contact', added);
const listed = await api('GET', '/api/whatsapp/contacts');
check(Array.isArray(listed) && listed.some((c) => c.mobileNo === mobileNo), 'contacts do not list the added one', listed);
const removed = await api('DELETE', `/api/whatsapp/contact/${encodeURIComponent(mobileNo)}`);
check(removed.success === true, 'contact removal without success: true', removed);
const after = await api('GET', '/api/whatsapp/contacts');
check(Array.isArray(after) && !after.some((c) => c.mobileNo === mobileNo), 'the removed contact is still listed', after);
step('contacts', { added: added.mobileNo, listedBefore: listed.length, listedAfter: after.length });

// Log out, as seed 003's "disconnect" button does.
const out = await api('POST', '/disconnect');
check(out.success === true, '/disconnect without success: true', out);
const gone = await waitFor('disconnected event', (e) => e.type === 'disconnected');
step('disconnect', { message: out.message, loggedOut: gone.data.loggedOut });

expectClose = true;
ws.close();
step('done', { events: events.map((e) => e.type) });
process.exit(0);
