// DropScribe web page: upload, queue, history, transcripts. Plain JS, no build step, no inline
// script (the CSP forbids it). Every text comes from /api/i18n (service/i18n.py); user data is
// only ever put on the page with textContent, never as HTML.
"use strict";

const S = { lang: null, M: {}, csrf: "", page: 1, pages: 1, last: null, historyKey: "",
  viewing: null };
const $ = (id) => document.getElementById(id);

function tr(key, params) {
  let s = S.M[key] || key;
  for (const [k, v] of Object.entries(params || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function duration(sec) {
  if (sec === null || sec === undefined) return "";
  const s = Math.max(0, Math.round(sec));
  if (s < 60) return tr("dur.s", { s });
  if (s < 3600) return tr("dur.ms", { m: Math.floor(s / 60), s: s % 60 });
  return tr("dur.hm", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

function localTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(S.lang === "zh-CN" ? "zh-CN" : undefined);
}

function clock(sec) {
  const s = Math.max(0, Math.floor(sec));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

async function api(path, opts) {
  const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
  if (o.method && o.method !== "GET") o.headers["X-CSRF-Token"] = S.csrf;
  const sep = path.includes("?") ? "&" : "?";
  const r = await fetch(path + sep + "lang=" + encodeURIComponent(S.lang || ""), o);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401) showLogin();
  return { ok: r.ok, status: r.status, body };
}

// ---- language --------------------------------------------------------------------------------
async function loadLanguage(lang) {
  const r = await fetch("/api/i18n?lang=" + encodeURIComponent(lang || ""));
  const data = await r.json();
  S.lang = data.lang;
  S.M = data.messages;
  document.documentElement.lang = S.lang;
  document.title = tr("ui.title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = tr(e.dataset.t);
  for (const e of document.querySelectorAll("[data-tp]")) e.placeholder = tr(e.dataset.tp);
  $("lang-toggle").textContent = S.lang === "zh-CN" ? "English" : "中文";
}

// ---- session ---------------------------------------------------------------------------------
function showLogin() {
  $("login").hidden = false;
  $("app").hidden = true;
  $("logout").hidden = true;
}

async function start() {
  const stored = localStorage.getItem("dropscribe-lang");
  const first = await fetch("/api/session" + (stored ? "?lang=" + stored : ""));
  const sess = await first.json();
  await loadLanguage(stored || sess.lang || navigator.language);
  if (!sess.logged_in) return showLogin();
  enter(sess);
}

function enter(sess) {
  S.csrf = sess.csrf;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = !sess.auth_required;
  loadModels();
  refresh();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("/api/login?lang=" + S.lang, {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ secret: $("login-secret").value }),
  });
  const body = await r.json();
  if (!r.ok) { $("login-error").textContent = body.error; return; }
  $("login-secret").value = "";
  enter(body);
});

$("logout").addEventListener("click", async () => {
  await api("/api/logout", { method: "POST" });
  showLogin();
});

$("lang-toggle").addEventListener("click", async () => {
  const next = S.lang === "zh-CN" ? "en" : "zh-CN";
  localStorage.setItem("dropscribe-lang", next);
  await loadLanguage(next);
  if (S.last) renderOverview(S.last);  // at once; the server's words (reasons) follow
  refresh();
  if (S.viewing) openTranscript(S.viewing);
});

// ---- upload ----------------------------------------------------------------------------------
async function loadModels() {
  const r = await api("/api/models");
  if (!r.ok) return;
  const sel = $("opt-model");
  sel.replaceChildren(el("option", { value: "", text: tr("ui.model_default", { model: r.body.default }) }));
  // each model with the engine(s) it is on disk for ("base · openai-whisper, faster-whisper")
  for (const m of r.body.models) {
    const on = (r.body.engines || {})[m];
    sel.append(el("option", { value: m, text: on ? `${m} · ${on.join(", ")}` : m }));
  }
  $("opt-engine-default").textContent = tr("ui.engine_default", { engine: r.body.engine });
}

function choices() {
  const p = new URLSearchParams();
  const put = (k, v) => { if (v !== "" && v !== null) p.set(k, v); };
  put("model", $("opt-model").value);
  put("engine", $("opt-engine").value);
  put("language", $("opt-language").value);
  put("chinese_script", $("opt-script").value);
  const prio = $("opt-priority").value.trim();
  if (prio && prio !== "0") p.set("priority", prio);
  put("glossary", $("opt-glossary").value.trim());
  return p;
}

const queue = [];
let active = 0;

function addUploads(items) {
  const opts = choices();
  for (const { file, path } of items) {
    const bar = el("span");
    const note = el("span", { class: "muted", text: tr("ui.upload_waiting") });
    const li = el("li", { "data-upload": path },
      el("div", { class: "file", text: path }),
      el("div", { class: "bar" }, bar), note);
    $("uploads").prepend(li);
    queue.push({ file, path, opts, bar, note });
  }
  pump();
}

function pump() {
  while (active < 2 && queue.length) {
    active++;
    send(queue.shift()).finally(() => { active--; pump(); refresh(); });
  }
}

function send(job) {
  return new Promise((resolve) => {
    const params = new URLSearchParams(job.opts);
    params.set("name", job.path);
    params.set("lang", S.lang);
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/upload?" + params.toString());
    xhr.setRequestHeader("X-CSRF-Token", S.csrf);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) job.bar.style.width = (100 * e.loaded / e.total).toFixed(1) + "%";
      job.note.textContent = tr("ui.uploading");
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
      if (xhr.status === 200) {
        job.bar.style.width = "100%";
        job.note.textContent = tr("ui.uploaded", { name: body.source });
        job.note.className = "muted ok";
      } else {
        job.note.textContent = body.error || String(xhr.status);
        job.note.className = "err";
      }
      resolve();
    };
    xhr.onerror = () => { job.note.textContent = tr("ui.upload_failed"); job.note.className = "err"; resolve(); };
    xhr.send(job.file);
  });
}

async function entriesOf(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, path: entry.fullPath.replace(/^\/+/, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await entriesOf(e, out);
    }
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const items = [];
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry());
  if (entries.length && entries.every(Boolean)) {
    for (const en of entries) await entriesOf(en, items);
  } else {
    for (const f of e.dataTransfer.files) items.push({ file: f, path: f.name });
  }
  addUploads(items);
});
$("pick-files").addEventListener("change", (e) => {
  addUploads([...e.target.files].map((f) => ({ file: f, path: f.name })));
  e.target.value = "";
});
$("pick-folder").addEventListener("change", (e) => {
  addUploads([...e.target.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name })));
  e.target.value = "";
});

// ---- queue -----------------------------------------------------------------------------------
function badge(status) {
  return el("span", { class: "badge s-" + status, text: tr("state." + status) });
}

function actionButton(label, cls, onclick) {
  return el("button", { type: "button", class: cls, text: tr(label), onclick });
}

async function act(id, verb) {
  const r = await api(`/api/tasks/${id}/${verb}`, { method: "POST" });
  $("notice").textContent = r.ok ? "" : (r.body ? r.body.error : String(r.status));
  refresh();
}

function taskItem(t, extra, actions) {
  return el("li", { "data-id": t.id, "data-status": t.status },
    el("div", { class: "row" }, badge(t.status), el("span", { class: "file", text: t.source }),
      el("span", { class: "actions" }, ...actions)),
    ...extra);
}

function empty(key) { return el("li", { class: "empty", text: tr(key) }); }

function renderOverview(d) {
  const svc = $("svc");
  svc.textContent = "● " + tr(d.healthy ? "ui.healthy" : "ui.unhealthy");
  svc.className = "svc " + (d.healthy ? "ok" : "bad");
  const probs = $("problems");
  probs.hidden = !d.problems.length;
  probs.replaceChildren(el("b", { text: tr("page.degraded") }),
    ...d.problems.map((p) => el("div", { text: p })));
  if (d.waiting === 0 && !d.running.length) $("summary").textContent = tr("ui.queue_empty");
  else if (d.left_seconds === null) $("summary").textContent = tr("ui.summary_unknown", { n: d.waiting });
  else $("summary").textContent = tr("ui.summary", { n: d.waiting, t: duration(d.left_seconds) });

  $("running").replaceChildren(...(d.running.length ? d.running.map((t) => {
    const pct = Math.round(100 * t.progress);
    const parts = [pct + " %", t.model, t.device || ""];
    if (t.eta_seconds !== null) parts.push(tr("page.eta", { d: duration(t.eta_seconds) }));
    const bar = el("span");
    bar.style.width = pct + "%";
    return taskItem(t, [
      el("div", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0,
        "aria-valuemax": 100 }, bar),
      el("div", { class: "muted", text: parts.filter(Boolean).join(" · ") })],
      [actionButton("ui.cancel", "danger", () => act(t.id, "cancel"))]);
  }) : [empty("page.none_running")]));

  $("pending").replaceChildren(...(d.pending.length ? d.pending.map((t) => {
    const when = t.start_in_seconds === null ? tr("ui.start_unknown")
      : t.start_in_seconds < 1 ? tr("ui.start_next")
        : tr("ui.start_at", { at: localTime(new Date(Date.parse(d.now) + 1000 * t.start_in_seconds).toISOString()),
          d: duration(t.start_in_seconds) });
    const info = [t.model, t.audio_seconds ? duration(t.audio_seconds) : "", when];
    return taskItem(t, [el("div", { class: "muted", text: info.filter(Boolean).join(" · ") })],
      [actionButton("ui.cancel", "danger", () => act(t.id, "cancel"))]);
  }) : [empty("ui.none_waiting")]));
  $("updated").textContent = tr("ui.updated", { at: localTime(d.now) });
}

function renderHistory(d) {
  const key = S.lang + JSON.stringify(d);
  if (key === S.historyKey) return;  // unchanged: keep the rows (and a click on them) as they are
  S.historyKey = key;
  S.pages = d.pages;
  $("page").textContent = tr("ui.page", { page: d.page, pages: d.pages, total: d.total });
  $("prev").disabled = d.page <= 1;
  $("next").disabled = d.page >= d.pages;
  $("history").replaceChildren(...(d.items.length ? d.items.map((t) => {
    const info = [localTime(t.finished || t.created), t.model, t.language || "",
      t.audio_seconds ? duration(t.audio_seconds) : ""];
    const extra = [el("div", { class: "muted", text: info.filter(Boolean).join(" · ") })];
    if (t.reason) {
      extra.push(el("p", { class: "err", text: t.reason }));
      if (t.error) extra.push(el("p", { class: "muted", text: tr("ui.details") + ": " + t.error }));
    }
    const acts = [];
    if (t.status === "completed") acts.push(actionButton("ui.open", "", () => openTranscript(t.id)));
    else acts.push(actionButton("ui.retry", "", () => act(t.id, "retry")));
    return taskItem(t, extra, acts);
  }) : [empty("ui.no_history")]));
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    const o = await api("/api/overview");
    if (o.ok) renderOverview((S.last = o.body));
    const q = new URLSearchParams({ q: $("search").value, state: $("state-filter").value, page: S.page });
    const h = await api("/api/history?" + q.toString());
    if (h.ok) renderHistory(h.body);
  } finally {
    if (!$("app").hidden) timer = setTimeout(refresh, 2000);
  }
}

$("search").addEventListener("input", () => { S.page = 1; refresh(); });
$("state-filter").addEventListener("change", () => { S.page = 1; refresh(); });
$("prev").addEventListener("click", () => { S.page = Math.max(1, S.page - 1); refresh(); });
$("next").addEventListener("click", () => { S.page = Math.min(S.pages, S.page + 1); refresh(); });

// ---- transcripts -----------------------------------------------------------------------------
async function openTranscript(id) {
  const r = await api(`/api/tasks/${id}/transcript`);
  S.viewing = id;
  $("viewer").hidden = false;
  if (!r.ok) {
    $("viewer-title").textContent = "#" + id;
    $("viewer-note").textContent = r.body ? r.body.error : String(r.status);
    $("segments").replaceChildren();
    return;
  }
  const d = r.body;
  $("viewer-title").textContent = d.source;
  $("viewer-note").textContent = tr("ui.click_time");
  const hist = await api(`/api/history?q=&page=1`);
  const row = hist.ok ? hist.body.items.find((t) => t.id === id) : null;
  const formats = row ? row.formats : ["txt", "srt", "vtt", "json"];
  $("downloads").replaceChildren(el("span", { class: "muted", text: tr("ui.download") + ": " }),
    ...formats.map((f) => el("a", { href: `/api/tasks/${id}/download/${f}`, download: "",
      "data-format": f, text: f.toUpperCase() })));
  const player = $("player");
  player.src = `/api/tasks/${id}/audio`;
  $("segments").replaceChildren(...d.segments.map((s) =>
    el("li", { "data-start": s.start },
      el("button", { type: "button", class: "time", text: clock(s.start), onclick: () => {
        player.currentTime = s.start;
        player.play().catch(() => {});
      } }),
      el("span", { text: (s.speaker ? `[${s.speaker}] ` : "") + s.text.trim() }))));
  $("viewer").scrollIntoView({ behavior: "smooth" });
}

$("player").addEventListener("timeupdate", () => {
  const now = $("player").currentTime;
  for (const li of $("segments").children) {
    const next = li.nextElementSibling;
    const on = now >= Number(li.dataset.start) && (!next || now < Number(next.dataset.start));
    li.classList.toggle("now", on);
  }
});
$("player").addEventListener("error", () => { $("viewer-note").textContent = tr("action.no_audio", { id: S.viewing }); });
$("viewer-close").addEventListener("click", () => {
  $("viewer").hidden = true;
  $("player").pause();
  S.viewing = null;
});

start();
