// Bundles the viewer's npm packages into webui/static/vendor/dwv/ (run by
// scripts/install-node-deps.sh, i.e. `make install`): dwv and konva (which dwv
// draws with) in one ES module, named by its content hash, plus modules.json
// naming it, so that pages link it by that name and the ui action lets
// browsers keep it for good (radcloud.ui.pages: hashed names are immutable).
// One file, not a chunk per package: each static file is one activation of
// the ui action, and the first image waits for all of dwv's. The ui action
// serves a file as one action result, which OpenWhisk caps at 1 MB, so the
// file's JSON-escaped text must stay under that (~830 kB with dwv 0.36).
// dwv imports jszip (zip loading) and magic-wand-tool (its flood-fill tool),
// which the viewer never uses: they are replaced by stubs that say so if
// called, 100 kB less on the way to the first image. dwv starts its decoder
// workers from assets/workers/ next to its own module: copied as is.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static", "vendor", "dwv");
const src = join(here, "node_modules", ".entries");
// The result cap (1 MB) less room for the result's other fields.
const LIMIT = 1024 * 1024 - 16 * 1024;
const UNUSED = { jszip: "dwv's zip loading", "magic-wand-tool": "dwv's flood-fill tool" };

rmSync(out, { recursive: true, force: true });
mkdirSync(src, { recursive: true });
writeFileSync(join(src, "dwv.js"), "export * from 'dwv';\n");
for (const [name, what] of Object.entries(UNUSED)) {
  writeFileSync(join(src, `unused-${name}.js`),
    `const no = () => { throw new Error(${JSON.stringify(`${what} (${name}) is left out of radcloud's viewer bundle (webui/vendor/build.mjs); add it back there to use it`)}); };\n` +
    "export default new Proxy(no, { get: no, construct: no });\n");
}
const unused = { name: "unused", setup(b) {
  b.onResolve({ filter: new RegExp(`^(${Object.keys(UNUSED).join("|")})$`) },
              (args) => ({ path: join(src, `unused-${args.path}.js`) }));
} };
const result = await build({
  entryPoints: [join(src, "dwv.js")], absWorkingDir: here, bundle: true, format: "esm", minify: true,
  outdir: out, entryNames: "[name]-[hash]", legalComments: "linked", logLevel: "warning", metafile: true,
  plugins: [unused], target: ["chrome110", "firefox110", "safari16"],
});
const files = Object.keys(result.metafile.outputs).filter((p) => p.endsWith(".js")).map((p) => basename(p));
if (files.length !== 1) throw new Error(`expected one module, esbuild wrote ${files.join(", ")}`);
writeFileSync(join(out, "modules.json"), JSON.stringify({ entry: files[0] }) + "\n");
cpSync(join(here, "node_modules", "dwv", "dist", "assets"), join(out, "assets"), { recursive: true,
  filter: (p) => !p.endsWith(".map") });
for (const name of readdirSync(out).filter((n) => n.endsWith(".js"))) {
  const size = Buffer.byteLength(JSON.stringify(readFileSync(join(out, name), "utf8")));
  if (size > LIMIT) throw new Error(`${name} is ${size} bytes as a JSON string: over ${LIMIT}, the ui action could not serve it (1 MB result cap); split it (esbuild splitting, an entry per package)`);
}
console.log(`viewer bundle: ${readdirSync(out).length} files in ${out}`);
