// The heavy CT plugin run on Slurm from the web UI: one CT series pulled from the Search page,
// ct-resample started from the Run page (routed to Slurm by its descriptor: more than an action has),
// shown running as "Slurm job N". Then, by RC_END:
//   cancel  — Cancel clicked on its job page; the page ends on "cancelled";
//   requeue — the test requeues the Slurm job (RC_STARTED: the job id, written once it runs there);
//             the page says "requeued by Slurm, attempt 2", the job succeeds, its results list the
//             NIfTI volumes and the derived DICOM series.
// Driven by test_ui_slurm.py, which checks Slurm's side and ticks reconcile as the alarm would.
// env: RC_UI, RC_USER, RC_PASSWORD, RC_MRN, RC_SERIES (a series description), RC_END, RC_STARTED,
// RC_SPACING (ct-resample's --spacing, optional), RC_SHOTS
import { writeFileSync } from "node:fs";
import { env, SHOTS, FINAL, emit, external, consoleErrors, launch, login, stepper } from "./harness.mjs";

const { browser, page } = await launch();
const step = stepper(page, { shot: (name) => `${SHOTS}/slurm-${env.RC_END}-${name}.png`, fullPage: true });
const cells = () => page.$$eval("#job-detail td.executor", (ts) => ts.map((t) => t.textContent));
const shardStates = () => page.$$eval("#job-detail tbody span.state", (ns) => ns.map((n) => n.dataset.state));
const PLUGIN = "ct-resample";
let job = null;

const ok = await (async () => {
  if (!await step("pull-one-ct-series", async () => {
    await page.goto(`${env.RC_UI}/search`);
    await login(page, env.RC_USER, env.RC_PASSWORD, { then: /\/ui\/search/ });
    await page.fill("#mrn", env.RC_MRN);
    await page.click("#search-btn");
    await page.waitForSelector("#results tr.study td:nth-child(2) button", { timeout: 20000 });
    await page.click("#results tr.study td:nth-child(2) button");
    const box = `#results tr.series input[aria-label$=" ${env.RC_SERIES}"]`;
    await page.waitForSelector(box, { timeout: 20000 });
    await page.check(box);
    await page.click("#pull-btn");
    await page.waitForSelector("#start-pull:not([disabled])", { timeout: 10000 });
    await page.click("#start-pull");
    await page.waitForSelector(".pull-item .row[data-series]", { timeout: 30000 });
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll(".pull-item .row[data-series]")];
      return rows.length && rows.every((r) => r.dataset.state === "succeeded");
    }, null, { timeout: 120000, polling: 250 });
    return { series: await page.$$eval(".pull-item .row[data-series] .count", (s) => s.map((x) => x.textContent)) };
  })) return false;
  if (!await step("run-from-the-run-page", async () => {
    await page.goto(`${env.RC_UI}/run`);
    await page.waitForSelector(`#plugin-list input[value="${PLUGIN}"]`, { timeout: 15000 });
    await page.check(`#plugin-list input[value="${PLUGIN}"]`);
    await page.waitForSelector("#run-btn:not([disabled])", { timeout: 10000 });
    await page.check("#opt-force");   // never a cached result: this job must really run
    if (env.RC_SPACING) await page.fill("#param-spacing", env.RC_SPACING);   // coarser voxels: fewer outputs
    await page.click("#run-btn");
    await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
    job = new URL(page.url()).searchParams.get("job");
    return { job };
  })) return false;
  if (!await step("running-on-slurm", async () => {
    await page.waitForFunction(() => [...document.querySelectorAll("#job-detail tbody span.state")]
      .some((n) => n.dataset.state === "running"), null, { timeout: 90000, polling: 200 });
    // What the running part does, in words (radcloud/work/jobview.py): its inputs, then its plugin.
    await page.waitForFunction(() => [...document.querySelectorAll("#job-detail tbody .phase")]
      .some((n) => /^(fetching \d+ inputs?|running the plugin)$/.test(n.textContent)), null, { timeout: 30000, polling: 200 });
    return { job, runs_on: await cells(), shard_states: await shardStates(),
             phase: await page.$$eval("#job-detail tbody .phase", (ns) => ns.map((n) => n.textContent)) };
  })) return false;
  if (env.RC_END === "requeue") {
    writeFileSync(env.RC_STARTED, job);   // the test requeues it in Slurm now
    if (!await step("requeued-on-slurm", async () => {
      await page.waitForFunction(() => /requeued by Slurm, attempt 2/.test(
        document.querySelector("#job-detail td.executor .attempt")?.textContent || ""), null,
                                 { timeout: 90000, polling: 200 });
      return { runs_on: await cells(), shard_states: await shardStates(),
               attempt: await page.textContent("#job-detail td.executor .attempt") };
    })) return false;
    if (!await step("succeeded-on-slurm", async () => {
      await page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL,
                                 { timeout: 150000, polling: 250 });
      return { state: await page.getAttribute("#job-state", "data-state"), runs_on: await cells(),
               shard_states: await shardStates(), reasons_left: (await page.$$("#job-detail .queue-reason")).length };
    })) return false;
    return await step("results-listed", async () => {
      await page.click("#view-results");
      await page.waitForSelector("#files tbody tr:not(.empty) td", { timeout: 30000 });
      const files = await page.$$eval("#files tbody tr td:first-child", (ts) => ts.map((t) => t.textContent));
      return { files: files.filter((f) => !f.endsWith(".dcm")), dicom: files.filter((f) => f.endsWith(".dcm")).length };
    });
  }
  if (!await step("cancel-clicked", async () => {
    await page.click("#job-detail .bar button:text-is('Cancel')");
    await page.waitForFunction(() => document.querySelector("#job-state")?.dataset.state === "cancelled", null,
                               { timeout: 60000, polling: 250 });
    return { state: await page.getAttribute("#job-state", "data-state"), runs_on: await cells(),
             shard_states: await shardStates(),
             cancel_button_left: (await page.$$("#job-detail .bar button:text-is('Cancel')")).length };
  })) return false;
  return true;
})();
emit({ step: "summary", ok, external_requests: external, console_errors: consoleErrors });
await browser.close();
process.exit(ok ? 0 : 1);
