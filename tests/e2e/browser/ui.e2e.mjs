// Drives the radcloud web UI in headless Debian Chromium, one step after the
// other, like a clinician: redirect → login → search (MRN, dates) → pull →
// run dcm2png → watch → view → cancel a job → retry a failed job → a pull the
// PACS can no longer answer, then its retry; a failed series' Retry button;
// forgiving name search and Enter; every page at 1366 and 390 px; the idle
// logout. The browser runs in Asia/Kolkata (UTC+5:30) so that local times
// can be told from UTC. Prints one JSON line per step
// ({step, ok, ms, detail|error}) and saves a screenshot per step; stops at the
// first failed step (later ones depend on it). Driven by test_ui.py.
//
// env: RC_UI (the ui action's URL), RC_USER, RC_PASSWORD, RC_SHOTS (dir),
//      RC_MRN, RC_DATE_FROM, RC_DATE_TO, RC_PLUGIN, RC_TIMEOUT_MS,
//      RC_ORTHANC + RC_ORTHANC_AUTH ("user:password": the pull-error step
//      deletes a series behind the UI's back, then puts it back)
import { env, SHOTS, FINAL, emit, external, consoleErrors, watch, launch, stepper, downloadText } from "./harness.mjs";

const UI = env.RC_UI;
const MRN = env.RC_MRN || "RC100002";
const PLUGIN = env.RC_PLUGIN || "dcm2png";
const LONG = Number(env.RC_TIMEOUT_MS || 180000);

const ZONE = "Asia/Kolkata";
const { browser, page } = await launch({ acceptDownloads: true, timezoneId: ZONE });
// What a reader in ZONE should see for a server time: YYYY-MM-DD HH:MM:SS (sv-SE formats so).
const localTime = (t) => new Date(typeof t === "number" ? t * 1000 : t).toLocaleString("sv-SE", { timeZone: ZONE });

// Orthanc's REST API, straight (not through radcloud): the PACS changing under the UI.
async function orthanc(method, path, body) {
  const headers = { Authorization: "Basic " + Buffer.from(env.RC_ORTHANC_AUTH || ":").toString("base64") };
  const res = await fetch(env.RC_ORTHANC.replace(/\/$/, "") + path, { method, headers, body });
  if (!res.ok) throw new Error(`Orthanc ${method} ${path}: ${res.status}`);
  return res;
}

// The results the first run pushed into the PACS (the derived-series step reads them), removed
// again once the steps are done: other tests share this PACS.
async function dropDerived() {
  const found = await orthanc("POST", "/tools/find", JSON.stringify({ Level: "Series", Query: { PatientID: MRN, SeriesDescription: "radcloud *" } }));
  const ids = await found.json();
  for (const id of ids) await orthanc("DELETE", `/series/${id}`);
  return ids.length;
}

// The raw state: the page shows it in plain words (words.js) and keeps it in data-state.
const jobState = () => page.getAttribute("#job-state", "data-state");

// Run PLUGIN on the last pull's series from the Run page; returns the job id.
async function runPlugin(params = {}) {
  await page.goto(`${UI}/run`);
  await page.waitForSelector(`#plugin-list input[value="${PLUGIN}"]`, { timeout: 15000 });
  await page.check(`#plugin-list input[value="${PLUGIN}"]`);
  await page.waitForSelector("#run-btn:not([disabled])");
  for (const [name, value] of Object.entries(params)) await page.fill(`#param-fields [name="${name}"]`, String(value));
  await page.check("#opt-force");   // never a cached result: these jobs must really run
  await page.click("#run-btn");
  await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
  await page.waitForSelector("#job-state", { timeout: 20000 });
  return new URL(page.url()).searchParams.get("job");
}

/* In the page: every visible box on it that scrolls sideways (its content wider than the box,
 * overflow-x auto or scroll), and every empty field whose hint (placeholder) is cut off, as
 * "tag#id.class: content/box px". The page itself not scrolling is not enough: a table or a
 * form can scroll inside its own box, and a phone user never finds the columns or words
 * hidden there. Two boxes are meant to scroll sideways: the viewer's strip of series on a
 * phone (.vw-thumbs: a film strip of whole thumbnails, where a wrapped grid would push the
 * image off the first screen) and a plugin's own result tables on the Results page (#tables:
 * a spreadsheet of however many columns the plugin wrote). */
function sidewaysBoxes() {
  const name = (n) => n.tagName.toLowerCase() + (n.id ? `#${n.id}` : "") + (n.classList.length ? `.${[...n.classList].join(".")}` : "");
  const shown = (n) => n.getClientRects().length && getComputedStyle(n).visibility !== "hidden";
  const out = [];
  for (const n of document.querySelectorAll("body *")) {
    if (!shown(n) || n.matches(".vw-thumbs, #tables")) continue;
    const cs = getComputedStyle(n);
    if (/auto|scroll/.test(cs.overflowX) && n.scrollWidth > n.clientWidth + 1) out.push(`${name(n)}: ${n.scrollWidth}/${n.clientWidth}`);
    if (n.matches("input[placeholder], textarea[placeholder]") && !n.value) {
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.font = `${cs.fontSize} ${cs.fontFamily}`;
      const room = n.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      const need = Math.ceil(ctx.measureText(n.placeholder).width);
      if (need > room + 1) out.push(`${name(n)} hint "${n.placeholder}": ${need}/${Math.floor(room)}`);
    }
  }
  return out;
}

let resultJob = null;    // the dcm2png job whose results the page tour shows
let stagedSeries = null; // a series pulled by pull-reaches-100: the page tour opens it in the viewer
const step = stepper(page, { shot: (name, n) => `${SHOTS}/${String(step.n).padStart(2, "0")}-${name}.png`, fullPage: true });

const ok = await (async () => {
  if (!await step("no-token-redirects-to-login", async () => {
    await page.goto(`${UI}/jobs`);
    await page.waitForSelector("#login-form", { timeout: 10000 });
    if (!page.url().includes("/login")) throw new Error(`not redirected: ${page.url()}`);
    return { url: page.url().replace(UI, "") };
  })) return false;

  if (!await step("login", async () => {
    await page.fill("#username", env.RC_USER);
    await page.fill("#password", "wrong password here");
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#login-error:not([hidden])", { timeout: 10000 });
    const refused = await page.textContent("#login-error");
    await page.fill("#username", env.RC_USER);
    await page.fill("#password", env.RC_PASSWORD);
    await page.click("#login-form button[type=submit]");
    await page.waitForURL(/\/ui\/jobs/, { timeout: 15000 });   // back to where the redirect started
    const t0 = Date.now();
    await page.goto(`${UI}/search`, { waitUntil: "load" });
    const loadMs = Date.now() - t0;
    const nav = await page.evaluate(() => { const e = performance.getEntriesByType("navigation")[0]; return Math.round(e.loadEventEnd - e.startTime); });
    const storage = await page.evaluate(() => ({
      local: Object.keys(localStorage).filter((k) => localStorage.getItem(k).includes(".ey") || /token/i.test(k)),
      session_token: Boolean(sessionStorage.getItem("radcloud.token")) }));
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    return { refused, page_load_ms: loadMs, navigation_ms: nav, storage, focused };
  })) return false;

  if (!await step("search-by-mrn", async () => {
    await page.fill("#mrn", MRN);
    const t0 = Date.now();
    await page.click("#search-btn");
    await page.waitForSelector("#results tr.study", { timeout: 20000 });
    const ms = Date.now() - t0;
    const rows = await page.$$eval("#results tr.study td:nth-child(3)", (tds) => tds.map((td) => td.textContent));
    if (!rows.length || rows.some((r) => r !== MRN)) throw new Error(`unexpected MRNs: ${rows}`);
    // expand the first study: the series level
    await page.click("#results tr.study td:nth-child(2) button");
    await page.waitForSelector("#results tr.series td:nth-child(9)", { timeout: 20000 });
    const series = await page.$$eval("#results tr.series", (trs) => trs.length);
    // #21 item 4: each series row shows what it looks like (Orthanc's preview, via query/previews)
    await page.waitForFunction((n) => [...document.querySelectorAll("#results tr.series img.series-thumb")]
      .filter((i) => i.complete && i.naturalWidth > 0).length === n, series, { timeout: 20000 });
    const thumbs = await page.$$eval("#results tr.series img.series-thumb", (is) => is.map((i) => [i.naturalWidth, i.naturalHeight]));
    // the series rows' Accession column (7th) is empty: body part goes with the description
    const seriesAccession = await page.$$eval("#results tr.series td:nth-child(7)", (tds) => tds.map((td) => td.textContent));
    // sortable columns and CSV export
    await page.click('#results th button[data-sort="date"]');
    const sorted = await page.getAttribute('#results th:has(button[data-sort="date"])', "aria-sort");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#csv-btn")]);
    const csv = await downloadText(download);
    if (!csv.startsWith("PatientName,PatientID") || !csv.includes(MRN)) throw new Error(`bad CSV: ${csv.slice(0, 200)}`);
    return { search_to_results_ms: ms, server_ms: Number(await page.getAttribute("#search-time", "data-ms")), studies: rows.length,
             series, series_accession: seriesAccession, sorted, csv_lines: csv.trim().split("\n").length, thumbs };
  })) return false;

  if (!await step("search-forgiving", async () => {
    // Run one search with `submit` and wait for its answer to be on screen.
    const search = async (submit) => {
      await page.evaluate(() => { document.querySelector("#search-time").textContent = ""; });
      const [resp] = await Promise.all([
        page.waitForResponse((r) => /\/radcloud\/query$/.test(r.url()) && r.request().method() === "POST", { timeout: 20000 }), submit()]);
      await page.waitForFunction(() => /^in \d+ ms$/.test(document.querySelector("#search-time").textContent), null, { timeout: 20000 });
      const sent = resp.request().postDataJSON();
      const rows = await page.$$eval("#results tr.patient", (trs) => trs.map((tr) => [tr.cells[1].textContent.replace(/^[▾▸] /, ""), tr.cells[2].textContent]));
      const answer = await resp.json().catch(() => ({}));
      return { sent: sent.PatientName || sent.PatientID, fields: Object.keys(sent).filter((k) => /^[A-Z]/.test(k)), status: resp.status(), total: answer.total, rows,
               count: await page.textContent("#result-count") };
    };
    const byName = {};
    for (const typed of ["smith", "Smith, Jo", "?MITH^JOHN"]) {
      await page.click("#search-form button[type=reset]");
      await page.fill("#name", typed);
      byName[typed] = await search(() => page.press("#name", "Enter"));
    }
    // Enter in the MRN box searches; Shift+Enter adds a line (a second MRN).
    await page.click("#search-form button[type=reset]");
    await page.focus("#mrn");
    await page.keyboard.type(MRN);
    await page.keyboard.press("Shift+Enter");
    await page.keyboard.type("RC100003");
    const byMrn = await search(() => page.keyboard.press("Enter"));
    return { by_name: byName, mrn_box: await page.inputValue("#mrn"), by_mrn: byMrn };
  })) return false;

  if (!await step("search-by-date-range", async () => {
    await page.click("#search-form button[type=reset]");
    await page.fill("#date-from", env.RC_DATE_FROM || "2025-06-01");
    await page.fill("#date-to", env.RC_DATE_TO || "2025-06-30");
    await page.evaluate(() => { document.querySelector("#result-count").textContent = ""; });  // wait for THIS answer
    const t0 = Date.now();
    await page.click("#search-btn");
    await page.waitForFunction(() => document.querySelector("#result-count").textContent.includes("stud"), null, { timeout: 20000 });
    const ms = Date.now() - t0;
    const dates = await page.$$eval("#results tr.study td:nth-child(4)", (tds) => tds.map((td) => td.textContent));
    const from = env.RC_DATE_FROM || "2025-06-01", to = env.RC_DATE_TO || "2025-06-30";
    if (!dates.length || dates.some((d) => d < from || d > to)) throw new Error(`dates outside the range: ${dates}`);
    return { search_to_results_ms: ms, studies: dates.length };
  })) return false;

  if (!await step("pull-reaches-100", async () => {
    await page.click("#search-form button[type=reset]");
    await page.fill("#mrn", MRN);
    await page.click("#search-btn");
    await page.waitForSelector("#results tr.study input[type=checkbox]", { timeout: 20000 });
    await page.check("#results tr.study input[type=checkbox] >> nth=0");
    await page.click("#pull-btn");
    await page.waitForSelector("#start-pull:not([disabled])", { timeout: 10000 });
    const t0 = Date.now();
    await page.click("#start-pull");
    await page.waitForSelector(".pull-item .row[data-series]", { timeout: 30000 });
    await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-pull-in-progress.png`, fullPage: true });
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll(".pull-item .row[data-series]")];
      return rows.length && rows.every((r) => r.dataset.state === "succeeded");
    }, null, { timeout: LONG, polling: 250 });
    const counts = await page.$$eval(".pull-item .row[data-series] .count", (s) => s.map((x) => x.textContent));
    if (counts.some((c) => { const [a, b] = c.split("/"); return a !== b || b === "0"; })) throw new Error(`bars not full: ${counts}`);
    stagedSeries = await page.$eval(".pull-item .row[data-series]", (r) => r.dataset.series);
    return { pull_ms: Date.now() - t0, series: counts };
  })) return false;

  if (!await step("run-plugin", async () => {
    await page.click("#to-run");
    await page.waitForSelector(`#plugin-list input[value="${PLUGIN}"]`, { timeout: 15000 });
    // #21 item 5: every parameter of every plugin in plain words (label and help), the flag behind "details".
    const labels = {};
    for (const value of await page.$$eval("#plugin-list input", (is) => is.map((i) => i.value))) {
      await page.check(`#plugin-list input[value="${value}"]`);
      labels[value] = {
        about: await page.$eval("#plugin-about", (e) => e.innerText),
        params: await page.$$eval("#param-fields .param:not([role=group])", (ps) => ps.map((p) => ({
          name: p.querySelector("input").name, label: p.querySelector("label").innerText.trim(),
          help: p.querySelector(".help")?.innerText || "", details: p.querySelector("details.technical code")?.textContent || "" }))) };
    }
    await page.check(`#plugin-list input[value="${PLUGIN}"]`);
    await page.waitForSelector("#run-btn:not([disabled])");
    const fields = await page.$$eval("#param-fields .param", (p) => p.length);
    await page.check("#opt-force");
    await page.check("#opt-push");   // results into the PACS: the derived-series step reads them back
    await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-run-form.png`, fullPage: true });
    await page.click("#run-btn");
    await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
    resultJob = new URL(page.url()).searchParams.get("job");
    return { param_fields: fields, job: resultJob, labels };
  })) return false;

  if (!await step("job-finishes", async () => {
    const t0 = Date.now();
    await page.waitForSelector("#job-state", { timeout: 20000 });
    await page.waitForFunction(() => ["succeeded", "failed", "partial", "cancelled"].includes(document.querySelector("#job-state")?.dataset.state),
                               null, { timeout: LONG, polling: 250 });
    const state = await jobState();
    const shown = await page.textContent("#job-state");
    const page_text = await page.$eval("#job-detail", (e) => e.innerText);   // what a reader sees (closed details hidden)
    if (state !== "succeeded") throw new Error(`job ended ${state}`);
    return { job_ms: Date.now() - t0, state, shown, page_text };
  })) return false;

  if (!await step("view-result-image", async () => {
    await page.click("#view-results");
    const t0 = Date.now();
    await page.waitForSelector("#thumbs button.slice img", { timeout: 20000 });
    await page.waitForFunction(() => { const i = document.querySelector("#thumbs button.slice img"); return i && i.complete && i.naturalWidth > 0; },
                               null, { timeout: 30000 });
    const firstThumbMs = Date.now() - t0;
    await page.click("#thumbs button.slice >> nth=0");
    await page.waitForFunction(() => document.querySelector("#canvas").dataset.loaded, null, { timeout: 30000 });
    await page.locator("#canvas").screenshot({ path: `${SHOTS}/canvas.png` });
    const stats = await page.evaluate(() => {
      const c = document.querySelector("#canvas");
      try {
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let min = 255, max = 0, nonzero = 0;
        for (let i = 0; i < d.length; i += 4) { min = Math.min(min, d[i]); max = Math.max(max, d[i]); if (d[i] > 10) nonzero++; }
        return { width: c.width, height: c.height, min, max, nonzero_fraction: nonzero / (d.length / 4) };
      } catch (e) { return { width: c.width, height: c.height, tainted: true }; }
    });
    // keyboard: next slice; then a display window preset
    const before = await page.textContent("#slice-label");
    await page.focus("#canvas");
    await page.keyboard.press("ArrowUp");
    await page.waitForFunction((b) => document.querySelector("#slice-label").textContent !== b, before, { timeout: 10000 });
    await page.click('#presets button[data-window="128,128"]');
    await page.locator("#viewer").screenshot({ path: `${SHOTS}/viewer-high-contrast.png` });
    return { first_thumbnail_ms: firstThumbMs, canvas: stats, canvas_png: `${SHOTS}/canvas.png`, slice_after_arrow: await page.textContent("#slice-label") };
  })) return false;

  if (!await step("identity-header", async () => {
    // Still on the results page: whose images, which study, which series — and it stays
    // on screen while the page scrolls.
    const idText = () => page.$eval(".identity", (e) => e.innerText);
    await page.waitForSelector(".identity .patient-name", { timeout: 10000 });
    const results = { text: await idText(), title: await page.title() };
    await page.evaluate(() => window.scrollTo(0, document.scrollingElement.scrollHeight));
    results.top_after_scroll = await page.$eval(".identity", (e) => Math.round(e.getBoundingClientRect().top));
    // The job page shows the same header; the jobs list has patient and study columns, searchable.
    await page.goto(`${UI}/jobs?job=${resultJob}`);
    await page.waitForSelector("#job-detail .identity .patient-name", { timeout: 15000 });
    const job = await page.$eval("#job-detail .identity", (e) => e.innerText);
    await page.waitForSelector(`#jobs tr[data-job="${resultJob}"] td.patient`, { timeout: 15000 });
    const row = await page.$eval(`#jobs tr[data-job="${resultJob}"]`, (tr) => [...tr.cells].slice(0, 3).map((td) => td.innerText));
    const visible = () => page.$$eval("#jobs tbody tr[data-job]", (trs) => trs.length);
    const all = await visible();
    await page.fill("#job-find", "smith rc100002");
    const found = await visible();
    await page.fill("#job-find", "nobody-by-this-name");
    const none = await visible();
    const noMatch = await page.textContent("#jobs tbody tr.empty");
    await page.fill("#job-find", "");
    // A job from before subjects were recorded (the answer rewritten: no subject) says so.
    await page.route(/\/radcloud\/status\/j[0-9a-f]+(\?|$)/, async (route) => {
      const real = await (await route.fetch()).json();
      delete real.subject;
      await route.fulfill({ json: real });
    });
    await page.reload();
    await page.waitForSelector("#job-detail .identity .patient-name", { timeout: 15000 });
    const old = await page.$eval("#job-detail .identity", (e) => e.innerText);
    await page.unroute(/\/radcloud\/status\/j[0-9a-f]+(\?|$)/);
    return { results, job, row, all, found, none, no_match: noMatch, old };
  })) return false;

  if (!await step("derived-series", async () => {
    // #21 item 2: the run above sent its pictures to the PACS. The study's series list shows them
    // badged, numbered after their source; choosing the whole study does not choose them.
    await page.goto(`${UI}/search`);
    await page.fill("#mrn", MRN);
    await page.press("#mrn", "Enter");
    await page.waitForSelector("#results tr.study", { timeout: 20000 });
    await page.click("#results tr.study td:nth-child(2) button");
    await page.waitForSelector("#results tr.series.derived", { timeout: 20000 });
    await page.check("#results tr.study input[type=checkbox] >> nth=0");
    const rows = await page.$$eval("#results tr.series", (trs) => trs.map((tr) => ({
      // the number's own element: the cell also holds the phone-only summary, which innerText
      // would include whenever the stylesheet that hides it is not applied yet
      number: tr.querySelector(".series-no").textContent.replace("Series", "").trim(), description: tr.cells[5].innerText,
      badge: tr.querySelector(".badge.derived")?.textContent || "", checked: tr.querySelector("input").checked,
      disabled: tr.querySelector("input").disabled })));
    await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-derived-badge.png`, fullPage: true });
    return { rows };
  })) return false;

  if (!await step("staged-after-relogin", async () => {
    // Another day, another browser: the Run page lists what was pulled before, by patient,
    // with size and age, and runs on it; pulling the same study again says it is already staged.
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 860 }, timezoneId: ZONE });
    const p = await ctx.newPage();
    watch(p, "[second browser] ");
    try {
      await p.goto(`${UI}/run`);
      await p.fill("#username", env.RC_USER);
      await p.fill("#password", env.RC_PASSWORD);
      await p.click("#login-form button[type=submit]");
      await p.waitForSelector("#staged-list .staged-item", { timeout: 20000 });
      const items = await p.$$eval("#staged-list .staged-item", (ls) => ls.map((l) => l.innerText));
      const mine = await p.$$eval("#staged-list .staged-item", (ls, mrn) => ls.findIndex((l) => l.innerText.includes(mrn)), MRN);
      if (mine < 0) throw new Error(`no staged study of ${MRN} listed: ${items}`);
      await p.check(`#staged-list .staged-item >> nth=${mine} >> input`);
      await p.check(`#plugin-list input[value="${PLUGIN}"]`);
      await p.waitForSelector("#run-btn:not([disabled])", { timeout: 10000 });
      await p.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-staged-list.png`, fullPage: true });
      const [sent] = await Promise.all([p.waitForRequest((r) => /\/radcloud\/dispatch$/.test(r.url()), { timeout: 15000 }), p.click("#run-btn")]);
      await p.waitForSelector("#job-detail .identity .patient-name", { timeout: 20000 });
      const jobIdentity = await p.$eval("#job-detail .identity", (e) => e.innerText);
      // Pull the same study again.
      await p.goto(`${UI}/search`);
      await p.fill("#mrn", MRN);
      await p.press("#mrn", "Enter");
      await p.waitForSelector("#results tr.study input[type=checkbox]", { timeout: 20000 });
      await p.check("#results tr.study input[type=checkbox] >> nth=0");
      await p.click("#pull-btn");
      await p.waitForSelector("#start-pull:not([disabled])", { timeout: 10000 });
      await p.click("#start-pull");
      await p.waitForSelector("#already-staged", { timeout: LONG });
      await p.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-already-staged.png`, fullPage: true });
      const already = await p.textContent("#already-staged");
      const derivedLeftOut = await p.textContent("#derived-left-out");
      const seriesStates = await p.$$eval(".pull-item .row[data-series] .state", (s) => s.map((x) => x.textContent));
      // #21 item 4: this clinician's Home: the job just run and the staged study, each box on its own.
      await p.goto(`${UI}/home`);
      for (const box of ["#home-jobs", "#home-staged", "#home-recent"]) await p.waitForSelector(`${box}[aria-busy=false]`, { timeout: 20000 });
      const home = { jobs: await p.$eval("#home-jobs", (e) => e.innerText), staged: await p.$eval("#home-staged", (e) => e.innerText),
                     recent: await p.$eval("#home-recent", (e) => e.innerText) };
      await p.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-home.png`, fullPage: true });
      return { items, inputs: sent.postDataJSON().inputs, job_identity: jobIdentity, already, home,
               derived_left_out: derivedLeftOut, series_states: seriesStates };
    } catch (err) {
      await p.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-staged-failed.png`, fullPage: true }).catch(() => {});
      const shown = await p.evaluate(() => [...document.querySelectorAll(".error:not([hidden])")].map((e) => e.textContent).join(" | ")).catch(() => "");
      throw new Error(`${err.message} — page says: ${shown} — at ${p.url()}`);
    } finally { await ctx.close(); }
  })) return false;
  if (!await step("job-cancel", async () => {
    const job = await runPlugin({ compressLevel: 9 });
    const seen = await jobState();
    if (FINAL.includes(seen)) throw new Error(`job ${seen} before it could be cancelled`);
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().includes("/cancel") && r.request().method() === "POST", { timeout: 15000 }),
      page.click('#job-detail button:text-is("Cancel")')]);
    const toast = await page.waitForSelector('#toast div:has-text("Cancel requested")', { timeout: 5000 }).then((e) => e.textContent());
    await page.waitForFunction(() => document.querySelector("#job-state")?.dataset.state === "cancelled", null, { timeout: 30000, polling: 250 });
    const cancelBtn = await page.$$('#job-detail button:text-is("Cancel")');
    return { job, state_before: seen, cancel_status: resp.status(), toast, state: await jobState(),
             shards_line: await page.$eval("#job-shards", (e) => e.textContent),
             reason: await page.$$eval("#job-detail p.error", (ns) => ns.map((x) => x.textContent).join("")),
             cancel_button_left: cancelBtn.length };
  })) return false;

  if (!await step("job-retry", async () => {
    // --wc without --ww: dcm2png refuses it (exit 2) in every shard, every time
    const t00 = Date.now();
    const job = await runPlugin({ wc: 40 });
    await page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL, { timeout: LONG, polling: 250 });
    const firstMs = Date.now() - t00;
    const first = await jobState();
    if (first !== "failed") throw new Error(`job ended ${first}, expected failed`);
    const log = await page.$$eval("#job-detail details[open] pre.log", (ns) => ns.map((x) => x.textContent).join("\n"));
    // What a clinician reads (radcloud/work/reasons.py), and the recorded reason behind "Technical details".
    const words = { reason: await page.$eval("#job-reason", (e) => e.textContent),
                    why: await page.$$eval("#job-detail td.why", (ns) => ns.map((x) => x.textContent)),
                    technical: await page.$eval("#job-reason-details", (e) => e.textContent),
                    technical_open: await page.$eval("#job-reason-details", (e) => e.open) };
    for (const width of [1366, 390]) {
      await page.setViewportSize({ width, height: 900 });
      await page.screenshot({ path: `${SHOTS}/job-failed-plain-words-${width}.png`, fullPage: true });
    }
    await page.setViewportSize({ width: 1366, height: 900 });
    // Status answers after the retry's must say failed again (the shards reran and failed).
    let retried = false;
    page.on("response", (r) => { if (r.url().includes("/retry") && r.request().method() === "POST") retried = true; });
    const again = page.waitForResponse(async (r) => retried && r.url().includes(`/status/${job}`) && r.request().method() === "GET" &&
                                                    (await r.json().catch(() => ({}))).state === "failed", { timeout: LONG });
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().includes("/retry") && r.request().method() === "POST", { timeout: 15000 }),
      page.click('#job-detail button:has-text("Retry the failed parts")')]);
    const body = await resp.json();
    await page.waitForSelector('#toast div:has-text("The failed parts were started again")', { timeout: 5000 });
    const after = await (await again).json();
    await page.waitForFunction(() => document.querySelector("#job-state")?.dataset.state === "failed", null, { timeout: 10000 });
    return { job, first_state: first, first_log: log.slice(-200), words, retry_status: resp.status(), retried: body.retried || [],
             first_run_ms: firstMs, state_after_retry: body.state, attempts: (after.shards || []).map((x) => x.attempt), state: await jobState() };
  })) return false;

  if (!await step("pull-errors-then-retry", async () => {
    const t00 = Date.now();
    await page.goto(`${UI}/search`);
    await page.fill("#mrn", MRN);
    await page.click("#search-btn");
    await page.waitForSelector("#results tr.study td:nth-child(2) button", { timeout: 20000 });
    await page.click("#results tr.study td:nth-child(2) button");
    await page.waitForSelector("#results tr.series input[type=checkbox]", { timeout: 20000 });
    await page.check("#results tr.series input[type=checkbox] >> nth=0");
    await page.click("#pull-btn");
    await page.waitForSelector("#start-pull:not([disabled])", { timeout: 10000 });
    const uid = await page.evaluate(() => window.RC.state.get("selection").series[0].SeriesInstanceUID);
    // The PACS loses the series after the search answered: keep its files, delete it.
    const t = { selected: Date.now() - t00 };
    const [found] = await (await orthanc("POST", "/tools/lookup", uid)).json();
    if (!found || found.Type !== "Series") throw new Error(`Orthanc does not know series ${uid}`);
    const instances = (await (await orthanc("GET", `/series/${found.ID}`)).json()).Instances.length;
    // One ZIP out, one ZIP back in (Orthanc's POST /instances takes archives): the same bytes, the same ids.
    const archive = Buffer.from(await (await orthanc("GET", `/series/${found.ID}/archive`)).arrayBuffer());
    await orthanc("DELETE", `/series/${found.ID}`);
    t.deleted = Date.now() - t00;
    let error, restored = false;
    try {
      await page.click("#start-pull");
      await page.waitForSelector("#pull-error:not([hidden])", { timeout: 20000 });
      error = await page.textContent("#pull-error");
      t.error_shown = Date.now() - t00;
      if (await page.isDisabled("#start-pull")) throw new Error("no way to retry: Start pull stays disabled");
      await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-pull-error.png`, fullPage: true });
    } finally {
      const back = await (await orthanc("POST", "/instances", archive)).json();   // the PACS has it again
      restored = (Array.isArray(back) ? back : [back]).filter((x) => x.ID).length === instances;
      t.restored = Date.now() - t00;
    }
    const t0 = Date.now();
    await page.click("#start-pull");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll(".pull-item .row[data-series]")];
      return rows.length && rows.every((r) => r.dataset.state === "succeeded");
    }, null, { timeout: LONG, polling: 250 });
    const counts = await page.$$eval(".pull-item .row[data-series] .count", (s) => s.map((x) => x.textContent));
    const firstRetrieve = await page.evaluate(() => window.RC.state.get("pull").retrieve_id);
    // The per-series Retry button. A series failing after the pull started
    // cannot be staged deterministically here (the worker races any delete),
    // so ONE status answer is rewritten to say the series failed (server-side
    // reporting of that is covered by tests/reliability/test_faults.py); the
    // rerun the button starts is real.
    await page.route(/\/retrieve\?.*retrieve_id=/, async (route) => {
      const real = await (await route.fetch()).json();
      for (const se of real.series) Object.assign(se, { state: "failed", reason: "Orthanc unreachable: ConnectionError" });
      await route.fulfill({ json: { ...real, state: "failed", series_done: 0 } });
    }, { times: 1 });
    await page.reload();
    await page.waitForSelector('.pull-item button:text-is("Retry")', { timeout: 15000 });
    const seriesError = await page.$$eval(".pull-item .error", (ns) => ns.map((x) => x.textContent).join(" "));
    await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-pull-series-failed.png`, fullPage: true });
    const [rerun] = await Promise.all([
      page.waitForRequest((r) => /\/retrieve(\?|$)/.test(r.url()) && r.method() === "POST", { timeout: 10000 }),
      page.click('.pull-item button:text-is("Retry")')]);
    await page.waitForFunction((old) => {
      const rows = [...document.querySelectorAll(".pull-item .row[data-series]")];
      const now = window.RC.state.get("pull");
      return now && now.retrieve_id !== old && rows.length && rows.every((r) => r.dataset.state === "succeeded");
    }, firstRetrieve, { timeout: LONG, polling: 250 });
    return { instances, error, restored, timings_ms: t, series_error: seriesError,
             rerun_body: rerun.postDataJSON(), error_hidden_after_retry: await page.isHidden("#pull-error"),
             retry_ms: Date.now() - t0, series: counts };
  })) return false;

  if (!await step("admin-audit-trail", async () => {
    // the clinician may not read the trail; an admin sees who searched for whom
    await page.goto(`${UI}/audit`);
    await page.waitForSelector("#audit-error:not([hidden])", { timeout: 15000 });
    const refused = await page.textContent("#audit-error");
    await page.click("#logout");
    await page.waitForSelector("#login-form", { timeout: 10000 });
    const tokenAfterLogout = await page.evaluate(() => sessionStorage.getItem("radcloud.token"));
    await page.fill("#username", env.RC_ADMIN);
    await page.fill("#password", env.RC_ADMIN_PASSWORD);
    await page.click("#login-form button[type=submit]");
    await page.waitForURL(/\/ui\/home/, { timeout: 15000 });   // the first screen after a login
    await page.waitForSelector("#mrn", { timeout: 10000 });
    const focusedAfterLogin = await page.evaluate(() => document.activeElement && document.activeElement.id);
    // A slow trail (held back 800 ms here) shows "Loading…" instead of an empty table.
    let release;
    const held = new Promise((r) => { release = r; });
    await page.route(/\/radcloud\/audit\?/, async (route) => { await held; await route.continue(); }, { times: 1 });
    const answer = page.waitForResponse((r) => /\/radcloud\/audit\?/.test(r.url()), { timeout: 15000 });
    await page.click('header a:has-text("Audit")');
    await page.waitForSelector("#audit[aria-busy=true] tr.loading", { timeout: 10000 });
    const loadingText = await page.textContent("#audit tr.loading");
    await page.screenshot({ path: `${SHOTS}/${String(step.n).padStart(2, "0")}-audit-loading.png`, fullPage: true });
    setTimeout(release, 800);
    const entries = (await (await answer).json()).entries;
    await page.waitForSelector("#audit[aria-busy=false] tbody tr", { timeout: 15000 });
    const rows = await page.$$eval("#audit tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
    const query = rows.find((r) => r[1].startsWith(env.RC_USER) && r[2] === "query" && r[4].includes(MRN));
    if (!query) throw new Error(`no audited query by ${env.RC_USER} for ${MRN} in ${rows.length} rows`);
    return { clinician_refused: refused, entries: rows.length, actions: [...new Set(rows.map((r) => r[2]))].sort(),
             token_after_logout: tokenAfterLogout, focused_after_login: focusedAfterLogin, loading_text: loadingText,
             zone: await page.textContent("#audit-zone"),
             when: { utc: entries[0].when, expected_local: localTime(entries[0].when), shown: rows[0][0] } };
  })) return false;
  if (!await step("every-page-at-1366-and-390", async () => {
    // Every page, as the admin (who also sees the audit trail), at desktop and
    // phone width: the page never scrolls sideways; MRNs stay on one line.
    const pages = { home: "home", search: "search", pull: "pull", run: "run", jobs: "jobs", job: `jobs?job=${resultJob}`,
                    view: `view?job=${resultJob}`, viewer: `viewer?series=${stagedSeries}`, audit: "audit",
                    automations: "automations", login: "login" };
    const widths = {}, boxes = {};
    let jobsTime = null, mrnLines = null, home = null, jobsFit = null;
    for (const width of [1366, 390]) {
      await page.setViewportSize({ width, height: width > 800 ? 860 : 844 });
      for (const [name, path] of Object.entries(pages)) {
        const list = name === "jobs" ? page.waitForResponse((r) => /\/radcloud\/status\?/.test(r.url()) && r.request().method() === "GET", { timeout: 15000 }) : null;
        await page.goto(`${UI}/${path}`, { waitUntil: "load" });
        if (name === "search") {
          await page.fill("#mrn", MRN);
          await page.press("#mrn", "Enter");
          await page.waitForSelector("#results tr.study", { timeout: 20000 });
          // one line box per MRN cell: the number is never broken
          mrnLines = await page.$$eval("#results td.mrn", (tds) => tds.map((td) => {
            const r = document.createRange(); r.selectNodeContents(td);
            return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; }));
        }
        if (name === "jobs") {
          const jobs = (await (await list).json()).jobs || [];
          await page.waitForSelector("#jobs tr[data-job] td.when", { timeout: 15000 });
          const shown = await page.$eval("#jobs tr[data-job] td.when", (td) => td.textContent);
          jobsTime = { shown, expected_local: localTime(Number(jobs[0].started_at || jobs[0].created_at)) };
          // #21: no job chosen, the list has the width: every column in view, none behind a scroll
          if (width === 1366) jobsFit = await page.$eval("#jobs", (t) => ({ table: t.scrollWidth, box: t.parentElement.clientWidth,
                                                                             main: document.querySelector("#main").clientWidth }));
        }
        if (name === "home") {   // #21 item 4: the first screen, each box filled on its own
          await page.waitForSelector("#home-jobs[aria-busy=false]", { timeout: 20000 });
          await page.waitForSelector("#home-staged[aria-busy=false]", { timeout: 20000 });
          await page.waitForSelector("#home-recent[aria-busy=false]", { timeout: 20000 });
          home = home || { jobs: await page.$eval("#home-jobs", (e) => e.innerText), staged: await page.$eval("#home-staged", (e) => e.innerText),
                           recent: await page.$eval("#home-recent", (e) => e.innerText),
                           focused: await page.evaluate(() => document.activeElement && document.activeElement.id) };
        }
        if (name === "job") await page.waitForSelector("#job-state", { timeout: 15000 });
        if (name === "view") await page.waitForSelector("#thumbs button.slice img", { timeout: 20000 });
        if (name === "viewer") {
          await page.waitForFunction(() => window.rcViewer && (window.rcViewer.loaded || window.rcViewer.error), null, { timeout: 60000 });
          const error = await page.evaluate(() => window.rcViewer.error);
          if (error) throw new Error(`viewer: ${error}`);
        }
        if (name === "audit") await page.waitForSelector("#audit[aria-busy=false] tbody tr", { timeout: 15000 });
        if (name === "automations") await page.waitForSelector("#rules[aria-busy=false]", { timeout: 15000 });
        await page.waitForTimeout(150);  // let the layout settle after the last render
        const w = await page.evaluate(() => document.scrollingElement.scrollWidth);
        widths[`${name}@${width}`] = w;
        boxes[`${name}@${width}`] = await page.evaluate(sidewaysBoxes);
        await page.screenshot({ path: `${SHOTS}/page-${name}-${width}.png`, fullPage: true });
      }
    }
    await page.setViewportSize({ width: 1366, height: 860 });
    const tooWide = Object.entries(widths).filter(([k, w]) => k.endsWith("@390") && w > 390);
    const scrolling = Object.entries(boxes).filter(([, b]) => b.length);
    if (tooWide.length || scrolling.length) throw new Error(`wider than 390 px: ${JSON.stringify(tooWide)}; ` +
                                                            `boxes that scroll sideways or cut their hint: ${JSON.stringify(scrolling)}`);
    // Home's "Find a patient": a name goes to the Search page and is searched at once.
    await page.goto(`${UI}/home`);
    await page.fill("#mrn", "smith");
    await page.press("#mrn", "Enter");
    await page.waitForSelector("#results tr.patient", { timeout: 20000 });
    home.found = { url: page.url().replace(UI, ""), rows: await page.$$eval("#results tr.patient td:nth-child(2)", (t) => t.map((x) => x.textContent)) };
    return { widths, boxes, mrn_lines: mrnLines, jobs_time: jobsTime, jobs_fit: jobsFit, home };
  })) return false;

  if (!await step("idle-logout", async () => {
    // Sixteen minutes without a key or a click (the clock moved back, not waited for).
    await page.goto(`${UI}/jobs`);
    await page.evaluate(() => sessionStorage.setItem("radcloud.active", String(Date.now() - 16 * 60 * 1000)));
    await page.reload();
    await page.waitForSelector("#login-note:not([hidden])", { timeout: 10000 });
    return { url: page.url().replace(UI, ""), note: await page.textContent("#login-note"),
             token_left: await page.evaluate(() => sessionStorage.getItem("radcloud.token")) };
  })) return false;

  if (!await step("log-out-everywhere", async () => {
    // The admin is also logged in on another workstation (a second browser context).
    const login = async (p) => {
      await p.fill("#username", env.RC_ADMIN);
      await p.fill("#password", env.RC_ADMIN_PASSWORD);
      await p.click("#login-form button[type=submit]");
      await p.waitForSelector("header #logout-all", { timeout: 15000 });
    };
    const other = await (await browser.newContext({ viewport: { width: 1366, height: 860 } })).newPage();
    try {
      await other.goto(`${UI}/login`);
      await login(other);
      await login(page);   // this tab: still on the login page the idle logout left it on
      const [resp] = await Promise.all([
        page.waitForResponse((r) => /\/radcloud\/login$/.test(r.url()) && r.request().method() === "DELETE", { timeout: 15000 }),
        page.click("#logout-all")]);
      await page.waitForSelector("#login-form", { timeout: 10000 });
      // The other workstation's next request is refused: back to its login page.
      await other.goto(`${UI}/jobs`);
      await other.waitForSelector("#login-form", { timeout: 15000 });
      return { status: resp.status(), body: resp.request().postDataJSON(), here: page.url().replace(UI, ""),
               other: other.url().replace(UI, ""),
               // whatever that browser still holds, the server refuses it
               other_token_status: await other.evaluate(async (api) => {
                 const t = sessionStorage.getItem("radcloud.token");
                 if (!t) return "gone";
                 return (await fetch(api + "status", { headers: { Authorization: "Bearer " + t } })).status;
               }, await other.getAttribute('meta[name="radcloud-api"]', "content")) };
    } finally { await other.context().close(); }
  })) return false;
  return true;
})();

const derivedDropped = await dropDerived().catch((e) => String(e));
emit({ step: "summary", ok, external_requests: external, console_errors: consoleErrors.slice(-10), derived_dropped: derivedDropped });
await browser.close();
