// One headless Chromium for every browser script of a pytest session (conftest.py's
// shared_browser): prints its websocket endpoint, then serves until stdin closes.
import { chromium } from "playwright-core";
import { CHROMIUM } from "./harness.mjs";

const server = await chromium.launchServer(CHROMIUM);
process.stdout.write(JSON.stringify({ ws: server.wsEndpoint() }) + "\n");
process.stdin.resume();
process.stdin.on("end", async () => {
  await server.close();
  process.exit(0);
});
