// Issue 20's walk (driven by test_zero_click.py): an admin defines "CT chest → lung segmentation →
// push to PACS" on the Automations page, opens the Jobs page and leaves it; the real chest CT is stored
// in Orthanc over REST (from this script, not the page); the pipeline job appears and ends on the page
// with no click, no key and no reload (trusted input events are counted from before the store, and the
// document carries a token that a reload would lose). Then the admin opens it: the pipeline, its
// lung-seg step's job (what the PACS now holds), the results (SEG, SR), the viewer (the SEG over the
// CT, the SR's table); last, "Run now" on another rule with that job's results as inputs.
// One JSON line per step (harness.mjs).
//
// env: RC_UI, RC_ADMIN, RC_ADMIN_PASSWORD, RC_RULE (the rule to define), RC_TAGS_RULE (a rule to run
//      by hand), RC_ORTHANC, RC_ORTHANC_AUTH ("user:password"), RC_CT_FILES (the CT's files, in
//      order, joined by ":"), RC_SHOTS
import { readFile } from "node:fs/promises";
import { env, SHOTS, FINAL, external, pageErrors, emit, launch, login, stepper } from "./harness.mjs";

const UI = env.RC_UI;
const { browser, page } = await launch();
const step = stepper(page, { shot: (name, n) => `${SHOTS}/zero-click-${String(n).padStart(2, "0")}-${name}.png`, fullPage: true });
const cells = (sel) => page.$$eval(sel, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())));
const posting = (click, path = /\/radcloud\/routing/) => Promise.all([
  page.waitForResponse((r) => path.test(r.url()) && r.request().method() === "POST", { timeout: 15000 }),
  page.click(click)]).then(([r]) => r);
const jobState = (timeout) => page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL,
                                                   { timeout, polling: 250 }).then(() => page.getAttribute("#job-state", "data-state"));
const parts = () => page.$$eval("#job-detail table tbody tr", (trs) => trs.map((tr) => tr.cells[0].textContent.trim()));
let storedAt = 0, before = new Set(), token = "", pipeline = "", stepJob = "";

const defined = await step("define-rule", async () => {
  await page.goto(`${UI}/automations`);
  await login(page, env.RC_ADMIN, env.RC_ADMIN_PASSWORD, { then: /\/ui\/automations/ });
  await page.waitForSelector("#rules tbody tr:not(.loading)", { timeout: 15000 });
  await page.click("#rule-new");
  await page.fill('#rule-form [name="name"]', env.RC_RULE);
  await page.fill('#rule-form [name="description"]', "CT chest → lung segmentation → push to PACS");
  await page.fill('#rule-form [name="match.modality"]', "CT");
  await page.fill('#rule-form [name="match.study_description"]', "*chest*");
  await page.selectOption("#rule-steps li.rule-step:nth-child(1) .step-plugin", "lung-seg");
  await page.check("#rule-steps li.rule-step:nth-child(1) .step-pacs");
  const answer = await posting("#rule-save");
  if (answer.status() !== 200) throw new Error(`the rule was refused: ${answer.status()} ${await answer.text()}`);
  const row = `#rules tr[data-rule="${env.RC_RULE}"]`;
  await page.waitForSelector(row, { timeout: 15000 });
  return { saved: (await answer.json()).saved, row: (await cells(row))[0] };
});

const watching = defined && await step("jobs-page", async () => {
  await page.goto(`${UI}/jobs`);
  await page.waitForFunction(() => !/Loading jobs/.test(document.querySelector("#jobs tbody").textContent), null, { timeout: 15000 });
  before = new Set(await page.$$eval("#jobs tbody tr[data-job]", (trs) => trs.map((tr) => tr.dataset.job)));
  // From here on, a person's click, key or reload would show: count trusted input events, mark the document.
  token = await page.evaluate(() => {
    window.rcNoClick = { token: Math.random().toString(36).slice(2), events: 0 };
    for (const type of ["mousedown", "click", "keydown", "input", "submit", "wheel"]) {
      document.addEventListener(type, (e) => { if (e.isTrusted) window.rcNoClick.events += 1; }, true);
    }
    return window.rcNoClick.token;
  });
  return { jobs_before: before.size };
});

const stored = watching && await step("store-ct", async () => {
  // As a modality sends a study: every slice, one after the other (Orthanc's REST store).
  const auth = "Basic " + Buffer.from(env.RC_ORTHANC_AUTH).toString("base64");
  const store = async (body) => (await fetch(`${env.RC_ORTHANC}/instances`, {
    method: "POST", headers: { Authorization: auth, "Content-Type": "application/dicom" }, body })).json();
  const statuses = [];
  for (const file of env.RC_CT_FILES.split(":")) {
    const body = await readFile(file);
    // Orthanc drops an idle keep-alive connection after 1 s; a repeat is answered AlreadyStored.
    statuses.push((await store(body).catch(() => store(body))).Status);
  }
  storedAt = Date.now();
  return { stored: statuses.length, statuses: [...new Set(statuses)] };
});

const watched = stored && await step("watch-without-a-click", async () => {
  // The Jobs page refreshes its list by itself (every 5 s, every 2 s while a listed job runs): read it, never touch it.
  const seen = [];
  let mine = null;
  for (const deadline = Date.now() + 240000; ;) {
    const rows = await page.$$eval("#jobs tbody tr[data-job]", (trs) => trs.map((tr) => ({
      id: tr.dataset.job, plugin: tr.cells[2].textContent.trim(), patient: tr.cells[0].textContent.trim(),
      state: tr.cells[3].querySelector("[data-state]")?.dataset.state || "" })));
    mine = rows.find((r) => !before.has(r.id) && r.plugin === "pipeline") || null;
    if (mine && (!seen.length || seen[seen.length - 1].state !== mine.state)) seen.push({ ms: Date.now() - storedAt, state: mine.state });
    if (mine && FINAL.includes(mine.state)) break;
    if (Date.now() > deadline) throw new Error(`no final pipeline job on the Jobs page 240 s after the store: ${JSON.stringify(seen)}`);
    await page.waitForTimeout(250);
  }
  const guard = await page.evaluate(() => window.rcNoClick || null);
  pipeline = mine.id;
  return { job: mine.id, plugin: mine.plugin, patient: mine.patient, final: mine.state, seen,
           appeared_ms: seen[0].ms, final_ms: seen[seen.length - 1].ms,
           input_events: guard ? guard.events : null, same_document: Boolean(guard && guard.token === token) };
});

// The result, opened by the admin once it is there.
const opened = watched && await step("open-pipeline", async () => {
  await page.click(`#jobs tbody tr[data-job="${pipeline}"]`);
  const state = await jobState(30000);
  await page.waitForSelector("#job-detail a.step-job", { timeout: 15000 });
  const href = await page.getAttribute("#job-detail a.step-job", "href");
  stepJob = new URL(href, page.url()).searchParams.get("job");
  return { state, parts: await parts(), step_job: stepJob };
});

const stepOpened = opened && await step("step-job", async () => {
  await page.click("#job-detail a.step-job");
  await page.waitForURL((u) => u.searchParams.get("job") === stepJob, { timeout: 15000 });
  const state = await jobState(30000);
  await page.waitForSelector("#job-pacs", { timeout: 15000 });
  return { state, pacs: (await page.textContent("#job-pacs")).trim() };
});

const listed = stepOpened && await step("results", async () => {
  await page.click("#view-results");
  await page.waitForSelector("#files tbody tr:not(.empty) td", { timeout: 30000 });
  await page.waitForSelector("#open-viewer:not([hidden])", { timeout: 30000 });
  return { files: await page.$$eval("#files tbody tr", (trs) => trs.map((tr) => tr.cells[0].textContent.trim())) };
});

listed && await step("viewer", async () => {
  await page.click("#open-viewer");
  await page.waitForFunction(() => window.rcViewer && (window.rcViewer.segLoaded || window.rcViewer.error), null, { timeout: 120000 });
  const error = await page.evaluate(() => window.rcViewer.error);
  if (error) throw new Error(error);
  await page.waitForSelector("#vw-sr:not([hidden])", { timeout: 30000 });
  return { title: await page.textContent("#vw-title"), slices: await page.evaluate(() => window.rcViewer.slices),
           segments: await page.evaluate(() => window.rcViewer.segments), sr_visible: await page.isVisible("#vw-sr"),
           sr_rows: await cells("#vw-sr-table tbody tr"),
           first_image_ms: await page.evaluate(() => window.rcViewer.firstImageMs), loaded_ms: await page.evaluate(() => window.rcViewer.loadedMs) };
});

opened && await step("run-now-on-a-job", async () => {
  // Started by hand on the lung-seg job's results: the Automations page's "the results of a job".
  await page.goto(`${UI}/automations`);
  const row = `#rules tr[data-rule="${env.RC_TAGS_RULE}"]`;
  await page.waitForSelector(row, { timeout: 15000 });
  await page.click(`${row} button.run-now`);
  await page.selectOption('#run-form [name="kind"]', "job");
  await page.fill('#run-form [name="id"]', stepJob);
  const answer = await posting("#run-start");
  if (answer.status() !== 200) throw new Error(`Run now was refused: ${answer.status()} ${await answer.text()}`);
  const started = (await answer.json()).run;
  const link = `#runs tr[data-pipeline="${started.pipeline}"] a.pipeline-job`;
  await page.waitForSelector(link, { timeout: 15000 });
  await page.click(link);   // the pipeline's page follows it live to its end
  await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 15000 });
  const state = await jobState(150000);
  return { started, state, parts: await parts() };
});

emit({ step: "summary", external_requests: external, page_errors: pageErrors });
await browser.close();
