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
const NAME = "#[A-Za-z0-9_-]{1,32}";
// Every line of a channel other than #lobby starts with its name; nicknames
// hold no `#`, so nothing else does.
const IN_CHANNEL = new RegExp(`^(${NAME}) (.*)$`, "s");
// A channel's history, `[history] #ops alice: hi`: to that channel's tab.
const HISTORY_IN_CHANNEL = new RegExp(`^\\[history\\] (${NAME}) (.*)$`, "s");
const JOIN_ANSWER = new RegExp(`^\\[join\\] (${NAME}): \\d+ here$`);
const PART_ANSWER = new RegExp(`^\\[part\\] (${NAME}): you left it; now in (${NAME})$`);
// The refusals of a `/join`: a tab the page joins again may get one.
const JOIN_REFUSED = /^ERROR (channel name must|this server has \d+ channels|you are in \d+ channels|channels are not available)/;
const LOBBY = "#lobby";
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
  members: new Set(),  // of the channel on screen
  tabs: new Map(),     // a channel's name in lower case -> its tab (see `tabFor`)
  shown: LOBBY,        // the tab on screen: the server's current channel follows it
  quietJoins: [],      // channels of `/join`s sent by the page, answers not shown
  quit: false,         // the user typed /quit: the channels go with the session
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
  if (state.quit) {
    state.quit = false;
    for (const tab of [...state.tabs.values()]) closeTab(tab.name);
  }
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
    show(line, LOBBY);
    return rejoin();
  }
  let m;
  if ((m = line.match(JOIN_ANSWER))) return joinAnswer(m[1], line);
  if ((m = line.match(PART_ANSWER))) return partAnswer(m[1], m[2], line);
  if ((m = line.match(IN_CHANNEL))) return show(line, m[1], m[2]);
  if ((m = line.match(HISTORY_IN_CHANNEL))) return show(line, m[1], `[history] ${m[2]}`);
  if (JOIN_REFUSED.test(line) && state.quietJoins.length > 0) return joinRefused(line);
  // The lobby's own lines (messages, actions, joins, leaves, history, the
  // big room's notice) go to its tab; the answers to the asker (private
  // lines, errors, [help], [list], [rooms], [search]) to the tab on screen,
  // where they were asked for.
  const lobby = MESSAGE.test(line) || JOINED.test(line) || LEFT.test(line) ||
    ACTION.test(line) || line.startsWith("[history] ") || line.startsWith("[room] ");
  show(line, lobby ? LOBBY : state.shown);
}

// Joined (again) after connecting: the server knows only #lobby, so the
// page joins the tabs it has, then the one on screen (last) so that it
// is the current channel, and lists its members.
function rejoin() {
  state.quietJoins = [];
  const others = [...state.tabs.values()].filter((tab) => key(tab.name) !== LOBBY);
  others.sort((a, b) => (key(a.name) === state.shown) - (key(b.name) === state.shown));
  for (const tab of others) quietJoin(tab.name);
  if (others.length && state.shown === LOBBY) quietJoin(LOBBY);
  if (others.length) {
    const names = others.map((tab) => tab.name).join(", ");
    note(`Reconnected: joining ${names} again`, LOBBY);
    if (state.shown !== LOBBY) note(`Reconnected: joining ${names} again`, state.shown);
  }
  quietList();
}

function quietJoin(name) {
  if (send(`/join ${name}`)) state.quietJoins.push(key(name));
}

function quietList() {
  if (send("/list")) state.quietLists += 1;
}

// `[join] #name: N here`: the server's current channel is #name. Asked by
// the page (a tab switch, a rejoin), it is not shown; typed, it opens and
// shows the channel's tab.
function joinAnswer(name, line) {
  const tab = tabFor(name);
  if (state.quietJoins[0] === key(name)) {
    state.quietJoins.shift();
    return;
  }
  select(tab.name);
  quietList();
  show(line, tab.name);
}

// `[part] #name: you left it; now in #current`.
function partAnswer(name, current, line) {
  closeTab(name);
  if (state.shown !== key(current)) {
    select(tabFor(current).name);
    quietList();
  }
  show(line, current);
}

// A channel the page asked to join again is refused (the server's limits,
// or a server without channels): its tab goes, the reason shows.
function joinRefused(line) {
  const name = state.quietJoins.shift();
  const wasShown = state.shown === name;
  if (name !== LOBBY) closeTab(name);
  if (wasShown) {
    quietJoin(LOBBY);
    quietList();
  }
  show(line, state.shown);
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
    state.quietJoins = [];
    $("join-error").textContent = "";
    $("me").textContent = `as ${state.nick}`;
    setStatus("online", "online");
    $("join").hidden = true;
    $("chat").hidden = false;
    $("line").focus();
    show(line, LOBBY);
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

// One line into the transcript of `channel`'s tab (`body`: the line
// without the channel's name), its kind and parts marked for the eye.
function show(line, channel, body = line) {
  const row = newRow(line);
  if (body.startsWith("[history] ")) {
    row.classList.add("history");
    body = body.slice("[history] ".length);
  }
  describe(row, body, channel);
  const tab = tabFor(channel);
  append(tab, row);
  if (key(tab.name) !== state.shown && !row.classList.contains("server") && !row.classList.contains("event") && !byMe(body)) {
    tab.unread += 1;
    renderUnread(tab);
  }
}

// A line of the page's own, not the server's.
function note(line, channel) {
  const row = newRow("");
  text(row, line, "server", "local");
  append(tabFor(channel), row);
}

function newRow(raw) {
  const row = document.createElement("div");
  row.className = "line";
  row.dataset.raw = raw;
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  row.append(time);
  return row;
}

function append(tab, row) {
  const panel = tab.panel;
  const atBottom = panel.scrollHeight - panel.scrollTop - panel.clientHeight < 40;
  panel.append(row);
  if (atBottom && !panel.hidden) row.scrollIntoView({ block: "end" });
}

// Whether the user's own doing (its lines, its joins and leaves).
function byMe(line) {
  const m = line.match(MESSAGE) || line.match(JOINED) || line.match(LEFT) || line.match(ACTION);
  return m !== null && m[1] === state.nick;
}

function describe(row, line, channel) {
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
    if (!row.classList.contains("history")) member(m[1], true, channel);
    return text(row, line, "event");
  }
  if ((m = line.match(LEFT))) {
    if (!row.classList.contains("history")) member(m[1], false, channel);
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

function member(nick, here, channel) {
  if (key(channel) !== state.shown) return;
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
  $("where").textContent = state.tabs.get(state.shown).name;
}

// A tab's key: the channel's name in lower case. The page only ever names
// a channel as the server spells it, so finer folding is the server's.
function key(name) {
  return name.toLowerCase();
}

// The tab of channel `name`, made (not shown) if the page has none: a
// button in the tab bar, a close button (not for #lobby), a transcript.
function tabFor(name) {
  const existing = state.tabs.get(key(name));
  if (existing) return existing;
  const id = `tab-${state.tabs.size}-${Date.now()}`;
  const panel = document.createElement("div");
  panel.className = "panel";
  panel.id = `${id}-panel`;
  panel.dataset.channel = name;
  panel.setAttribute("role", "tabpanel");
  panel.setAttribute("aria-labelledby", id);
  panel.tabIndex = 0;
  panel.hidden = true;
  const item = document.createElement("div");
  item.className = "tab";
  item.dataset.channel = name;
  const button = document.createElement("button");
  button.type = "button";
  button.id = id;
  button.className = "tab-name";
  button.setAttribute("role", "tab");
  button.setAttribute("aria-controls", panel.id);
  button.setAttribute("aria-selected", "false");
  button.tabIndex = -1;
  const badge = document.createElement("span");
  badge.className = "unread-count";
  badge.hidden = true;
  button.append(document.createTextNode(name), badge);
  button.addEventListener("click", () => switchTo(name));
  button.addEventListener("keydown", tabKeys);
  item.append(button);
  if (key(name) !== LOBBY) {
    const close = document.createElement("button");
    close.type = "button";
    close.className = "tab-close";
    close.textContent = "×";
    close.title = `Leave ${name} (/part)`;
    close.setAttribute("aria-label", `Leave ${name}`);
    close.addEventListener("click", () => leave(name));
    item.append(close);
  }
  $("tabs").append(item);
  $("transcript").append(panel);
  const tab = { name, panel, item, button, badge, unread: 0 };
  state.tabs.set(key(name), tab);
  return tab;
}

// Shows the tab of `name` (which exists), its unread lines read.
function select(name) {
  state.shown = key(name);
  for (const [k, tab] of state.tabs) {
    const on = k === state.shown;
    tab.panel.hidden = !on;
    tab.item.classList.toggle("selected", on);
    tab.button.setAttribute("aria-selected", String(on));
    tab.button.tabIndex = on ? 0 : -1;
  }
  const tab = state.tabs.get(state.shown);
  tab.unread = 0;
  renderUnread(tab);
  state.members = new Set();
  renderMembers(0);
  const last = tab.panel.lastElementChild;
  if (last) last.scrollIntoView({ block: "end" });
}

// The user picks a tab: the server's current channel follows it, and the
// member list is the channel's.
function switchTo(name) {
  if (key(name) === state.shown) return;
  select(name);
  quietJoin(name);
  quietList();
}

// The close button: `/part`, whose answer closes the tab; offline, the
// server keeps no channels anyway.
function leave(name) {
  if (!state.joined || !send(`/part ${name}`)) closeTab(name);
  $("line").focus();
}

function closeTab(name) {
  const tab = state.tabs.get(key(name));
  if (!tab || key(name) === LOBBY) return;
  tab.item.remove();
  tab.panel.remove();
  state.tabs.delete(key(name));
  if (state.shown === key(name)) select(LOBBY);
}

function renderUnread(tab) {
  tab.badge.textContent = tab.unread > 0 ? String(tab.unread) : "";
  tab.badge.hidden = tab.unread === 0;
  tab.item.classList.toggle("unread", tab.unread > 0);
  tab.button.setAttribute("aria-label",
    tab.unread > 0 ? `${tab.name}, ${tab.unread} unread` : tab.name);
}

// The next (`step` 1) or previous (-1) tab, round the bar.
function moveTab(step) {
  const names = [...state.tabs.values()].map((tab) => tab.name);
  const at = names.findIndex((name) => key(name) === state.shown);
  const next = names[(at + step + names.length) % names.length];
  switchTo(next);
  return next;
}

// Alt+Left/Right and Alt+PageUp/PageDown anywhere: the previous or next tab.
function tabStep(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return 0;
  if (event.key === "ArrowLeft" || event.key === "PageUp") return -1;
  if (event.key === "ArrowRight" || event.key === "PageDown") return 1;
  return 0;
}

// In the tab bar, as tabs go: the arrows, Home and End move (and switch),
// Delete leaves.
function tabKeys(event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const names = [...state.tabs.values()].map((tab) => tab.name);
  let target = null;
  if (event.key === "ArrowLeft") target = moveTab(-1);
  else if (event.key === "ArrowRight") target = moveTab(1);
  else if (event.key === "Home") target = names[0];
  else if (event.key === "End") target = names[names.length - 1];
  else if (event.key === "Delete" && state.shown !== LOBBY) {
    return leave(state.tabs.get(state.shown).name);
  }
  else return;
  event.preventDefault();
  switchTo(target);
  state.tabs.get(key(target)).button.focus();
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
  if (/^\/quit\b/i.test(line)) {
    state.wanted = false;
    state.quit = true;
  }
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
  if ($("chat").hidden) return;
  if (event.key === "Escape") $("line").focus();
  const step = tabStep(event);
  if (step === 0) return;
  event.preventDefault();
  moveTab(step);
});

select(tabFor(LOBBY).name);
connect();
