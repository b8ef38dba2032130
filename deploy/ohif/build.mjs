// OHIF for the stack's Orthanc: node_modules/@ohif/app/dist (OHIF's own production build, from
// package-lock.json) → build/ (gitignored), served by Orthanc's ServeFolders plugin under /ohif/.
//
// The npm build is made for the root of a site (webpack's public path "/", absolute links in
// index.html and the CSS); Orthanc's REST API owns "/", so this rewrites the public path to BASE
// in the few files that hold it and links every other file (hard links: no second copy of its
// 200 MB). It also writes:
//   app-config.js   radcloud's (this folder's), in place of the demo server's;
//   <route>         a copy of index.html under each OHIF route name (viewer, segmentation...):
//                   ServeFolders only serves files, and OHIF is a single-page app whose links
//                   are /ohif/viewer?StudyInstanceUIDs=...; Orthanc must answer them with the
//                   page (radcloud.ops.stack.config maps these extension-less names to text/html);
//   routes.json     those names, for that mapping.
// /ohif/index.html is the study list: index.html moves the address to /ohif/ before OHIF reads it.
import { cpSync, linkSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, copyFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC = join(HERE, "node_modules", "@ohif", "app", "dist");
const OUT = join(HERE, "build");
const BASE = "/ohif/";
// OHIF's mode routes (routeName of each mode in the build) a link can open.
const ROUTES = ["viewer", "segmentation", "tmtv", "microscopy", "basic", "dynamic-volume", "usAnnotation"];
const SKIP = new Set(["_headers", "_redirects", "serve.json"]);  // another host's (Netlify, serve) config

const WEBPACK_PATH = '__webpack_require__.p = "/";';
let patched = 0;

function patch(rel, text) {
  if (rel === "index.html") {
    const out = text.replaceAll('window.PUBLIC_URL="/"', `window.PUBLIC_URL="${BASE}"`)
      .replaceAll(/(src|href|content)="\/(?!\/)/g, `$1="${BASE}`)
      .replace("<head>", `<head><script>if(location.pathname==="${BASE}index.html")` +
               `history.replaceState(null,"","${BASE}"+location.search+location.hash)</script>`);
    if (!out.includes(`window.PUBLIC_URL="${BASE}"`)) throw new Error("index.html: window.PUBLIC_URL=\"/\" not found; @ohif/app changed its build");
    return out;
  }
  if (rel.endsWith(".js") && text.includes(WEBPACK_PATH)) return text.replaceAll(WEBPACK_PATH, `__webpack_require__.p = "${BASE}";`);
  if (rel.endsWith(".css") && text.includes("url(/")) return text.replaceAll(/url\(\/(?!\/)/g, `url(${BASE}`);
  if (rel === "manifest.json") return text.replaceAll('"/assets/', `"${BASE}assets/`);
  return null;
}

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const from = join(dir, name);
    const rel = relative(SRC, from);
    const to = join(OUT, rel);
    if (statSync(from).isDirectory()) { mkdirSync(to, { recursive: true }); walk(from); continue; }
    if (SKIP.has(rel) || rel === "app-config.js") continue;
    const text = /\.(html|js|css|json)$/.test(name) ? readFileSync(from, "utf8") : null;
    const changed = text === null ? null : patch(rel, text);
    if (changed !== null) { writeFileSync(to, changed); patched += 1; continue; }
    try { linkSync(from, to); } catch { copyFileSync(from, to); }  // another file system: a copy
  }
}

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
walk(SRC);
if (patched < 3) throw new Error(`only ${patched} files held the public path: @ohif/app changed its build`);
cpSync(join(HERE, "app-config.js"), join(OUT, "app-config.js"));
const page = readFileSync(join(OUT, "index.html"));
for (const route of ROUTES) writeFileSync(join(OUT, route), page);
const version = JSON.parse(readFileSync(join(HERE, "node_modules", "@ohif", "app", "package.json"), "utf8")).version;
writeFileSync(join(OUT, "routes.json"), JSON.stringify({
ohif: version, base: BASE, routes: ROUTES }, null, 1) + "\n");
console.log(`OHIF ${version}: ${patched} files rewritten for ${BASE}, routes ${ROUTES.join(", ")}`);
