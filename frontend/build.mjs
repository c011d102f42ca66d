// Builds the page into src/stepstore/ui/static (index.html, app.js, app.css).
// `node build.mjs --check` builds into a temporary folder instead and fails, naming the file,
// when the result differs from the committed files (what CI runs after `npm ci`).
import { build } from "esbuild";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const shipped = join(here, "..", "src", "stepstore", "ui", "static");
const FILES = ["index.html", "app.js", "app.css"];

async function buildInto(outdir) {
  mkdirSync(outdir, { recursive: true });
  const common = {
    bundle: true,
    minify: true,
    sourcemap: false,
    legalComments: "none",
    logLevel: "warning",
    absWorkingDir: here,
  };
  await build({
    ...common,
    entryPoints: ["src/main.js"],
    outfile: join(outdir, "app.js"),
    format: "iife",
    target: ["es2020"],
  });
  await build({ ...common, entryPoints: ["src/app.css"], outfile: join(outdir, "app.css") });
  writeFileSync(join(outdir, "index.html"), readFileSync(join(here, "src", "index.html")));
}

if (process.argv.includes("--check")) {
  const tmp = mkdtempSync(join(tmpdir(), "stepstore-ui-"));
  try {
    await buildInto(tmp);
    const differing = FILES.filter((name) => {
      const path = join(shipped, name);
      return !existsSync(path) || !readFileSync(path).equals(readFileSync(join(tmp, name)));
    });
    if (differing.length) {
      console.error(
        `src/stepstore/ui/static differs from a fresh build: ${differing.join(", ")}\n` +
          "Run `npm run build` in frontend/ and commit the result.",
      );
      process.exitCode = 1;
    } else {
      console.log("src/stepstore/ui/static matches its sources.");
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  await buildInto(shipped);
}
