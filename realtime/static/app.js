// The chat page: one Socket.IO connection for all rooms, history from the same origin over HTTP.
// Message text only ever reaches the page through textContent, never as markup.
"use strict";

(() => {
  const HISTORY_PAGE = 50;
  const CATCH_UP_PAGE = 200;
  const ACK_TIMEOUT_MS = 10000;
  const TYPING_REPEAT_MS = 2000;
  const TYPING_IDLE_MS = 3000;
  // A typer whose "stopped" never arrives (closed tab, lost socket) fades after this long.
  const TYPING_SHOW_MS = 6000;
  const CATCH_UP_RETRIES = 10;
  // Missed more than this many messages: reload the newest page instead of catching up.
  const RESET_GAP = 1000;
  const SESSION_KEY = "chat.session";

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), whoami: $("whoami"), signOut: $("sign-out"),
    signIn: $("sign-in"), signInForm: $("sign-in-form"), nameField: $("name-field"),
    name: $("name"), token: $("token"), signInError: $("sign-in-error"),
    chat: $("chat"), joinForm: $("join-form"), joinRoom: $("join-room"), joinError: $("join-error"),
    roomList: $("room-list"), roomTitle: $("room-title"), roomNote: $("room-note"),
    timeline: $("timeline"), typing: $("typing"), composer: $("composer"), text: $("text"),
    send: $("send"), presence: $("presence"),
  };

  const state = {
    config: { dev_auth: false },
    auth: null, // {user} or {token}
    user: null,
    socket: null,
    rooms: new Map(),
    current: null,
  };

  // ----- small helpers -----

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newClientMsgId() {
    // getRandomValues works on plain http too, where crypto.randomUUID does not exist.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function tokenSubject(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return typeof claims.sub === "string" ? claims.sub : null;
    } catch {
      return null;
    }
  }

  function describe(error) {
    if (!error) return "unknown error";
    if (error.code === "rate_limited" && error.retry_after_ms) {
      const seconds = Math.round(error.retry_after_ms / 1000);
      if (seconds < 1) return "Too fast: sending again in a moment";
      return `Too fast: retrying in ${seconds} s`;
    }
    return error.message || error.code;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function setStatus(name, text) {
    ui.status.dataset.state = name;
    ui.status.textContent = text || name;
  }

  function saveSession() {
    const session = { auth: state.auth, rooms: [...state.rooms.keys()], current: state.current };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }

  function loadSession() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      return null;
    }
  }

  async function emitAck(event, payload) {
    try {
      return await state.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
    } catch {
      return { ok: false, error: { code: "timeout", message: "no answer from the server" } };
    }
  }

  // ----- history over HTTP -----

  class HttpError extends Error {
    constructor(status, error) {
      super(describe(error));
      this.status = status;
      this.error = error;
    }
  }

  async function fetchHistory(room, params) {
    const query = new URLSearchParams(params);
    const headers = state.auth.token
      ? { Authorization: `Bearer ${state.auth.token}` }
      : { "X-User": state.auth.user };
    let delay = 500;
    for (let attempt = 1; ; attempt++) {
      let response;
      try {
        response = await fetch(`/rooms/${encodeURIComponent(room)}/messages?${query}`, { headers });
      } catch (exc) {
        if (attempt >= 4) throw exc;
        await sleep(delay);
        delay *= 2;
        continue;
      }
      const body = await response.json().catch(() => ({}));
      if (response.ok) return body;
      // Client errors will not heal by retrying; an unavailable history function may.
      if (response.status < 500 || attempt >= 4) throw new HttpError(response.status, body.error);
      await sleep(delay);
      delay *= 2;
    }
  }

  // ----- rooms and their timelines -----

  function newRoom(name) {
    const list = el("ol", "messages");
    list.dataset.room = name;
    list.hidden = true;
    ui.timeline.append(list);

    const item = el("li", "room-item");
    item.dataset.room = name;
    const open = el("button", "room-name", `#${name}`);
    open.type = "button";
    open.addEventListener("click", () => select(name));
    const unread = el("span", "unread");
    const leave = el("button", "leave", "×");
    leave.type = "button";
    leave.title = `Leave #${name}`;
    leave.setAttribute("aria-label", `Leave ${name}`);
    leave.addEventListener("click", () => leaveRoom(name));
    item.append(open, unread, leave);
    ui.roomList.append(item);

    return {
      name, list, item, unreadEl: unread, unread: 0,
      byId: new Map(), // final message id -> element
      pending: new Map(), // client_msg_id -> element, own messages not yet confirmed
      seqs: new Set(),
      lastSeq: 0, // every seq of the loaded window up to here is shown
      maxSeq: 0,
      knownLast: 0, // the server's last seq, from the latest join ack
      loaded: false,
      joined: false,
      syncing: false,
      generation: 0,
      catchingUp: false,
      catchUpAgain: false,
      catchUpRetries: 0,
      nextBeforeSeq: null,
      loadingOlder: false,
      presence: [],
      typers: new Map(),
      typingSentAt: 0,
      typingStop: null,
      sendChain: Promise.resolve(),
      note: "",
    };
  }

  function currentRoom() {
    return state.current ? state.rooms.get(state.current) : undefined;
  }

  function select(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    state.current = name;
    for (const other of state.rooms.values()) {
      other.list.hidden = other !== room;
      other.item.classList.toggle("active", other === room);
    }
    room.unread = 0;
    room.unreadEl.textContent = "";
    ui.roomTitle.textContent = `#${name}`;
    renderNote(room);
    renderPresence(room);
    renderTyping(room);
    updateComposer();
    scrollToBottom();
    saveSession();
    fillViewport(room);
  }

  function setNote(room, text) {
    room.note = text;
    if (room === currentRoom()) renderNote(room);
  }

  function renderNote(room) {
    ui.roomNote.textContent = room.note;
  }

  function updateComposer() {
    const room = currentRoom();
    const usable = Boolean(room && room.joined && state.socket && state.socket.connected);
    ui.text.disabled = !room;
    ui.send.disabled = !usable;
  }

  async function joinRoom(name) {
    let room = state.rooms.get(name);
    if (!room) {
      room = newRoom(name);
      state.rooms.set(name, room);
    }
    select(name);
    if (state.socket && state.socket.connected) await syncRoom(room);
  }

  async function leaveRoom(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    stopTyping(room);
    state.rooms.delete(name);
    room.list.remove();
    room.item.remove();
    if (state.socket && state.socket.connected) await emitAck("leave", { room: name });
    if (state.current === name) {
      state.current = null;
      const next = state.rooms.keys().next();
      if (!next.done) {
        select(next.value);
      } else {
        ui.roomTitle.textContent = "Join a room";
        ui.roomNote.textContent = "";
        ui.presence.replaceChildren();
        ui.typing.textContent = "";
        updateComposer();
      }
    }
    saveSession();
  }

  // Joins (or re-joins after a reconnect) and brings the room's timeline up to date.
  async function syncRoom(room) {
    const generation = ++room.generation;
    const stale = () => generation !== room.generation || state.rooms.get(room.name) !== room;
    room.syncing = true;
    room.joined = false;
    updateComposer();
    const payload = { room: room.name };
    if (room.loaded) payload.since_seq = room.lastSeq;
    // Replayed messages arrive as `message` events before this ack.
    const ack = await emitAck("join", payload);
    if (stale()) return;
    if (!ack.ok) {
      room.syncing = false;
      room.item.classList.add("failed");
      setNote(room, describe(ack.error));
      return;
    }
    room.item.classList.remove("failed");
    room.joined = true;
    room.knownLast = Math.max(room.knownLast, ack.last_seq || 0);
    setNote(room, "");
    updateComposer();
    // Away for long: show the newest page again rather than page through everything missed.
    if (ack.gap && room.knownLast - room.lastSeq > RESET_GAP) resetTimeline(room);
    if (!room.loaded) {
      try {
        const page = await fetchHistory(room.name, { limit: HISTORY_PAGE });
        if (stale()) return;
        // The window starts at the page's oldest message; older ones come on scroll-up.
        if (page.messages.length) room.lastSeq = Math.max(room.lastSeq, page.messages[0].seq - 1);
        room.nextBeforeSeq = page.next_before_seq;
        keepScroll(room === currentRoom(), () => page.messages.forEach((m) => receive(m)));
        room.loaded = true;
      } catch (exc) {
        // Live messages still flow; the next reconnect or join tries the history again.
        room.syncing = false;
        setNote(room, `No history: ${exc.message}`);
        flushPending(room);
        return;
      }
    }
    room.syncing = false;
    advance(room);
    if (ack.gap || behind(room)) await catchUp(room);
    fillViewport(room);
    flushPending(room);
  }

  function resetTimeline(room) {
    for (const li of [...room.list.children]) {
      if (li.dataset.state === "confirmed") li.remove();
    }
    room.byId.clear();
    room.seqs.clear();
    room.lastSeq = 0;
    room.maxSeq = 0;
    room.nextBeforeSeq = null;
    room.loaded = false;
  }

  function advance(room) {
    while (room.seqs.has(room.lastSeq + 1)) room.lastSeq += 1;
  }

  function behind(room) {
    return room.lastSeq < Math.max(room.maxSeq, room.knownLast);
  }

  // Fills a hole in the timeline (missed while away, or trimmed from the fast replay path).
  async function catchUp(room) {
    if (room.catchingUp) {
      room.catchUpAgain = true;
      return;
    }
    room.catchingUp = true;
    try {
      do {
        room.catchUpAgain = false;
        while (behind(room) && state.rooms.get(room.name) === room) {
          const page = await fetchHistory(room.name, {
            after_seq: room.lastSeq, limit: CATCH_UP_PAGE,
          });
          const before = room.lastSeq;
          const stick = room === currentRoom() && nearBottom();
          keepScroll(stick, () => page.messages.forEach((m) => receive(m)));
          advance(room);
          if (room.lastSeq === before) throw new Error("history does not have it yet");
        }
      } while (room.catchUpAgain);
      room.catchUpRetries = 0;
      if (room.note.startsWith("Catching up")) setNote(room, "");
    } catch (exc) {
      if (room.catchUpRetries++ < CATCH_UP_RETRIES) {
        setNote(room, "Catching up…");
        setTimeout(() => catchUp(room), 1000);
      } else {
        setNote(room, `Some messages could not be loaded: ${exc.message}`);
      }
    } finally {
      room.catchingUp = false;
    }
  }

  async function loadOlder(room) {
    if (!room || !room.loaded || room.loadingOlder || room.nextBeforeSeq == null) return;
    room.loadingOlder = true;
    try {
      const page = await fetchHistory(room.name, {
        before_seq: room.nextBeforeSeq, limit: HISTORY_PAGE,
      });
      // Prepending must not move what the reader is looking at.
      const fromBottom = ui.timeline.scrollHeight - ui.timeline.scrollTop;
      page.messages.forEach((m) => receive(m));
      ui.timeline.scrollTop = ui.timeline.scrollHeight - fromBottom;
      room.nextBeforeSeq = page.next_before_seq;
    } catch (exc) {
      setNote(room, `Older messages unavailable: ${exc.message}`);
    } finally {
      room.loadingOlder = false;
    }
  }

  // Without a scrollbar there is no scroll-up: load older pages until there is one.
  async function fillViewport(room) {
    while (room === currentRoom() && room.nextBeforeSeq != null && !room.loadingOlder &&
           ui.timeline.scrollHeight <= ui.timeline.clientHeight) {
      const before = room.nextBeforeSeq;
      await loadOlder(room);
      if (room.nextBeforeSeq === before) return;
    }
  }

  // ----- messages -----

  function messageElement() {
    const li = el("li", "msg");
    const meta = el("div", "meta");
    meta.append(el("span", "sender"), el("time", "time"), el("span", "state"));
    const actions = el("div", "actions");
    li.append(meta, el("div", "text"), el("div", "error"), actions);
    return li;
  }

  function fill(li, msg, stateName) {
    li.querySelector(".sender").textContent = msg.sender;
    const time = li.querySelector(".time");
    const at = new Date(msg.ts);
    time.dateTime = msg.ts;
    time.textContent = Number.isNaN(at.getTime())
      ? "" : at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.querySelector(".text").textContent = msg.text;
    li.classList.toggle("mine", msg.sender === state.user);
    li.dataset.clientMsgId = msg.client_msg_id;
    if (msg.id) li.dataset.id = msg.id;
    if (msg.seq) li.dataset.seq = String(msg.seq);
    setState(li, stateName);
  }

  function setState(li, stateName, error) {
    li.dataset.state = stateName;
    const labels = { pending: "sending…", sent: "sent", confirmed: "", failed: "not sent" };
    li.querySelector(".state").textContent = labels[stateName];
    li.querySelector(".error").textContent = error ? describe(error) : "";
    li.querySelector(".actions").replaceChildren();
  }

  // Confirmed messages sit in seq order; pending ones stay after them.
  function place(room, li, seq) {
    let after = room.list.lastElementChild;
    while (after && (!after.dataset.seq || Number(after.dataset.seq) > seq)) {
      after = after.previousElementSibling;
    }
    if (after) after.after(li);
    else room.list.prepend(li);
  }

  // Shows a message from any source (live, replay, history) exactly once.
  function receive(msg) {
    const room = state.rooms.get(msg.room);
    if (!room || typeof msg.seq !== "number") return false;
    let li = room.byId.get(msg.id);
    if (!li && msg.sender === state.user) li = room.pending.get(msg.client_msg_id);
    if (li && li.dataset.state === "confirmed") return false;
    if (li) {
      room.pending.delete(msg.client_msg_id);
      li.remove();
    } else {
      li = messageElement();
    }
    fill(li, msg, "confirmed");
    room.byId.set(msg.id, li);
    room.seqs.add(msg.seq);
    room.maxSeq = Math.max(room.maxSeq, msg.seq);
    place(room, li, msg.seq);
    return true;
  }

  function onLiveMessage(msg) {
    const room = state.rooms.get(msg && msg.room);
    if (!room) return;
    const stick = room === currentRoom() && nearBottom();
    if (!receive(msg)) return;
    clearTyper(room, msg.sender);
    if (room !== currentRoom() && msg.sender !== state.user) {
      room.unread += 1;
      room.unreadEl.textContent = String(room.unread);
    }
    if (stick) scrollToBottom();
    if (room.syncing) return;
    advance(room);
    if (behind(room)) catchUp(room);
  }

  function sendText(text) {
    const room = currentRoom();
    if (!room) return;
    const msg = {
      room: room.name, text, client_msg_id: newClientMsgId(),
      sender: state.user, ts: new Date().toISOString(),
    };
    const li = messageElement();
    fill(li, msg, "pending");
    li.payload = { room: msg.room, text: msg.text, client_msg_id: msg.client_msg_id };
    room.pending.set(msg.client_msg_id, li);
    room.list.append(li);
    scrollToBottom();
    stopTyping(room);
    queueDelivery(room, li);
  }

  // One send at a time per room, so the room sees this user's messages in typing order.
  function queueDelivery(room, li) {
    room.sendChain = room.sendChain.then(() => deliver(room, li));
  }

  // Retries happen here, holding the room's queue, so a retried message keeps its place.
  async function deliver(room, li) {
    let ack;
    for (;;) {
      if (li.dataset.state !== "pending" || !li.isConnected) return;
      // Offline or not (re)joined yet: the message waits and goes out after the join.
      if (!state.socket || !state.socket.connected || !room.joined) return;
      ack = await emitAck("send", li.payload);
      if (li.dataset.state === "confirmed") return;
      if (ack.ok) {
        // Accepted durably; its `message` event (with the seq) confirms it.
        li.dataset.id = ack.id;
        room.byId.set(ack.id, li);
        setState(li, "sent");
        return;
      }
      // Re-sending the same client_msg_id never makes a second message: retrying is safe.
      const code = ack.error && ack.error.code;
      if (code === "not_member") return; // the socket lost the room: resent after the re-join
      if (code === "timeout" || code === "unavailable") {
        await sleep(1000);
        continue;
      }
      if (code === "rate_limited") {
        // retry_after_ms sits beside `ok` in the ack.
        const retryAfterMs = Number(ack.retry_after_ms ?? ack.error.retry_after_ms) || 1000;
        setState(li, "pending", { ...ack.error, retry_after_ms: retryAfterMs });
        await sleep(retryAfterMs);
        continue;
      }
      break;
    }
    setState(li, "failed", ack.error);
    const retry = el("button", "link", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      setState(li, "pending");
      queueDelivery(room, li);
    });
    const discard = el("button", "link", "Discard");
    discard.type = "button";
    discard.addEventListener("click", () => {
      room.pending.delete(li.dataset.clientMsgId);
      li.remove();
    });
    li.querySelector(".actions").append(retry, discard);
  }

  function flushPending(room) {
    for (const li of room.pending.values()) {
      if (li.dataset.state === "pending") queueDelivery(room, li);
    }
  }

  // ----- typing and presence -----

  function onTypingInput() {
    const room = currentRoom();
    if (!room || !room.joined || !state.socket || !state.socket.connected) return;
    const now = Date.now();
    if (now - room.typingSentAt > TYPING_REPEAT_MS) {
      room.typingSentAt = now;
      state.socket.emit("typing", { room: room.name, typing: true });
    }
    clearTimeout(room.typingStop);
    room.typingStop = setTimeout(() => stopTyping(room), TYPING_IDLE_MS);
  }

  function stopTyping(room) {
    clearTimeout(room.typingStop);
    if (!room.typingSentAt) return;
    room.typingSentAt = 0;
    if (state.socket && state.socket.connected && room.joined) {
      state.socket.emit("typing", { room: room.name, typing: false });
    }
  }

  function onTyping(event) {
    const room = state.rooms.get(event && event.room);
    if (!room || event.user === state.user) return;
    clearTyper(room, event.user);
    if (event.typing) {
      room.typers.set(event.user, setTimeout(() => clearTyper(room, event.user), TYPING_SHOW_MS));
    }
    renderTyping(room);
  }

  function clearTyper(room, user) {
    if (!room.typers.has(user)) return;
    clearTimeout(room.typers.get(user));
    room.typers.delete(user);
    renderTyping(room);
  }

  function renderTyping(room) {
    if (room !== currentRoom()) return;
    const users = [...room.typers.keys()];
    let text = "";
    if (users.length === 1) text = `${users[0]} is typing…`;
    else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
    else if (users.length > 2) text = `${users.length} people are typing…`;
    ui.typing.textContent = text;
  }

  function onPresence(event) {
    const room = state.rooms.get(event && event.room);
    if (!room || !Array.isArray(event.users)) return;
    room.presence = [...event.users].sort();
    renderPresence(room);
  }

  function renderPresence(room) {
    if (room !== currentRoom()) return;
    ui.presence.replaceChildren(...room.presence.map((user) => {
      const li = el("li", user === state.user ? "me" : "", user);
      return li;
    }));
  }

  // ----- scrolling -----

  function nearBottom() {
    const t = ui.timeline;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 48;
  }

  function scrollToBottom() {
    ui.timeline.scrollTop = ui.timeline.scrollHeight;
  }

  function keepScroll(stick, change) {
    change();
    if (stick) scrollToBottom();
  }

  // ----- connection -----

  function connect() {
    // WebSocket only: it needs no sticky sessions behind the load balancer.
    const socket = io({
      transports: ["websocket"],
      auth: state.auth,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      timeout: 10000,
    });
    state.socket = socket;
    socket.on("connect", () => {
      setStatus("online");
      for (const room of state.rooms.values()) syncRoom(room);
      updateComposer();
    });
    socket.on("disconnect", (reason) => {
      setStatus("reconnecting", "reconnecting…");
      for (const room of state.rooms.values()) room.joined = false;
      updateComposer();
      // The client only retries on its own after a lost transport, not after a server goodbye.
      if (reason === "io server disconnect") socket.connect();
    });
    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting", "reconnecting…");
        return;
      }
      // Refused by the server (bad name or token): retrying would be refused again.
      signOut(err.data && err.data.message ? err.data.message : err.message);
    });
    socket.on("message", onLiveMessage);
    socket.on("typing", onTyping);
    socket.on("presence", onPresence);
  }

  function signIn(auth, rooms, current) {
    state.auth = auth;
    state.user = auth.token ? tokenSubject(auth.token) : auth.user;
    ui.whoami.textContent = state.user || "";
    ui.signIn.hidden = true;
    ui.chat.hidden = false;
    ui.signOut.hidden = false;
    for (const name of rooms || []) {
      if (!state.rooms.has(name)) state.rooms.set(name, newRoom(name));
    }
    const first = current && state.rooms.has(current) ? current : state.rooms.keys().next().value;
    if (first) select(first);
    saveSession();
    setStatus("connecting", "connecting…");
    connect();
    ui.joinRoom.focus();
  }

  function signOut(reason) {
    if (state.socket) {
      state.socket.removeAllListeners();
      state.socket.disconnect();
      state.socket = null;
    }
    for (const room of state.rooms.values()) {
      room.list.remove();
      room.item.remove();
    }
    state.rooms.clear();
    state.current = null;
    state.auth = null;
    state.user = null;
    sessionStorage.removeItem(SESSION_KEY);
    ui.chat.hidden = true;
    ui.signOut.hidden = true;
    ui.signIn.hidden = false;
    ui.whoami.textContent = "";
    ui.signInError.textContent = reason || "";
    setStatus("offline");
  }

  // ----- wiring -----

  ui.signInForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.token.value.trim();
    const name = ui.name.value.trim();
    if (token) {
      signIn({ token }, [], null);
    } else if (!state.config.dev_auth) {
      ui.signInError.textContent = "Paste a token";
    } else if (!/^[\x20-\x7e]{1,64}$/.test(name)) {
      // The name travels in an HTTP header to the history function: plain ASCII only.
      ui.signInError.textContent = "Enter a name: 1-64 plain ASCII characters, or a token";
    } else {
      signIn({ user: name }, [], null);
    }
  });

  ui.signOut.addEventListener("click", () => signOut(""));

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.joinRoom.value.trim();
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) {
      ui.joinError.textContent = "Room names: 1-64 letters, digits, _ . : -";
      return;
    }
    ui.joinError.textContent = "";
    ui.joinRoom.value = "";
    joinRoom(name);
  });

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.text.value;
    if (!text.trim()) return;
    ui.text.value = "";
    sendText(text);
  });

  ui.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.text.addEventListener("input", onTypingInput);

  ui.timeline.addEventListener("scroll", () => {
    if (ui.timeline.scrollTop < 80) loadOlder(currentRoom());
  });

  async function start() {
    if (typeof io !== "function") {
      ui.signInError.textContent =
        "The Socket.IO client is missing on the server: run scripts/bootstrap.sh.";
      return;
    }
    try {
      const response = await fetch("/config.json");
      if (response.ok) state.config = await response.json();
    } catch {
      // Without the config the page still works with tokens.
    }
    ui.nameField.hidden = !state.config.dev_auth;
    const session = loadSession();
    if (session && session.auth) signIn(session.auth, session.rooms, session.current);
    else (state.config.dev_auth ? ui.name : ui.token).focus();
  }

  start();
})();
