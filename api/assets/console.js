// wasp console: one user's WhatsApp session, live. Plain JS, no dependencies.
//
// The token comes from the form or a `#token=` fragment (removed from the address bar at once),
// lives in sessionStorage (this tab only) and travels only in the Authorization header, or in the
// WebSocket's `?token=` (browsers cannot set headers on a WebSocket). Nothing is logged.
//
// `document.body.dataset.state` is the seed-style status (`disconnected`, `initializing`, `qr`,
// `connected`, `reconnecting`, `logged_out`, `failed`), or `loading`, `signed_out`,
// `token_rejected`; `dataset.live` is `open` while the event stream delivers. Tests wait on them.
'use strict';

(() => {
  const TOKEN_KEY = 'wasp.console.token';
  const MAX_MESSAGES = 50;
  const HISTORY_CHATS = 10;
  const HISTORY_PER_CHAT = 20;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 15000;
  // The server closes with this code when the token expires.
  const CLOSE_TOKEN_EXPIRED = 4001;
  // API routes resolve against the page's directory, so a path prefix in front of the API works.
  const BASE = new URL('./', location.href);

  const el = (id) => document.getElementById(id);
  const ui = {
    live: el('live'), signout: el('signout'),
    error: el('error'), errorText: el('error-text'), errorClose: el('error-close'),
    signin: el('signin'), form: el('token-form'), tokenInput: el('token'),
    session: el('session'), status: el('status'), phase: el('phase'), phone: el('phone'),
    pushName: el('push-name'), detail: el('detail'),
    connect: el('connect'), disconnect: el('disconnect'),
    connected: el('connected'), connectedPhone: el('connected-phone'), connectedName: el('connected-name'),
    qr: el('qr'), qrImage: el('qr-image'), qrWaiting: el('qr-waiting'),
    messagesSection: el('messages-section'), messages: el('messages'), messagesEmpty: el('messages-empty'),
  };

  let token = null;
  // What the page knows of the session (a SessionStatus, updated by events).
  let session = null;
  let qrDataUrl = null;
  const messages = new Map();
  let arrivals = 0;
  // The WebSocket, the last event id (to resume with `since`), the reconnect back-off.
  let ws = null;
  let wsGeneration = 0;
  let lastEventId = null;
  let retries = 0;
  let retryTimer = null;

  // ---- token -------------------------------------------------------------------------------

  function takeTokenFromFragment() {
    if (location.hash.length < 2) return;
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has('token')) return;
    const t = (params.get('token') || '').trim();
    params.delete('token');
    const rest = params.toString();
    // Replace the history entry: the token must not stay in the address bar or the history.
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
  }

  function signIn(t) {
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    ui.signin.hidden = true;
    ui.signout.hidden = false;
    clearError();
    start();
  }

  function signOut(state, message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    session = null;
    qrDataUrl = null;
    messages.clear();
    renderMessages();
    ui.session.hidden = true;
    ui.messagesSection.hidden = true;
    ui.signout.hidden = true;
    ui.signin.hidden = false;
    ui.tokenInput.value = '';
    setState(state);
    if (message) showError(message); else clearError();
    ui.tokenInput.focus();
  }

  function tokenRejected(message) {
    signOut('token_rejected', 'Token rejected' + (message ? ': ' + message : '') +
      '. Paste a valid token.');
  }

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code || 'HTTP ' + status);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const used = token;
    const headers = { Authorization: 'Bearer ' + used, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(new URL(path, BASE), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new ApiError(0, 'network', 'the server is unreachable');
    }
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    if (!res.ok) {
      // `{"error": code, "message": text}`, or `{"error": {"code", "message"}}`.
      const err = json && json.error;
      const code = typeof err === 'string' ? err : err && err.code;
      const message = (err && typeof err === 'object' && err.message) || (json && json.message);
      const e = new ApiError(res.status, code || '', message || res.statusText);
      // (Unless the user has switched tokens since this call went out.)
      if (res.status === 401 && token === used) tokenRejected(e.message);
      throw e;
    }
    return json;
  }

  // ---- rendering ---------------------------------------------------------------------------

  function setState(state) {
    document.body.dataset.state = state;
  }

  function showError(message) {
    ui.errorText.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.errorText.textContent = '';
    ui.error.hidden = true;
  }

  function phoneLabel(p) {
    if (!p) return '';
    const s = String(p).split('@')[0].split(':')[0];
    return /^\d+$/.test(s) ? '+' + s : s;
  }

  const STATUS_OF_PHASE = {
    Pending: 'initializing', Starting: 'initializing', AwaitingScan: 'qr', Connected: 'connected',
    Reconnecting: 'reconnecting', Disconnected: 'disconnected', LoggedOut: 'logged_out',
    Failed: 'failed', NotFound: 'disconnected',
  };

  const STATUS_TEXT = {
    disconnected: 'Disconnected', initializing: 'Starting…', qr: 'Scan the QR code',
    connected: 'Connected', reconnecting: 'Reconnecting…', logged_out: 'Logged out',
    failed: 'Failed',
  };

  function render() {
    if (!session) return;
    const s = session;
    const status = s.status || STATUS_OF_PHASE[s.phase] || 'disconnected';
    setState(status);
    ui.session.hidden = false;
    ui.messagesSection.hidden = false;
    ui.status.textContent = STATUS_TEXT[status] || status;
    ui.status.className = 'pill ' + status;
    ui.phase.textContent = s.phase || '—';
    ui.phone.textContent = phoneLabel(s.phoneNumber) || '—';
    ui.pushName.textContent = s.displayName || '—';
    ui.detail.textContent = s.lastError || s.detail || '—';

    const connected = status === 'connected';
    ui.connected.hidden = !connected;
    ui.connectedPhone.textContent = phoneLabel(s.phoneNumber) || 'your phone';
    ui.connectedName.textContent = s.displayName ? ' (' + s.displayName + ')' : '';

    const showQr = status === 'qr';
    ui.qr.hidden = !showQr;
    if (showQr && qrDataUrl) {
      if (ui.qrImage.getAttribute('src') !== qrDataUrl) ui.qrImage.src = qrDataUrl;
      ui.qrWaiting.hidden = true;
    } else {
      ui.qrImage.removeAttribute('src');
      ui.qrWaiting.hidden = false;
    }

    ui.connect.disabled = connected;
    ui.disconnect.disabled = s.desiredState === 'disconnected' && status === 'disconnected';
  }

  function applyStatus(s) {
    session = Object.assign({}, s);
    if (session.status !== 'qr') qrDataUrl = null;
    render();
  }

  // whatsapp-web.js ids are objects `{_serialized, ...}`; older answers had plain strings.
  function idOf(v) {
    return v && typeof v === 'object' ? String(v._serialized ?? v.id ?? '') : String(v ?? '');
  }

  function normalizeMessage(m) {
    const ts = Number(m.timestamp) || 0;
    return {
      id: idOf(m.id),
      chatId: String(m.chatId ?? m.chat ?? ''),
      from: String(m.from ?? m.sender ?? ''),
      fromMe: Boolean(m.fromMe),
      body: String(m.body ?? m.text ?? ''),
      ms: ts < 1e12 ? ts * 1000 : ts,
      pushName: String(m.pushName ?? ''),
      type: String(m.type ?? m.kind ?? 'text'),
    };
  }

  function addMessages(list) {
    for (const raw of list) {
      if (!raw || typeof raw !== 'object') continue;
      const m = normalizeMessage(raw);
      // `id._serialized` is unique per user (direction, chat and id).
      const key = m.id.includes('_') ? m.id : m.chatId + '|' + m.from + '|' + m.id;
      const known = messages.get(key);
      // Arrival order breaks ties: event timestamps are whole seconds.
      m.seq = known ? known.seq : ++arrivals;
      messages.set(key, m);
    }
    const keep = [...messages.entries()]
      .sort((a, b) => b[1].ms - a[1].ms || b[1].seq - a[1].seq)
      .slice(0, MAX_MESSAGES);
    messages.clear();
    for (const [k, v] of keep) messages.set(k, v);
    renderMessages();
  }

  function renderMessages() {
    const items = [];
    for (const m of messages.values()) {
      const li = document.createElement('li');
      li.dataset.testid = 'message';
      li.dataset.id = m.id;
      li.dataset.chat = m.chatId;
      if (m.fromMe) li.className = 'me';
      const meta = document.createElement('div');
      meta.className = 'msg-meta';
      const who = document.createElement('strong');
      who.textContent = m.fromMe ? 'You' : (m.pushName || phoneLabel(m.from) || 'unknown');
      meta.append(who);
      const group = m.chatId.endsWith('@g.us');
      if (m.fromMe || group) {
        const chat = document.createElement('span');
        chat.textContent = (m.fromMe ? '→ ' : 'in ') + phoneLabel(m.chatId);
        meta.append(chat);
      }
      if (m.ms) {
        const time = document.createElement('time');
        const d = new Date(m.ms);
        time.dateTime = d.toISOString();
        time.textContent = d.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
        meta.append(time);
      }
      const body = document.createElement('p');
      body.className = 'msg-body';
      body.dataset.testid = 'message-body';
      body.textContent = m.body || '[' + m.type + ']';
      li.append(meta, body);
      items.push(li);
    }
    ui.messages.replaceChildren(...items);
    ui.messagesEmpty.hidden = items.length > 0;
  }

  // ---- loading -----------------------------------------------------------------------------

  async function refreshStatus() {
    applyStatus(await api('GET', 'status'));
  }

  // Recent messages of the most recent chats. The session pod may not serve them yet (no
  // session, not started): that is not an error for the user.
  async function loadHistory() {
    let chats;
    try {
      chats = await api('GET', 'chats');
    } catch (e) {
      return;
    }
    const list = (Array.isArray(chats) ? chats : (chats && chats.chats) || []).slice(0, HISTORY_CHATS);
    const pages = await Promise.all(list.map((c) => {
      const id = idOf(c.id ?? c.chatId);
      return id
        ? api('GET', 'messages/' + encodeURIComponent(id) + '?limit=' + HISTORY_PER_CHAT).catch(() => [])
        : Promise.resolve([]);
    }));
    for (const page of pages) {
      addMessages(Array.isArray(page) ? page : (page && page.messages) || []);
    }
  }

  async function start() {
    setState('loading');
    try {
      await refreshStatus();
    } catch (e) {
      if (e.status !== 401) showError('Could not load the session: ' + e.message);
      if (!token) return;
    }
    openStream();
    loadHistory();
  }

  // ---- live events -------------------------------------------------------------------------

  // `data-live` on the body: `open` once the stream delivers, else `closed`.
  function setLive(text, cls, live) {
    ui.live.textContent = text;
    ui.live.className = 'pill' + (cls ? ' ' + cls : '');
    document.body.dataset.live = live || 'closed';
  }

  function openStream() {
    stopStream();
    if (!token) return;
    const gen = ++wsGeneration;
    const url = new URL('./', BASE);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    if (lastEventId) url.searchParams.set('since', lastEventId);
    setLive(retries ? 'reconnecting…' : 'connecting…');
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (e) {
      scheduleReconnect(gen);
      return;
    }
    ws = socket;
    socket.onmessage = (ev) => {
      if (gen !== wsGeneration) return;
      // The server subscribes before its first frame (the status): from here nothing is missed.
      if (document.body.dataset.live !== 'open') setLive('live', 'live', 'open');
      retries = 0;
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (!frame || typeof frame !== 'object') return;
      if (frame.id !== null && frame.id !== undefined) lastEventId = String(frame.id);
      onEvent(frame.type, frame.data || {});
    };
    socket.onclose = (ev) => {
      if (gen !== wsGeneration) return;
      ws = null;
      if (ev.code === CLOSE_TOKEN_EXPIRED) {
        tokenRejected('the token expired');
        return;
      }
      scheduleReconnect(gen);
    };
  }

  function stopStream() {
    wsGeneration++;
    clearTimeout(retryTimer);
    retryTimer = null;
    if (ws) {
      ws.onclose = null;
      ws.close();
      ws = null;
    }
    setLive('offline');
  }

  function scheduleReconnect(gen) {
    if (!token || gen !== wsGeneration) return;
    const base = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** retries);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    retries++;
    setLive('offline, retrying in ' + Math.ceil(delay / 1000) + ' s');
    retryTimer = setTimeout(async () => {
      if (gen !== wsGeneration) return;
      // A refused upgrade looks like any closed socket; the status call tells a rejected token
      // (it signs out) from a server that is away (try again), and refreshes what we show.
      try {
        await refreshStatus();
      } catch (e) {
        if (!token) return;
      }
      if (gen === wsGeneration) openStream();
    }, delay);
  }

  function onEvent(type, data) {
    switch (type) {
      case 'status':
        if ('userId' in data || 'isConnected' in data) {
          applyStatus(data);
        } else if (session) {
          const status = data.status || STATUS_OF_PHASE[data.phase] || session.status;
          Object.assign(session, {
            status,
            phase: data.phase || session.phase,
            detail: data.detail || '',
            reconnectCount: data.reconnectCount ?? session.reconnectCount,
          });
          if (status !== 'qr') qrDataUrl = null;
          render();
        }
        break;
      case 'qr':
        if (typeof data.qrDataUrl === 'string' && data.qrDataUrl.startsWith('data:image/')) {
          qrDataUrl = data.qrDataUrl;
          session = Object.assign(session || {}, { status: 'qr', phase: 'AwaitingScan' });
          render();
        }
        break;
      case 'ready':
        qrDataUrl = null;
        session = Object.assign(session || {}, {
          status: 'connected', phase: 'Connected', isConnected: true,
          phoneNumber: data.phone || (session && session.phoneNumber),
          displayName: data.pushName || (session && session.displayName),
          lastError: null, detail: '',
        });
        render();
        loadHistory();
        break;
      case 'disconnected':
        qrDataUrl = null;
        session = Object.assign(session || {}, {
          status: data.loggedOut ? 'logged_out' : 'disconnected',
          phase: data.loggedOut ? 'LoggedOut' : 'Disconnected',
          isConnected: false,
          detail: data.reason || '',
        });
        render();
        break;
      // `message_create`: every new message (own sends too); `message`: the inbound ones
      // again (the same message, filed once); `message_ack`: its delivery/read state rose.
      case 'message_create':
      case 'message':
      case 'message_ack':
        addMessages([data]);
        break;
      case 'error':
        showError((data.category ? data.category + ': ' : '') + (data.message || 'error'));
        break;
      default:
        // Unknown event types are for newer clients.
        break;
    }
  }

  // ---- actions -----------------------------------------------------------------------------

  async function action(button, path) {
    button.disabled = true;
    try {
      const r = await api('POST', path);
      clearError();
      applyStatus((r && r.session) || r);
      if (!ws && !retryTimer) openStream();
    } catch (e) {
      if (e.status !== 401) showError(button.textContent + ' failed: ' + e.message);
      render();
    } finally {
      if (!session) button.disabled = false;
    }
  }

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = ui.tokenInput.value.trim();
    ui.tokenInput.value = '';
    if (t) signIn(t);
  });
  ui.signout.addEventListener('click', () => signOut('signed_out'));
  ui.errorClose.addEventListener('click', clearError);
  ui.connect.addEventListener('click', () => action(ui.connect, 'connect'));
  ui.disconnect.addEventListener('click', () => {
    // Seed 003's disconnect logs the device out: linking it again takes a new scan.
    if (confirm('Disconnect and log this device out of WhatsApp? Linking it again needs a new QR scan.')) {
      action(ui.disconnect, 'disconnect');
    }
  });
  window.addEventListener('hashchange', () => {
    takeTokenFromFragment();
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t && t !== token) signIn(t);
  });

  el('boot').hidden = true;
  takeTokenFromFragment();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved);
  } else {
    signOut('signed_out');
  }
})();
