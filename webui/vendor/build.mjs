// Bundles the viewer's npm packages into webui/static/vendor/dwv/ (run by
// scripts/install-node-deps.sh, i.e. `make install`). Each package becomes
// its own ES module chunk: the ui action serves every static file as one
// action result, and OpenWhisk caps a result at 1 MB, so no file may grow
// past that (dwv ~610 kB, konva ~190 kB, jszip ~100 kB). dwv starts its
// decoder workers from assets/workers/ next to its own module: copied as is.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync, statSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static", "vendor", "dwv");
const src = join(here, "node_modules", ".entries");
const LIMIT = 900 * 1024;

rmSync(out, { recursive: true, force: true });
mkdirSync(src, { recursive: true });
// One entry per package: with splitting, what two entries share (konva,
// jszip, magic-wand-tool are imported by dwv and have their own entry) goes
// to a chunk of its own instead of one large file.
const entries = { dwv: "export * from 'dwv';", konva: "export { default } from 'konva';",
                  jszip: "export { default } from 'jszip';", "magic-wand": "export { default } from 'magic-wand-tool';" };
for (const [name, text] of Object.entries(entries)) writeFileSync(join(src, `${name}.js`), text + "\n");
await build({
  entryPoints: Object.keys(entries).map((n) => join(src, `${n}.js`)),
  absWorkingDir: here, bundle: true, splitting: true, format: "esm", minify: true,
  outdir: out, chunkNames: "chunk-[name]-[hash]", legalComments: "linked", logLevel: "warning",
  target: ["chrome110", "firefox110", "safari16"],
});
cpSync(join(here, "node_modules", "dwv", "dist", "assets"), join(out, "assets"), { recursive: true,
  filter: (p) => !p.endsWith(".map") });
for (const name of readdirSync(out)) {
  const size = statSync(join(out, name)).size;
  if (size > LIMIT) throw new Error(`${name} is ${size} bytes: over ${LIMIT}, the ui action could not serve it (1 MB result cap); split it`);
}
console.log(`viewer bundle: ${readdirSync(out).length} files in ${out}`);
