// Bundles web/src into the static files the function app serves: shared/client/app.js, plus
// the licence texts of every npm package inside it (shared/client/THIRD_PARTY_NOTICES.txt).
//
//   node build.mjs            write into ../shared/client (commit the result)
//   node build.mjs OUT_DIR    write into OUT_DIR (the up-to-date test compares the two)
//
// The output depends only on the sources and the locked package versions, so the same inputs
// always give the same bytes.

import { readFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] ?? join(here, "..", "shared", "client"));
const LICENCE_FILES = ["LICENSE", "LICENSE.md", "LICENSE.txt", "license", "license.md", "LICENCE"];

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  legalComments: "none", // collected into THIRD_PARTY_NOTICES.txt instead
  charset: "utf8",
  metafile: true,
  write: false,
  banner: {
    js: "/* Chat page for the Web PubSub function app. Built by web/build.mjs from web/src: do not edit. Licences of bundled packages: THIRD_PARTY_NOTICES.txt */",
  },
  logLevel: "warning",
});

function bundledPackages(metafile) {
  const roots = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (match) {
      roots.add(match[1]);
    }
  }
  return [...roots]
    .map((root) => {
      const directory = join(here, root);
      const manifest = JSON.parse(readFileSync(join(directory, "package.json"), "utf8"));
      const licenceFile = LICENCE_FILES.map((name) => join(directory, name)).find((path) => existsSync(path));
      if (!licenceFile) {
        throw new Error(`${manifest.name} has no licence file to ship with the bundle`);
      }
      return { name: manifest.name, version: manifest.version, licence: manifest.license, text: readFileSync(licenceFile, "utf8").trim() };
    })
    .sort((left, right) => left.name.localeCompare(right.name));
}

function notices(packages) {
  const header = "Third-party software bundled into app.js, with the licence each is distributed under.\n";
  const sections = packages.map(
    (item) => `${"=".repeat(78)}\n${item.name} ${item.version} (${item.licence})\n${"=".repeat(78)}\n\n${item.text}\n`,
  );
  return [header, ...sections].join("\n");
}

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "app.js"), result.outputFiles[0].contents);
writeFileSync(join(outDir, "THIRD_PARTY_NOTICES.txt"), notices(bundledPackages(result.metafile)));
