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
  const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
  const QUOTE_CHARS = 80;
  // Reads go out at most this often per room while messages keep coming.
  const READ_DELAY_MS = 250;
  // Rooms listed from the server on a fresh sign-in (GET /me/rooms); joined when opened.
  const LISTED_ROOMS = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), whoami: $("whoami"), signOut: $("sign-out"),
    signIn: $("sign-in"), signInForm: $("sign-in-form"), nameField: $("name-field"),
    name: $("name"), token: $("token"), signInError: $("sign-in-error"),
    chat: $("chat"), joinForm: $("join-form"), joinRoom: $("join-room"), joinError: $("join-error"),
    roomList: $("room-list"), roomTitle: $("room-title"), roomNote: $("room-note"),
    timeline: $("timeline"), typing: $("typing"), composer: $("composer"), text: $("text"),
    send: $("send"), presence: $("presence"),
    context: $("compose-context"), contextText: $("compose-context-text"),
    contextCancel: $("compose-cancel"),
  };

  const state = {
    config: { dev_auth: false },
    auth: null, // {user} or {token}
    user: null,
    socket: null,
    rooms: new Map(),
    current: null,
    compose: null, // {kind: "reply" | "edit", room, li}
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

  // An op's refusal, said for a person: what happened and what to do.
  function describeOp(what, error) {
    const code = error && error.code;
    const reasons = {
      forbidden: "only its sender can do that",
      not_found: "that message is gone (deleted, or not in this room)",
      not_member: "you are not in this room any more: open it again",
      invalid_emoji: "that emoji is not accepted",
      too_many_emojis: "this message has too many different emojis: pick one it has",
      rate_limited: "too fast: try again in a moment",
      timeout: "no answer from the server: try again",
      unavailable: "the server is busy: try again",
    };
    return `${what}: ${reasons[code] || describe(error)}`;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function setStatus(name, text) {
    ui.status.dataset.state = name;
    ui.status.textContent = text || name;
  }

  function saveSession() {
    const rooms = [...state.rooms.values()].filter((r) => !r.listed).map((r) => r.name);
    const session = { auth: state.auth, rooms, current: state.current };
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

  // GET from the history function, through the page's own origin.
  async function fetchJson(path, params) {
    const query = params ? `?${new URLSearchParams(params)}` : "";
    const headers = state.auth.token
      ? { Authorization: `Bearer ${state.auth.token}` }
      : { "X-User": state.auth.user };
    let delay = 500;
    for (let attempt = 1; ; attempt++) {
      let response;
      try {
        response = await fetch(`${path}${query}`, { headers });
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

  function roomPath(room, tail) {
    return `/rooms/${encodeURIComponent(room)}/${tail}`;
  }

  function fetchHistory(room, params) {
    return fetchJson(roomPath(room, "messages"), params);
  }

  // ----- rooms and their timelines -----

  function newRoom(name, listed) {
    const list = el("ol", "messages");
    list.dataset.room = name;
    list.hidden = true;
    ui.timeline.append(list);

    const item = el("li", "room-item");
    item.dataset.room = name;
    const open = el("button", "room-name", `#${name}`);
    open.type = "button";
    open.addEventListener("click", () => joinRoom(name));
    const unread = el("span", "unread");
    unread.title = "unread messages";
    const leave = el("button", "leave", "×");
    leave.type = "button";
    leave.title = `Leave #${name}`;
    leave.setAttribute("aria-label", `Leave ${name}`);
    leave.addEventListener("click", () => leaveRoom(name));
    item.append(open, unread, leave);
    ui.roomList.append(item);

    return {
      name, list, item, unreadEl: unread, unread: 0,
      // Listed from GET /me/rooms: shown with its unread count, joined once opened.
      listed: Boolean(listed),
      byId: new Map(), // final message id -> element
      pending: new Map(), // client_msg_id -> element, own messages not yet confirmed
      orphans: new Map(), // message id -> events that came before the message itself
      seqs: new Set(), // seqs of the room events applied
      base: 0, // the window's events start after this seq; older messages come from history
      lastSeq: 0, // every room event of the window up to here is applied
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
      readSent: 0, // the read position told to the server
      readTimer: null,
      readers: new Map(), // other member -> last_read_seq, from their `read` events
      seenEl: el("p", "seen"),
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
    if (state.current !== name) endCompose();
    state.current = name;
    for (const other of state.rooms.values()) {
      other.list.hidden = other !== room;
      other.item.classList.toggle("active", other === room);
    }
    ui.roomTitle.textContent = `#${name}`;
    renderNote(room);
    renderPresence(room);
    renderTyping(room);
    updateComposer();
    scrollToBottom();
    saveSession();
    fillViewport(room);
    markRead(room);
  }

  function setUnread(room, count) {
    room.unread = Math.max(0, count);
    room.unreadEl.textContent = room.unread ? String(room.unread) : "";
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
    const wasListed = room.listed;
    room.listed = false;
    select(name);
    if (state.socket && state.socket.connected && (wasListed || !room.joined)) {
      await syncRoom(room);
    }
  }

  async function leaveRoom(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    stopTyping(room);
    clearTimeout(room.readTimer);
    state.rooms.delete(name);
    room.list.remove();
    room.item.remove();
    if (state.socket && state.socket.connected && !room.listed) {
      await emitAck("leave", { room: name });
    }
    if (state.current === name) {
      state.current = null;
      endCompose();
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

  // A fresh sign-in lists the rooms the user is in, with their unread counts, as persisted.
  async function listMyRooms() {
    let body;
    try {
      body = await fetchJson("/me/rooms");
    } catch {
      return; // the rooms joined in this browser still work
    }
    const rooms = Array.isArray(body.rooms) ? body.rooms : [];
    rooms.sort((a, b) => (b.unread || 0) - (a.unread || 0) || (a.room < b.room ? -1 : 1));
    for (const entry of rooms.slice(0, LISTED_ROOMS)) {
      if (!state.auth || typeof entry.room !== "string" || state.rooms.has(entry.room)) continue;
      const room = newRoom(entry.room, true);
      state.rooms.set(entry.room, room);
      setUnread(room, Number(entry.unread) || 0);
    }
  }

  // Joins (or re-joins after a reconnect) and brings the room's timeline up to date.
  async function syncRoom(room) {
    if (room.listed) return;
    const generation = ++room.generation;
    const stale = () => generation !== room.generation || state.rooms.get(room.name) !== room;
    room.syncing = true;
    room.joined = false;
    updateComposer();
    const payload = { room: room.name };
    if (room.loaded) payload.since_seq = room.lastSeq;
    // Replayed room events arrive before this ack.
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
    room.readSent = Math.max(room.readSent, ack.last_read_seq || 0);
    setUnread(room, ack.unread || 0);
    setNote(room, "");
    updateComposer();
    // Away for long: show the newest page again rather than page through everything missed.
    if (ack.gap && room.knownLast - room.lastSeq > RESET_GAP) resetTimeline(room);
    if (!room.loaded) {
      try {
        // The newest page tells where the window starts; its events then come from the
        // room's event log, so edits, deletes and reactions are exact (and your own known).
        const page = await fetchHistory(room.name, { limit: HISTORY_PAGE });
        if (stale()) return;
        const first = page.messages.length ? page.messages[0].seq : room.knownLast + 1;
        setBase(room, Math.max(room.lastSeq, first - 1));
        room.nextBeforeSeq = page.next_before_seq;
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
    // gap: the server could not replay everything missed; the event log has it all.
    if (ack.gap || behind(room)) await catchUp(room);
    fillViewport(room);
    flushPending(room);
    markRead(room);
  }

  function setBase(room, base) {
    room.base = base;
    room.lastSeq = Math.max(room.lastSeq, base);
    // Older messages come from history in their current state, these events included.
    for (const [id, events] of room.orphans) {
      if (events[0].event.msg_seq <= base) room.orphans.delete(id);
    }
  }

  function resetTimeline(room) {
    for (const li of [...room.list.children]) {
      if (li.dataset.state === "confirmed") li.remove();
    }
    room.byId.clear();
    room.seqs.clear();
    room.orphans.clear();
    room.base = 0;
    room.lastSeq = 0;
    room.maxSeq = 0;
    room.nextBeforeSeq = null;
    room.loaded = false;
  }

  function advance(room) {
    while (room.seqs.has(room.lastSeq + 1)) {
      room.lastSeq += 1;
      room.seqs.delete(room.lastSeq);
    }
  }

  function behind(room) {
    return room.lastSeq < Math.max(room.maxSeq, room.knownLast);
  }

  // Fills a hole in the timeline (missed while away, or past what a join replays) from the
  // room's event log: every kind, so edits, deletes and reactions are repaired too.
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
          const page = await fetchJson(roomPath(room.name, "events"), {
            after_seq: room.lastSeq, limit: CATCH_UP_PAGE,
          });
          const before = room.lastSeq;
          const stick = room === currentRoom() && nearBottom();
          keepScroll(stick, () => {
            for (const event of page.events || []) applyEvent(event.type, event);
          });
          advance(room);
          if (room.lastSeq === before) throw new Error("history does not have it yet");
        }
      } while (room.catchUpAgain);
      room.catchUpRetries = 0;
      if (room.note.startsWith("Catching up")) setNote(room, "");
      markRead(room);
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
      page.messages.forEach((m) => showStored(room, m));
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

  // ----- read positions -----

  // The room is in front of the reader: tell the server what was shown (at once, then at
  // most once per READ_DELAY_MS while messages keep coming).
  function markRead(room) {
    if (!room || room !== currentRoom() || document.visibilityState !== "visible") return;
    setUnread(room, 0);
    if (room.readTimer || !room.joined || room.lastSeq <= room.readSent) return;
    const seq = room.lastSeq;
    room.readSent = seq;
    room.readTimer = setTimeout(() => {
      room.readTimer = null;
      markRead(room);
    }, READ_DELAY_MS);
    emitAck("read", { room: room.name, seq }).then((ack) => {
      if (ack.ok) {
        room.readSent = Math.max(room.readSent, ack.last_read_seq || 0);
      } else if (room.readSent === seq) {
        room.readSent = 0; // told again with the next message, or on the next join
      }
    });
  }

  function onRead(event) {
    const room = state.rooms.get(event && event.room);
    if (!room || event.user === state.user || typeof event.last_read_seq !== "number") return;
    const before = room.readers.get(event.user) || 0;
    room.readers.set(event.user, Math.max(before, event.last_read_seq));
    renderSeen(room);
  }

  // "Seen by" under the user's newest message: the members whose read position is past it.
  function renderSeen(room) {
    let last = null;
    for (const li of room.byId.values()) {
      if (li.info && li.info.sender === state.user && li.dataset.state === "confirmed" &&
          !li.info.deleted && (!last || li.info.seq > last.info.seq)) last = li;
    }
    const seers = last
      ? [...room.readers].filter(([, seq]) => seq >= last.info.seq).map(([u]) => u).sort()
      : [];
    if (!seers.length) {
      room.seenEl.remove();
      return;
    }
    room.seenEl.textContent = `Seen by ${seers.join(", ")}`;
    if (room.seenEl.parentNode !== last) last.append(room.seenEl);
  }

  // ----- messages -----

  function messageElement() {
    const li = el("li", "msg");
    const quote = el("button", "quote");
    quote.type = "button";
    quote.hidden = true;
    quote.addEventListener("click", () => {
      const room = roomOf(li);
      const parent = room && room.byId.get(li.info.replyTo);
      if (parent) parent.scrollIntoView({ block: "center" });
    });
    const meta = el("div", "meta");
    meta.append(el("span", "sender"), el("time", "time"), el("span", "edited"),
      el("span", "state"));
    const actions = el("div", "actions");
    const replies = el("div", "replies");
    const thread = el("ol", "thread");
    thread.hidden = true;
    li.append(quote, meta, el("div", "text"), el("div", "error"), actions,
      el("div", "reactions"), el("div", "tools"), replies, thread);
    li.info = {
      id: null, seq: 0, sender: "", text: "", replyTo: null, version: 1, edited: false,
      deleted: false, counts: new Map(), mine: new Set(), reacted: new Map(), replyCount: 0,
    };
    return li;
  }

  function fill(li, msg, stateName) {
    const info = li.info;
    info.sender = msg.sender;
    info.text = msg.text;
    info.replyTo = typeof msg.reply_to === "string" ? msg.reply_to : null;
    if (msg.id) info.id = msg.id;
    if (msg.seq) info.seq = msg.seq;
    li.querySelector(".sender").textContent = msg.sender;
    const time = li.querySelector(".time");
    const at = new Date(msg.ts);
    time.dateTime = msg.ts;
    time.textContent = Number.isNaN(at.getTime())
      ? "" : at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
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
    render(li);
  }

  function button(className, text, onClick, label) {
    const b = el("button", className, text);
    b.type = "button";
    if (label) {
      b.title = label;
      b.setAttribute("aria-label", label);
    }
    b.addEventListener("click", onClick);
    return b;
  }

  function roomOf(li) {
    const list = li.closest("ol.messages");
    return list ? state.rooms.get(list.dataset.room) : undefined;
  }

  // What a reply shows of the message it answers: its sender and the start of its text.
  function quoteOf(parent) {
    if (!parent) return "↪ an earlier message";
    if (parent.info.deleted) return "↪ a deleted message";
    const text = parent.info.text.replace(/\s+/g, " ").trim();
    const start = text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text;
    return `↪ ${parent.info.sender}: ${start}`;
  }

  // Draws a message from its state: text or tombstone, quote, reactions and controls.
  function render(li) {
    const info = li.info;
    const room = roomOf(li);
    const confirmed = li.dataset.state === "confirmed";
    li.classList.toggle("deleted", info.deleted);
    const text = li.querySelector(".text");
    text.textContent = info.deleted ? "message deleted" : info.text;
    li.querySelector(".edited").textContent = info.edited && !info.deleted ? "(edited)" : "";

    const quote = li.querySelector(".quote");
    quote.hidden = !info.replyTo || info.deleted;
    if (info.replyTo) {
      quote.dataset.for = info.replyTo;
      quote.textContent = quoteOf(room && room.byId.get(info.replyTo));
    }

    const chips = [];
    if (confirmed && !info.deleted) {
      for (const [emoji, count] of info.counts) {
        const mine = info.mine.has(emoji);
        const chip = button(mine ? "chip mine" : "chip", `${emoji} ${count}`,
          () => react(li, emoji, !info.mine.has(emoji)),
          mine ? `Take back ${emoji}` : `React ${emoji}`);
        chip.dataset.emoji = emoji;
        chip.setAttribute("aria-pressed", String(mine));
        chips.push(chip);
      }
    }
    li.querySelector(".reactions").replaceChildren(...chips);

    const tools = [];
    if (confirmed && !info.deleted) {
      tools.push(button("link", "Reply", () => beginCompose("reply", li)));
      if (info.sender === state.user) {
        tools.push(button("link", "Edit", () => beginCompose("edit", li)));
        tools.push(button("link", "Delete", () => deleteMessage(li)));
      }
      for (const emoji of EMOJIS) {
        tools.push(button("link emoji", emoji, () => react(li, emoji, !info.mine.has(emoji)),
          `React ${emoji}`));
      }
    }
    li.querySelector(".tools").replaceChildren(...tools);

    const replies = li.querySelector(".replies");
    const count = info.replyCount;
    if (confirmed && count > 0) {
      const label = count === 1 ? "1 reply" : `${count} replies`;
      replies.replaceChildren(button("link", label, () => toggleThread(li)));
    } else {
      replies.replaceChildren();
      li.querySelector(".thread").hidden = true;
    }
  }

  // Replies quote their parent: they follow its edits and deletion.
  function renderQuotes(room, li) {
    if (!li.info.id) return;
    const selector = `.quote[data-for="${CSS.escape(li.info.id)}"]`;
    for (const quote of room.list.querySelectorAll(selector)) {
      quote.textContent = quoteOf(li);
    }
  }

  async function toggleThread(li) {
    const room = roomOf(li);
    const thread = li.querySelector(".thread");
    if (!room || !thread.hidden) {
      thread.hidden = true;
      return;
    }
    thread.hidden = false;
    thread.replaceChildren(el("li", "muted", "loading replies…"));
    try {
      const body = await fetchHistory(room.name, { thread: li.info.id, limit: HISTORY_PAGE });
      thread.replaceChildren(...body.messages.map((m) => {
        const item = el("li");
        item.append(el("span", "sender", m.sender), el("span", "", `: ${m.deleted
          ? "message deleted" : m.text}`));
        return item;
      }));
    } catch (exc) {
      thread.replaceChildren(el("li", "error", `Replies unavailable: ${exc.message}`));
    }
  }

  // Confirmed messages sit in seq order; pending ones stay after them.
  function place(room, li, seq) {
    let after = room.list.lastElementChild;
    while (after && (after === li || !after.dataset.seq || Number(after.dataset.seq) > seq)) {
      after = after.previousElementSibling;
    }
    if (after) after.after(li);
    else room.list.prepend(li);
  }

  // Applies one room event (live, replayed or from the event log) exactly once, by its seq.
  // Returns the room it changed, or null when the event was known already (or is not ours).
  function applyEvent(type, event) {
    const room = state.rooms.get(event && event.room);
    if (!room || typeof event.seq !== "number") return null;
    if (event.seq <= room.lastSeq || room.seqs.has(event.seq)) return null;
    if (type === "message") {
      if (!showMessage(room, event)) return null;
    } else if (type === "message_updated" || type === "message_deleted" || type === "reaction") {
      const target = room.byId.get(event.id);
      if (target && target.dataset.state === "confirmed") {
        applyChange(room, target, type, event);
      } else if (!room.loaded || event.msg_seq > room.base) {
        // Its message comes later (a hole being filled): kept until it does.
        const waiting = room.orphans.get(event.id) || [];
        waiting.push({ type, event });
        room.orphans.set(event.id, waiting);
      }
    } else {
      return null;
    }
    room.seqs.add(event.seq);
    room.maxSeq = Math.max(room.maxSeq, event.seq);
    return room;
  }

  // A message event: the message, shown once, and what came for it before it did.
  function showMessage(room, msg) {
    let li = room.byId.get(msg.id);
    if (!li && msg.sender === state.user) li = room.pending.get(msg.client_msg_id);
    if (li && li.dataset.state === "confirmed") return true;
    if (li) {
      room.pending.delete(msg.client_msg_id);
      li.remove();
    } else {
      li = messageElement();
    }
    room.list.append(li); // in the list first, so it renders with its room
    fill(li, msg, "confirmed");
    room.byId.set(msg.id, li);
    place(room, li, msg.seq);
    const parent = li.info.replyTo && room.byId.get(li.info.replyTo);
    if (parent) {
      parent.info.replyCount += 1;
      render(parent);
    }
    const waiting = room.orphans.get(msg.id);
    if (waiting) {
      room.orphans.delete(msg.id);
      waiting.sort((a, b) => a.event.seq - b.event.seq);
      for (const { type, event } of waiting) applyChange(room, li, type, event);
    }
    render(li);
    renderQuotes(room, li);
    if (msg.sender === state.user) renderSeen(room);
    return true;
  }

  function applyChange(room, li, type, event) {
    const info = li.info;
    if (type === "message_updated") {
      // Versions order edits: a late older one never undoes a newer one.
      if (info.deleted || !(event.version > info.version)) return;
      info.version = event.version;
      info.text = event.text;
      info.edited = true;
    } else if (type === "message_deleted") {
      if (info.deleted) return;
      info.deleted = true;
      info.text = "";
      info.counts.clear();
      info.mine.clear();
      const parent = info.replyTo && room.byId.get(info.replyTo);
      if (parent && parent.info.replyCount > 0) {
        parent.info.replyCount -= 1;
        render(parent);
      }
      if (state.compose && state.compose.li === li) endCompose();
    } else {
      // A set per (emoji, user): the newest event of each pair decides.
      const key = `${event.emoji}\u0000${event.user}`;
      const before = info.reacted.get(key);
      if (before && before.seq > event.seq) return;
      info.reacted.set(key, { seq: event.seq, on: event.on });
      if (!before || before.on !== event.on) {
        const count = (info.counts.get(event.emoji) || 0) + (event.on ? 1 : -1);
        if (count > 0) info.counts.set(event.emoji, count);
        else info.counts.delete(event.emoji);
      }
      if (event.user === state.user) {
        if (event.on) info.mine.add(event.emoji);
        else info.mine.delete(event.emoji);
      }
    }
    render(li);
    renderQuotes(room, li);
    if (info.sender === state.user) renderSeen(room);
  }

  // A message from a history page (older than the window), in its current state.
  function showStored(room, msg) {
    if (typeof msg.seq !== "number" || room.byId.has(msg.id)) return;
    const li = messageElement();
    room.list.append(li);
    fill(li, msg, "confirmed");
    const info = li.info;
    info.version = msg.version || 1;
    info.edited = info.version > 1;
    info.deleted = Boolean(msg.deleted);
    info.replyCount = msg.reply_count || 0;
    for (const [emoji, count] of Object.entries(msg.reactions || {})) {
      if (count > 0) info.counts.set(emoji, count);
    }
    room.byId.set(msg.id, li);
    place(room, li, msg.seq);
    render(li);
    renderQuotes(room, li);
  }

  function onRoomEvent(type) {
    return (event) => {
      const room = state.rooms.get(event && event.room);
      if (!room) return;
      const stick = room === currentRoom() && nearBottom();
      if (!applyEvent(type, event)) return;
      if (type === "message") {
        clearTyper(room, event.sender);
        // Counted once the join ack said where the count stands (replays come before it).
        if (event.sender !== state.user && !room.syncing && event.seq > room.knownLast &&
            !(room === currentRoom() && document.visibilityState === "visible")) {
          setUnread(room, room.unread + 1);
        }
      }
      if (stick) scrollToBottom();
      if (room.syncing) return;
      advance(room);
      if (behind(room)) catchUp(room);
      markRead(room);
    };
  }

  function sendText(text) {
    const room = currentRoom();
    if (!room) return;
    const replying = state.compose && state.compose.kind === "reply" ? state.compose.li : null;
    const msg = {
      room: room.name, text, client_msg_id: newClientMsgId(),
      sender: state.user, ts: new Date().toISOString(),
      reply_to: replying ? replying.info.id : null,
    };
    const li = messageElement();
    room.list.append(li);
    fill(li, msg, "pending");
    li.payload = { room: msg.room, text: msg.text, client_msg_id: msg.client_msg_id };
    if (msg.reply_to) li.payload.reply_to = msg.reply_to;
    room.pending.set(msg.client_msg_id, li);
    endCompose();
    scrollToBottom();
    stopTyping(room);
    queueDelivery(room, li);
  }

  // ----- replies, edits, deletes, reactions -----

  function beginCompose(kind, li) {
    const room = roomOf(li);
    if (!room || room !== currentRoom()) return;
    state.compose = { kind, room, li };
    ui.context.hidden = false;
    if (kind === "edit") {
      ui.contextText.textContent = "Editing your message";
      ui.text.value = li.info.text;
    } else {
      ui.contextText.textContent = `Replying to ${quoteOf(li).slice(2)}`;
    }
    ui.text.focus();
  }

  function endCompose() {
    if (state.compose && state.compose.kind === "edit") ui.text.value = "";
    state.compose = null;
    ui.context.hidden = true;
    ui.contextText.textContent = "";
  }

  function showOpError(li, text) {
    li.querySelector(".error").textContent = text;
  }

  async function roomOp(li, event, payload, what) {
    const room = roomOf(li);
    if (!room || !room.joined) {
      showOpError(li, `${what}: not connected; try again once online`);
      return null;
    }
    showOpError(li, "");
    const ack = await emitAck(event, {
      room: room.name, id: li.info.id, client_op_id: newClientMsgId(), ...payload,
    });
    if (!ack.ok) showOpError(li, describeOp(what, ack.error));
    return ack;
  }

  async function editMessage(li, text) {
    endCompose();
    if (text === li.info.text) return;
    // The change shows when its message_updated event comes, on every page alike.
    await roomOp(li, "edit", { text }, "Not edited");
  }

  async function deleteMessage(li) {
    await roomOp(li, "delete", {}, "Not deleted");
  }

  async function react(li, emoji, on) {
    await roomOp(li, "react", { emoji, on }, on ? "No reaction" : "Reaction not taken back");
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
    for (const type of ["message", "message_updated", "message_deleted", "reaction"]) {
      socket.on(type, onRoomEvent(type));
    }
    socket.on("read", onRead);
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
    // A browser that kept no rooms (a fresh sign-in) lists the user's rooms from the server.
    if (!state.rooms.size) listMyRooms();
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
    endCompose();
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

  ui.signInForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    // A name typed before the config arrived is judged by it, not by the defaults.
    await configLoaded;
    if (state.auth) return;
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
    const editing = state.compose && state.compose.kind === "edit" ? state.compose.li : null;
    ui.text.value = "";
    if (editing) editMessage(editing, text);
    else sendText(text);
  });

  ui.contextCancel.addEventListener("click", () => {
    endCompose();
    ui.text.focus();
  });

  ui.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    } else if (event.key === "Escape" && state.compose) {
      endCompose();
    }
  });
  ui.text.addEventListener("input", onTypingInput);

  // Back in front of the reader: what the room shows now counts as read.
  document.addEventListener("visibilitychange", () => markRead(currentRoom()));

  ui.timeline.addEventListener("scroll", () => {
    if (ui.timeline.scrollTop < 80) loadOlder(currentRoom());
  });

  async function loadConfig() {
    try {
      const response = await fetch("/config.json");
      if (response.ok) state.config = await response.json();
    } catch {
      // Without the config the page still works with tokens.
    }
  }

  const configLoaded = loadConfig();

  async function start() {
    if (typeof io !== "function") {
      ui.signInError.textContent =
        "The Socket.IO client is missing on the server: run scripts/bootstrap.sh.";
      return;
    }
    await configLoaded;
    ui.nameField.hidden = !state.config.dev_auth;
    const session = loadSession();
    if (session && session.auth) signIn(session.auth, session.rooms, session.current);
    else (state.config.dev_auth ? ui.name : ui.token).focus();
  }

  start();
})();
