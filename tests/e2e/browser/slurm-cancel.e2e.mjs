// The heavy CT plugin run on Slurm from the web UI, then cancelled from its job page: one CT series
// of RC100001 pulled from the Search page, ct-resample started from the Run page (routed to Slurm by
// its descriptor: more than an action has), shown running as "Slurm job N", Cancel clicked, the page
// ends on "cancelled". Driven by test_ui_slurm.py, which checks Slurm's side (the job scancel'ed)
// and ticks reconcile as the alarm would.
// env: RC_UI, RC_USER, RC_PASSWORD, RC_MRN, RC_SERIES (a series description), RC_SHOTS
import { env, SHOTS, emit, external, consoleErrors, launch, login, stepper } from "./harness.mjs";

const { browser, page } = await launch();
const step = stepper(page, { shot: (name) => `${SHOTS}/slurm-cancel-${name}.png`, fullPage: true });
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
    await page.click("#run-btn");
    await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
    job = new URL(page.url()).searchParams.get("job");
    return { job };
  })) return false;
  if (!await step("running-on-slurm", async () => {
    await page.waitForFunction(() => [...document.querySelectorAll("#job-detail tbody span.state")]
      .some((n) => n.dataset.state === "running"), null, { timeout: 90000, polling: 200 });
    return { job, runs_on: await cells(), shard_states: await shardStates() };
  })) return false;
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
