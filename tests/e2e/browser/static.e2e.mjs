// The UI built for a static host (python -m radcloud.ui.pages out/ --api-base ...),
// served from another origin than the web actions: without a token → login
// page; log in; search by MRN across origins (CORS, Bearer token). One JSON
// line per step, like ui.e2e.mjs. env: RC_STATIC, RC_USER, RC_PASSWORD, RC_MRN, RC_SHOTS
import { env, SHOTS, pageErrors, launch, login, stepper } from "./harness.mjs";

const { browser, page } = await launch();
const step = stepper(page, { shot: () => `${SHOTS}/static-search.png`, fullPage: true });
const ok = await step("static-site", async () => {
  await page.goto(`${env.RC_STATIC}/search.html`);
  await page.waitForSelector("#login-form", { timeout: 10000 });
  const redirected = page.url();
  await login(page, env.RC_USER, env.RC_PASSWORD, { then: /search\.html/ });
  await page.fill("#mrn", env.RC_MRN || "RC100002");
  await page.click("#search-btn");
  await page.waitForSelector("#results tr.study", { timeout: 20000 });
  const studies = await page.$$eval("#results tr.study", (t) => t.length);
  return { redirected, studies, errors: pageErrors };
});
await browser.close();
process.exit(ok ? 0 : 1);
