/* radcloud UI core: configuration, the token, calls to the web actions,
 * small DOM helpers. Plain JS, no build step, no external requests.
 * Every page script uses window.RC. */
(function () {
  "use strict";
  const meta = (name) => (document.querySelector(`meta[name="radcloud-${name}"]`) || {}).content || "";
  const cfg = { api: meta("api"), ui: meta("ui"), mode: meta("mode"), page: meta("page") };
  // The session lives in sessionStorage, not localStorage: it ends when the
  // browser (or tab) closes, so nothing is left behind on a shared
  // workstation. Not an HttpOnly cookie: the web actions take a Bearer
  // header and the UI may be served from another origin (a static host),
  // where a cookie would be third-party and need CSRF defences of its own.
  const TOKEN_KEY = "radcloud.token";
  const USER_KEY = "radcloud.user";
  const ACTIVE_KEY = "radcloud.active";     // last keyboard/pointer activity, ms
  const IDLE_MS = 15 * 60 * 1000;           // a shared workstation left alone logs itself out
  const store = window.sessionStorage;
  // Tokens kept by earlier versions in localStorage outlived the browser: drop them.
  try { localStorage.removeItem(TOKEN_KEY); localStorage.removeItem(USER_KEY); } catch (e) { /* storage off */ }

  function pageUrl(name, params) {
    const base = cfg.mode === "action" ? `${cfg.ui}/${name}` : `${name}.html`;
    const qs = params ? new URLSearchParams(params).toString() : "";
    return qs ? `${base}?${qs}` : base;
  }

  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch (e) { return null; }
  }

  function idle() { return Date.now() - (Number(store.getItem(ACTIVE_KEY)) || 0) > IDLE_MS; }
  function token() {
    const t = store.getItem(TOKEN_KEY);
    if (!t) return "";
    const c = claims(t);
    if (!c || (c.exp && c.exp * 1000 < Date.now()) || idle()) { forget(); return ""; }
    return t;
  }
  function user() { try { return JSON.parse(store.getItem(USER_KEY) || "null"); } catch (e) { return null; } }
  function remember(t, u) {
    store.setItem(TOKEN_KEY, t); store.setItem(USER_KEY, JSON.stringify(u)); store.setItem(ACTIVE_KEY, String(Date.now()));
  }
  function forget() { store.removeItem(TOKEN_KEY); store.removeItem(USER_KEY); store.removeItem(ACTIVE_KEY); }

  function toLogin(why) {
    const next = cfg.page && cfg.page !== "login" ? cfg.page + location.search : "";
    const params = { ...(next ? { next } : {}), ...(why ? { why } : {}) };
    location.replace(pageUrl("login", Object.keys(params).length ? params : null));
  }

  class ApiError extends Error {
    constructor(message, status, code, field) { super(message); this.status = status; this.code = code; this.field = field; }
  }

  /* A busy OpenWhisk namespace answers 429 (at its concurrency limit) or 503 (overloaded):
   * wait and ask again instead of failing. OpenWhisk refuses a 429 before anything runs, so
   * every method may be resent; a 503 may follow a forwarded request, so only GET, HEAD, PUT
   * and DELETE are resent on it. What an action answered itself carries the activation id
   * header (the login lockout's 429, "job store unreachable" 503): that is its answer, shown
   * as it is. Waits: Retry-After when the answer has one,
   * else exponential backoff with full jitter; busyBudgetMs in all, then the answer stands.
   * (No retry library: the UI has no build step; docs/api.md gives the same rules.) */
  const retry = {
    busyBudgetMs: 60000,
    now: () => Date.now(),
    random: Math.random,
    sleep(ms, signal) {
      return new Promise((resolve, reject) => {
        if (signal && signal.aborted) return reject(new DOMException("aborted", "AbortError"));
        const t = setTimeout(resolve, ms);
        if (signal) signal.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("aborted", "AbortError")); }, { once: true });
      });
    },
  };
  function busy(method, resp) {
    if (resp.headers.get("x-openwhisk-activation-id")) return false;  // an action's own answer
    return resp.status === 429 || (resp.status === 503 && ["GET", "HEAD", "PUT", "DELETE"].includes(method));
  }
  function retryAfterMs(resp) {
    const h = resp.headers.get("retry-after");
    if (!h) return null;
    if (/^\s*\d+\s*$/.test(h)) return Number(h) * 1000;
    const at = Date.parse(h);
    return isNaN(at) ? null : Math.max(0, at - retry.now());
  }
  async function fetchRetrying(url, init) {
    const started = retry.now();
    for (let attempt = 0; ; attempt++) {
      const resp = await fetch(url, init);
      const left = retry.busyBudgetMs - (retry.now() - started);
      if (!busy(init.method, resp) || left <= 0) return resp;
      const backoff = retry.random() * Math.min(8000, 500 * 2 ** attempt);
      await retry.sleep(Math.min(retryAfterMs(resp) ?? backoff, left), init.signal);
    }
  }

  /* Call a web action: RC.api("query", {body: {...}}) or {method: "GET", query: {...}}.
   * Returns the JSON body; throws ApiError with a plain-words message. */
  async function api(action, opts) {
    opts = opts || {};
    const method = opts.method || (opts.body ? "POST" : "GET");
    let url = cfg.api + action;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
      const s = q.toString();
      if (s) url += (url.includes("?") ? "&" : "?") + s;
    }
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    if (opts.body) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetchRetrying(url, { method, headers, body: opts.body ? JSON.stringify(opts.body) : undefined,
                                        signal: opts.signal, credentials: "same-origin" });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError("radcloud cannot be reached. Check your network connection and try again.", 0, "network");
    }
    let data = null;
    const text = await resp.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (resp.status === 401 && !opts.noRedirect) { forget(); toLogin(); }
    if (!resp.ok) {
      const err = (data && (data.error || data)) || {};
      const msg = typeof err === "string" ? err : (err.message || plainStatus(resp.status));
      throw new ApiError(msg, resp.status, err.code, err.field);
    }
    return data;
  }

  function plainStatus(status) {
    return ({ 400: "The request was not accepted.", 403: "You are not allowed to do this.",
              404: "Not found.", 409: "This conflicts with the current state; reload and try again.",
              429: "radcloud is busy; wait a little and try again.",
              502: "The PACS or storage did not answer properly; try again in a minute.",
              503: "A radcloud service is unavailable; try again in a minute." })[status]
           || `Something went wrong (HTTP ${status}). Try again.`;
  }

  /* el("tr", {class: "x", onclick: f}, child, "text", ...) — text is never parsed as HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "style") node.style.cssText = v; // CSSOM: allowed by style-src 'self', an attribute is not
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false)
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  const $ = (sel, root) => (root || document).querySelector(sel);

  /* Plain words (words.js): RC.words.state("partial") → "Finished, some parts failed". */
  const WORDS = window.RC_WORDS || { states: {} };
  const words = { ...WORDS, state: (s) => WORDS.states[s] || (s ? String(s) : WORDS.states.unknown) };
  /* The states a job (or a pipeline) ends in: pages stop watching it, lists stop refreshing for it. */
  const FINAL = ["succeeded", "failed", "partial", "cancelled"];
  /* A state in plain words; the raw value stays in data-state (styles, tests). */
  function stateBadge(state, attrs) {
    return el("span", { ...(attrs || {}), class: `state ${state || ""}`.trim(), dataset: { state: state || "" } }, words.state(state));
  }

  function showError(node, err) {
    if (!node) return;
    if (!err) { node.hidden = true; node.textContent = ""; return; }
    node.hidden = false;
    node.textContent = err.message || String(err);
  }

  function toast(message) {
    const box = $("#toast");
    if (!box) return;
    const item = el("div", { text: message });
    box.append(item);
    setTimeout(() => item.remove(), 4000);
  }

  const fmt = {
    date(d) { if (!d) return ""; d = String(d); return /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d; },
    name(n) { return n ? String(n).replace(/\^+/g, ", ").replace(/, $/, "") : ""; },
    bytes(n) { n = Number(n) || 0; const u = ["B", "KB", "MB", "GB"]; let i = 0;
      while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${u[i]}`; },
    /* A time from the server (epoch seconds or ISO 8601 UTC) in the reader's
     * own time zone, as YYYY-MM-DD HH:MM:SS (sortable, unambiguous). */
    when(t) {
      if (t === undefined || t === null || t === "") return "";
      const d = typeof t === "number" || /^\d+(\.\d+)?$/.test(String(t)) ? new Date(Number(t) * 1000) : new Date(t);
      if (isNaN(d)) return String(t);
      const p = (n) => String(n).padStart(2, "0");
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    },
    zone() { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; } catch (e) { return "local time"; } },
    duration(s) { s = Math.max(0, Math.round(Number(s) || 0)); const m = Math.floor(s / 60);
      return m ? `${m} min ${s % 60} s` : `${s} s`; },
  };

  /* Whose images these are: the fixed identity header of every page that shows a
   * patient's images or results (results, job, viewer), as a PACS viewer has.
   * `subject` is a job's (radcloud/work/subject.py): patients, studies, series.
   * Several patients in one job are all named, with a warning; a job from
   * before subjects were recorded says so instead of showing nothing. */
  function identity(subject, opts) {
    opts = opts || {};
    const patients = (subject && subject.patients) || [];
    const studies = (subject && subject.studies) || [];
    const series = (subject && subject.series) || [];
    const box = el("section", { class: "identity", "aria-label": "Patient and study", dataset: { recorded: patients.length ? "1" : "0" } });
    if (!patients.length && !studies.length) {
      box.append(el("strong", { class: "patient-name" }, "Patient not recorded"),
        el("span", { class: "muted" }, " This job was started before radcloud recorded whose images a job runs on; check the study in the PACS."));
      return box;
    }
    const who = (p) => el("span", { class: "who-line" },
      el("strong", { class: "patient-name" }, fmt.name(p.PatientName) || "(no name)"),
      el("span", { class: "field" }, "MRN ", el("span", { class: "mrn" }, p.PatientID || "—")),
      el("span", { class: "field" }, "Born ", el("span", { class: "dob" }, fmt.date(p.PatientBirthDate) || "—")),
      p.PatientSex ? el("span", { class: "field" }, "Sex ", p.PatientSex) : "");
    box.append(...patients.map(who));
    if (patients.length > 1) box.append(el("p", { class: "warn-line", role: "note" }, `${patients.length} different patients in this job: check which image belongs to whom.`));
    box.append(...studies.map((s) => el("span", { class: "study-line" },
      el("span", { class: "field" }, "Study ", el("span", { class: "study-date" }, fmt.date(s.StudyDate) || "date unknown")),
      el("span", { class: "study-desc" }, s.StudyDescription || "(no description)"),
      s.AccessionNumber ? el("span", { class: "field" }, "Acc. ", s.AccessionNumber) : "")));
    const shown = opts.series ? series.filter((s) => opts.series.includes(s.SeriesInstanceUID)) : series;
    if (shown.length) {
      const names = shown.slice(0, 6).map((s) => [s.SeriesNumber ? `#${s.SeriesNumber}` : "", s.Modality || "", s.SeriesDescription || ""].filter(Boolean).join(" "));
      const more = (subject.series_total || series.length) - names.length;
      box.append(el("span", { class: "series-line" }, "Series: ", el("span", { class: "series-names" }, names.join(" · ") + (more > 0 && !opts.series ? ` · and ${more} more` : ""))));
    }
    return box;
  }
  /* A series radcloud wrote into the PACS (results, radcloud/pacs/derivedseries.py: `derived` in search,
   * staged and viewer answers), named as such wherever series are listed, so a result is never
   * taken for an acquired image. */
  const DERIVED_TITLE = "Made by radcloud from another series of this study: a result, not an acquired image";
  function derivedBadge(item) {
    return item && item.derived ? el("span", { class: "badge derived", title: DERIVED_TITLE }, words.result) : "";
  }
  /* One line to find a job by: patient, MRN, study and plugin, lower case. */
  function subjectText(subject) {
    if (!subject) return "";
    return [...(subject.patients || []).flatMap((p) => [fmt.name(p.PatientName), p.PatientName, p.PatientID]),
            ...(subject.studies || []).flatMap((s) => [s.StudyDescription, fmt.date(s.StudyDate), s.AccessionNumber])]
      .filter(Boolean).join(" ").toLowerCase();
  }

  /* Click-to-sort on <th><button data-sort=key>; sortFn(key, dir) re-renders. */
  function sortable(table, sortFn) {
    let key = null, dir = 1;
    table.querySelectorAll("th button[data-sort]").forEach((b) => b.addEventListener("click", () => {
      const k = b.dataset.sort;
      dir = k === key ? -dir : 1; key = k;
      table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
      b.parentElement.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      sortFn(k, dir);
    }));
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a ?? "").localeCompare(String(b ?? ""), undefined, { numeric: true, sensitivity: "base" });
  }

  function csv(rows) {
    const cell = (v) => { v = v === null || v === undefined ? "" : String(v);
      if (/^[=+\-@]/.test(v)) v = "'" + v; // no formula injection in spreadsheets
      return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v; };
    return rows.map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
  }
  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type || "text/csv" }));
    const a = el("a", { href: url, download: name });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  /* Hand-over between pages (selected studies → pull → run), per tab. */
  const state = {
    get(k, d) { try { const v = sessionStorage.getItem("radcloud." + k); return v ? JSON.parse(v) : d; } catch (e) { return d; } },
    set(k, v) { sessionStorage.setItem("radcloud." + k, JSON.stringify(v)); },
  };

  async function logout() {
    forget();
    try { await fetch(cfg.api + "login", { method: "DELETE", credentials: "same-origin" }); } catch (e) { /* offline: token is gone anyway */ }
    location.replace(pageUrl("login"));
  }
  /* End every session of this user (other browsers, a workstation left
   * logged in): the server revokes all their tokens. Only once it says so
   * is this tab logged out; otherwise the user is told it did not work. */
  async function logoutEverywhere() {
    try {
      await api("login", { method: "DELETE", body: { everywhere: true }, noRedirect: true });
    } catch (err) {
      toast(err.status === 401 ? "This session had already ended: log in again, then use \u201cLog out everywhere\u201d."
                               : `Your other sessions could not be ended: ${err.message}`);
      if (err.status === 401) setTimeout(logout, 3000);
      return;
    }
    await logout();
  }

  /* The viewer's module (dwv, 784 kB) into the browser's cache, so opening a series later does
   * not wait for it: its name is its content hash and the ui action lets browsers keep it for
   * good, so this fetches it once per release at most. The viewer page preloads it itself.
   * Never on the login page, and on other pages only once their first screen is drawn: the
   * fetch is one 830 kB answer of the ui action, and it and the browser taking it in ran on the
   * same CPUs as the login check and the first search (docs/api.md, "The web UI's first second").
   * A page whose first screen waits for answers passes them to RC.firstScreen(promise). */
  const firstScreen = [];
  function prefetchViewer() {
    if (cfg.page === "login" || cfg.page === "viewer" || !meta("viewer-module")) return;
    const idleThen = (f) => (window.requestIdleCallback ? requestIdleCallback(f, { timeout: 3000 }) : setTimeout(f, 200));
    addEventListener("load", () => Promise.all(firstScreen).then(() => idleThen(() => {
      document.head.appendChild(Object.assign(document.createElement("link"), { rel: "prefetch", href: meta("viewer-module") }));
    })));
  }
  prefetchViewer();

  window.RC = { cfg, pageUrl, api, retry, ApiError, token, user, remember, forget, toLogin, el, $, showError, toast,
                fmt, identity, subjectText, derivedBadge, words, stateBadge, FINAL, sortable, compare, csv, download, state, claims, IDLE_MS,
                firstScreen: (p) => { firstScreen.push(Promise.resolve(p).catch(() => null)); return p; } };

  // Every page but login needs a token; without one, go to the login page.
  if (cfg.page !== "login") {
    const wasIdle = store.getItem(TOKEN_KEY) && idle();
    if (!token()) { toLogin(wasIdle ? "idle" : ""); return; }
    // Activity keeps the session; a minute's resolution is plenty for a 15-minute limit.
    const touch = () => { if (!idle()) store.setItem(ACTIVE_KEY, String(Date.now())); };
    ["pointerdown", "keydown", "wheel"].forEach((e) => addEventListener(e, touch, { passive: true, capture: true }));
    touch();
    setInterval(() => { if (idle()) { forget(); toLogin("idle"); } }, 30 * 1000);
  }
  document.addEventListener("DOMContentLoaded", () => {
    const u = user();
    const who = $("#who-name");
    if (who && u) who.textContent = `${u.name} (${u.role})`;
    if (u && u.role === "admin") document.querySelectorAll(".admin-only").forEach((n) => { n.hidden = false; });
    const out = $("#logout");
    if (out) out.addEventListener("click", logout);
    const all = $("#logout-all");
    if (all) all.addEventListener("click", logoutEverywhere);
  });
})();
