// The kiosk page: shows what the controller pushes over server-sent events and
// sends what a member does as small JSON requests. No build step, no library.
// Text from the club's data only ever goes in through textContent.
"use strict";

const STALE_MS = 25000; // the server pings every 10 s: silence this long means a dead link
const RETRY_MS = 2000;

const screenId = (() => {
  let id = sessionStorage.getItem("alc-screen");
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("alc-screen", id);
  }
  return id;
})();

let source = null;
let lastHeard = 0;
let board = null;
let session = null;
let pin = "";
let lastRequest = 0;
const blocks = new Map(); // court id -> blocks chosen
let pending = null; // the price quote the member is asked to confirm
let message = null; // {text, ok} shown in the member panel

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- time and money --------------------------------------------------------------

function tz() {
  return (board && board.tz) || undefined;
}

function hhmm(seconds) {
  return new Intl.DateTimeFormat("en-GB", {
    hour: "2-digit", minute: "2-digit", timeZone: tz(),
  }).format(new Date(seconds * 1000));
}

function money(cents) {
  const sign = cents < 0 ? "-" : "";
  return sign + (Math.abs(cents) / 100).toFixed(2);
}

function minutes(s) {
  return s % 3600 === 0 ? `${s / 3600} h` : `${Math.round(s / 60)} min`;
}

function tickClock() {
  const now = new Date();
  try {
    $("clock").textContent = new Intl.DateTimeFormat("en-GB", {
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: tz(),
    }).format(now);
    $("date").textContent = new Intl.DateTimeFormat("en-GB", {
      weekday: "long", day: "numeric", month: "long", timeZone: tz(),
    }).format(now);
  } catch (e) {
    $("clock").textContent = now.toLocaleTimeString();
  }
  if (session) {
    const left = Math.max(0, Math.ceil((session.idle_s * 1000 - (Date.now() - lastRequest)) / 1000));
    const idle = $("idle");
    if (idle) idle.textContent = `Signing out in ${left} s`;
  }
}

// --- the live stream -------------------------------------------------------------

function connect() {
  if (source) source.close();
  source = new EventSource(`/events?screen=${screenId}`);
  lastHeard = Date.now();
  const on = (name, handler) => source.addEventListener(name, (event) => {
    lastHeard = Date.now();
    handler(event.data ? JSON.parse(event.data) : null);
  });
  on("board", (data) => {
    $("banner").hidden = true;
    document.body.classList.remove("offline");
    board = data;
    renderBoard();
    confirmRefresh();
  });
  on("session", (data) => setSession(data));
  on("notice", (data) => notice(data.error || data.message || ""));
  on("ping", () => {});
  on("reload", (data) => {
    sessionStorage.setItem("alc-refresh", data.refresh);
    location.reload();
  });
  source.onerror = () => lost();
}

function lost() {
  $("banner").hidden = false;
  // What is shown may be out of date now: dim it until the controller is back.
  document.body.classList.add("offline");
  if (source) source.close();
  source = null;
  // Whatever was shown of a member is not theirs to keep once the link is gone.
  setSession(null);
  setTimeout(connect, RETRY_MS);
}

setInterval(() => {
  if (source && Date.now() - lastHeard > STALE_MS) lost();
}, 5000);

async function confirmRefresh() {
  const id = sessionStorage.getItem("alc-refresh");
  if (!id) return;
  sessionStorage.removeItem("alc-refresh");
  await api("refreshed", { refresh: id });
}

async function api(what, body) {
  lastRequest = Date.now();
  try {
    const response = await fetch(`/api/${what}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ screen: screenId, ...(body || {}) }),
    });
    return await response.json();
  } catch (e) {
    return { status: "busy", error: "No answer from the controller. Try again." };
  }
}

// --- the board -------------------------------------------------------------------

const LIGHT_STATE = { on: "On", warn: "Going off soon", off: "Off" };
const WHY = { booking: "Booking", checkin: "Booking (checked in)", activation: "Paid", remote: "Switched on by the club" };
const DOOR_STATE = { locked: "Locked", unlocked: "Unlocked", open: "Open", alarm: "Alarm" };

function renderBoard() {
  document.title = board.club ? `${board.club} kiosk` : "Club kiosk";
  $("club").textContent = board.club || "Club";
  $("lights").replaceChildren(...board.lights.map((light) => {
    let detail = "";
    if (light.state !== "off") {
      const why = WHY[light.why] || "";
      const booked = light.booking ? ` ${hhmm(light.booking.start)}–${hhmm(light.booking.end)}` : "";
      detail = `${why}${booked}`;
    }
    const until = light.state !== "off" && light.until ? ` until ${hhmm(light.until)}` : "";
    return el("div", { class: "card", "data-light": light.id, "data-state": light.state },
      el("div", { class: "name" }, light.name),
      el("div", { class: "state" }, LIGHT_STATE[light.state] + until),
      el("div", { class: "detail" }, detail));
  }));
  const rows = board.bookings.map((b) => el("tr",
    { "data-booking": b.id, class: b.playing ? "playing" : "" },
    el("td", {}, `${hhmm(b.start)}–${hhmm(b.end)}`),
    el("td", {}, b.lights.join(", ")),
    el("td", { class: "tag" }, b.playing ? "playing now" : b.checkin ? (b.checked_in ? "checked in" : "check-in needed") : "")));
  $("bookings").tBodies[0].replaceChildren(...rows);
  $("bookings").hidden = rows.length === 0;
  $("no-bookings").hidden = rows.length !== 0;
  $("doors").replaceChildren(...board.doors.map((door) => el("li", { "data-door": door.id },
    el("span", {}, door.name),
    el("span", { class: "pill", "data-state": door.state }, DOOR_STATE[door.state]))));
  tickClock();
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

// --- signing in ------------------------------------------------------------------

function showKeypad(open) {
  pin = "";
  $("pin-shown").textContent = "";
  $("pin-error").hidden = true;
  $("keypad").hidden = !open;
}

async function key(k) {
  if (k === "clear") pin = "";
  else if (k === "ok") {
    if (!pin) return;
    const typed = pin;
    pin = "";
    $("pin-shown").textContent = "";
    const answer = await api("pin", { pin: typed });
    if (answer.status === "ok") {
      showKeypad(false);
      setSession(answer.session);
    } else {
      $("pin-error").textContent = answer.error || "Not possible.";
      $("pin-error").hidden = false;
    }
    return;
  } else if (pin.length < 12) pin += k;
  $("pin-shown").textContent = "\u2022".repeat(pin.length);
}

// --- the member's panel ----------------------------------------------------------

function setSession(data) {
  const was = session;
  session = data;
  if (!data) {
    // Nothing personal stays on the screen once signed out.
    $("member-panel").replaceChildren();
    $("member").hidden = true;
    blocks.clear();
    pending = null;
    message = null;
    return;
  }
  if (!was) {
    lastRequest = Date.now();
    showKeypad(false);
  }
  renderSession();
}

function say(text, ok) {
  message = text ? { text, ok } : null;
  renderSession();
}

function renderSession() {
  if (!session) return;
  const s = session;
  const bookingRows = s.bookings.map((b) => {
    let action = null;
    if (b.checked_in) action = el("span", { class: "ok" }, "Checked in");
    else if (b.can_check_in) action = el("button", { class: "go checkin", onclick: () => checkIn(b.id) }, "Check in");
    else if (b.checkin) action = el("span", { class: "quiet" }, `Check-in from ${hhmm(b.checkin_from)}`);
    return el("div", { class: "row", "data-booking": b.id },
      el("span", {}, `${hhmm(b.start)}–${hhmm(b.end)}  ${b.lights.join(", ")}`), action);
  });
  const courtRows = s.courts.map((c) => {
    const n = Math.min(blocks.get(c.id) || 1, Math.max(c.max_blocks, 1));
    blocks.set(c.id, n);
    const total = c.price * n;
    const price = c.price > 0 ? `${n} × ${minutes(c.block_s)} = ${money(total)}` : `${n} × ${minutes(c.block_s)}, free`;
    return el("div", { class: "row", "data-court": c.id, "data-state": c.state },
      el("div", {},
        el("div", {}, el("b", {}, c.name), c.state !== "off" ? " (on now)" : ""),
        el("div", { class: "quote" }, c.allowed ? `${price}; credit after ${money(s.credit - total)}` : c.why)),
      el("div", { class: "stepper" },
        el("button", { class: "less", disabled: !c.allowed || n <= 1, onclick: () => step(c, -1) }, "−"),
        el("span", { class: "blocks" }, n),
        el("button", { class: "more", disabled: !c.allowed || n >= c.max_blocks, onclick: () => step(c, 1) }, "+"),
        el("button", { class: "go pay", disabled: !c.allowed, onclick: () => pay(c) },
          c.price > 0 ? `Pay ${money(total)}` : "Switch on")));
  });
  const parts = [
    el("div", { class: "member-head" },
      el("span", { class: "hello" }, `Hello, ${s.first_name}`),
      el("span", { class: "credit" }, "Credit ", el("b", { id: "credit" }, money(s.credit)))),
    message ? el("p", { id: "message", class: message.ok ? "ok" : "error" }, message.text) : null,
    pending ? confirmBox(pending) : null,
    el("h2", {}, "Your bookings today"),
    bookingRows.length ? el("div", { id: "my-bookings" }, ...bookingRows) : el("p", { class: "quiet" }, "No more bookings today."),
    el("h2", {}, "Switch a court on"),
    courtRows.length ? el("div", { id: "courts" }, ...courtRows) : el("p", { class: "quiet" }, "No court can be switched on from here."),
    el("div", { class: "member-foot" },
      el("span", { id: "idle", class: "quiet" }, ""),
      el("button", { id: "sign-out", class: "big", style: "width:auto", onclick: signOut }, "Sign out")),
  ];
  $("member-panel").replaceChildren(...parts.filter((part) => part !== null));
  $("member").hidden = false;
  tickClock();
}

function step(court, by) {
  const n = Math.min(Math.max((blocks.get(court.id) || 1) + by, 1), court.max_blocks);
  blocks.set(court.id, n);
  message = null;
  renderSession();
  api("touch");
}

function confirmBox(q) {
  const price = q.total > 0
    ? `${money(q.total)} from your credit (${money(q.credit_after)} left)` : "free of charge";
  return el("div", { id: "confirm", class: "row" },
    el("span", {}, `Switch on ${q.name} for ${minutes(q.minutes * 60)}: ${price}`),
    el("span", {},
      el("button", { id: "confirm-cancel", class: "link", onclick: () => { pending = null; renderSession(); } }, "Cancel"),
      el("button", { id: "confirm-pay", class: "go", onclick: confirmPay },
        q.total > 0 ? "Confirm and pay" : "Confirm")));
}

async function pay(court) {
  // The price comes from the controller, and the member confirms exactly that.
  const n = blocks.get(court.id) || 1;
  const answer = await api("quote", { light: court.id, blocks: n });
  if (answer.status !== "ok") return say(answer.error, false);
  pending = answer.quote;
  say(null);
}

async function confirmPay() {
  const q = pending;
  pending = null;
  if (!q) return;
  const done = await api("activate", { light: q.light, blocks: q.blocks, total: q.total });
  say(done.status === "ok" ? done.message : done.error, done.status === "ok");
}

async function checkIn(id) {
  const answer = await api("check_in", { booking: id });
  say(answer.status === "ok" ? answer.message : answer.error, answer.status === "ok");
}

async function signOut() {
  await api("sign_out");
  setSession(null);
}

// --- wiring ----------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-key]")) {
    button.addEventListener("click", () => key(button.dataset.key));
  }
  $("open-keypad").addEventListener("click", () => showKeypad(true));
  $("keypad-close").addEventListener("click", () => showKeypad(false));
  // A member still using the screen keeps the session alive.
  document.addEventListener("pointerdown", () => {
    if (session && Date.now() - lastRequest > 10000) api("touch");
  });
  setInterval(tickClock, 1000);
  connect();
});
