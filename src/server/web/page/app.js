// chatroom's browser client: the TCP protocol over a WebSocket, one text
// frame per line. Every text from the network goes into the page with
// textContent or as an attribute value, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const NICK_CHARS = "[A-Za-z0-9_-]+";
const MESSAGE = new RegExp(`^(${NICK_CHARS}): (.*)$`, "s");
const JOINED = new RegExp(`^(${NICK_CHARS}) joined!$`);
const LEFT = new RegExp(`^(${NICK_CHARS}) left!(?: \\((.*)\\))?$`, "s");
const ACTION = new RegExp(`^\\* (${NICK_CHARS}) `);
const PRIVATE = new RegExp(`^\\[private\\] (${NICK_CHARS}) -> (${NICK_CHARS}): `);
const LIST = /^\[list\] (\d+) here: (.*)$/s;
const BACKOFF_MAX_MS = 15000;

const state = {
  socket: null,
  nick: "",          // the nickname asked for, or joined as
  joined: false,     // past `<nick> joined!` on this connection
  wanted: false,     // the user wants to be in the room (reconnect if dropped)
  prompted: false,   // the server asked NICK and waits for an answer
  backoff: 500,
  timer: null,
  quietLists: 0,     // `/list` answers asked by the page, not shown
  members: new Set(),
  sent: [],          // what the user typed, for the arrow keys
  recall: 0,
};

function setStatus(text, name) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = name;
}

function connect() {
  clearTimeout(state.timer);
  state.joined = false;
  state.prompted = false;
  setStatus(state.wanted ? "reconnecting…" : "connecting…",
    state.wanted ? "reconnecting" : "connecting");
  const socket = new WebSocket(`wss://${location.host}/chat`);
  state.socket = socket;
  socket.addEventListener("message", (event) => {
    if (socket !== state.socket) return;
    const text = typeof event.data === "string" ? event.data : "";
    for (const line of text.split("\n")) received(line.replace(/\r$/, ""));
  });
  socket.addEventListener("close", () => {
    if (socket !== state.socket) return;
    state.socket = null;
    dropped();
  });
}

// The connection closed: come back with a growing, jittered wait, while
// the user wants to be in the room.
function dropped() {
  state.joined = false;
  state.prompted = false;
  $("join-button").disabled = false;
  if (!state.wanted) {
    setStatus("offline", "offline");
    state.timer = setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
    return;
  }
  const wait = state.backoff * (0.75 + Math.random() * 0.5);
  setStatus(`reconnecting in ${Math.ceil(wait / 1000)} s…`, "reconnecting");
  state.timer = setTimeout(connect, wait);
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
}

function send(line) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(line);
    return true;
  }
  return false;
}

function received(line) {
  if (!state.joined) return beforeJoining(line);
  if (line.startsWith("[list] ") && state.quietLists > 0) {
    state.quietLists -= 1;
    return updateList(line);
  }
  if (line === "Connected to server!") {
    state.quietLists += 1;
    send("/list");
  }
  show(line);
}

function beforeJoining(line) {
  if (line === "NICK") {
    state.prompted = true;
    if (state.wanted && state.nick) return answerNick();
    setStatus("connected", "online");
    showJoin();
    return;
  }
  if (line.startsWith("ERROR ")) {
    state.wanted = false;
    $("join-error").textContent = line.slice("ERROR ".length);
    showJoin();
    return;
  }
  // The newcomer's own `joined!` is the first line it gets once in (under
  // the name its client certificate gives, if the server binds one).
  const joined = line.match(JOINED);
  if (joined) {
    state.joined = true;
    state.nick = joined[1];
    state.backoff = 500;
    state.members = new Set();
    state.quietLists = 0;
    $("join-error").textContent = "";
    $("me").textContent = `as ${state.nick}`;
    setStatus("online", "online");
    $("join").hidden = true;
    $("chat").hidden = false;
    $("line").focus();
    show(line);
  }
}

function showJoin() {
  $("chat").hidden = true;
  $("join").hidden = false;
  $("join-button").disabled = false;
  const nick = $("nick");
  if (!nick.value) nick.value = state.nick;
  nick.focus();
  nick.select();
}

function answerNick() {
  state.prompted = false;
  $("join-button").disabled = true;
  send(state.nick);
}

// One line into the transcript, its kind and parts marked for the eye.
function show(line) {
  const row = document.createElement("div");
  row.className = "line";
  row.dataset.raw = line;
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  row.append(time);
  let body = line;
  if (body.startsWith("[history] ")) {
    row.classList.add("history");
    body = body.slice("[history] ".length);
  }
  describe(row, body);
  const transcript = $("transcript");
  const atBottom = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 40;
  transcript.append(row);
  if (atBottom) row.scrollIntoView({ block: "end" });
}

function describe(row, line) {
  let m;
  if (line.startsWith("ERROR ")) return text(row, line, "server", "error");
  if ((m = line.match(PRIVATE))) {
    row.classList.add("private");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "private";
    row.append(badge);
    if (m[1] === state.nick) row.classList.add("own");
    return text(row, line);
  }
  if ((m = line.match(MESSAGE))) {
    if (m[1] === state.nick) row.classList.add("own");
    row.append(nickSpan(m[1]), document.createTextNode(": " + m[2]));
    return;
  }
  if ((m = line.match(JOINED))) {
    if (!row.classList.contains("history")) member(m[1], true);
    return text(row, line, "event");
  }
  if ((m = line.match(LEFT))) {
    if (!row.classList.contains("history")) member(m[1], false);
    return text(row, line, "event");
  }
  if ((m = line.match(ACTION))) {
    if (m[1] === state.nick) row.classList.add("own");
    row.classList.add("action");
    row.append(document.createTextNode("* "), nickSpan(m[1]),
      document.createTextNode(line.slice(m[0].length - 1)));
    return;
  }
  if (line.startsWith("[list] ")) updateList(line);
  text(row, line, "server");
}

function text(row, line, ...classes) {
  row.classList.add(...classes);
  row.append(document.createTextNode(line));
}

function nickSpan(nick) {
  const span = document.createElement("span");
  span.className = `nick c${colour(nick)}`;
  span.textContent = nick;
  return span;
}

// One of 12 colours per nickname, the same on every page and visit.
function colour(nick) {
  let hash = 0;
  for (const ch of nick.toLowerCase()) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 12;
}

function updateList(line) {
  const m = line.match(LIST);
  if (!m) return;
  const names = m[2].replace(/, and \d+ more$/, "").split(", ").filter(Boolean);
  state.members = new Set(names);
  renderMembers(Number(m[1]));
}

function member(nick, here) {
  if (here) state.members.add(nick);
  else state.members.delete(nick);
  renderMembers(state.members.size);
}

function renderMembers(total) {
  const list = $("member-list");
  list.replaceChildren();
  for (const nick of [...state.members].sort()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = `member c${colour(nick)}`;
    button.textContent = nick;
    button.title = `Private message to ${nick}`;
    button.addEventListener("click", () => {
      const input = $("line");
      input.value = `/msg ${nick} `;
      input.focus();
    });
    item.append(button);
    list.append(item);
  }
  $("count").textContent = `(${total})`;
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const nick = $("nick").value.trim();
  if (!nick) return;
  state.nick = nick;
  state.wanted = true;
  $("join-error").textContent = "";
  if (state.prompted) answerNick();
  else if (!state.socket) connect();
});

$("send").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("line");
  const line = input.value;
  if (!line.trim()) return;
  if (!send(line)) return;
  if (/^\/quit\b/i.test(line)) state.wanted = false;
  if (/^\/list\s*$/i.test(line)) state.quietLists = 0;
  state.sent.push(line);
  state.recall = state.sent.length;
  input.value = "";
});

// Keyboard: arrows recall what was sent; Escape goes back to the input.
$("line").addEventListener("keydown", (event) => {
  if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
  const step = event.key === "ArrowUp" ? -1 : 1;
  const next = Math.min(Math.max(state.recall + step, 0), state.sent.length);
  if (next === state.recall) return;
  state.recall = next;
  event.target.value = state.sent[next] || "";
  event.preventDefault();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("chat").hidden) $("line").focus();
});

connect();
