// Starts worker.js in workerd through miniflare on a loopback port with N fresh, in-memory
// D1 databases, prints one JSON line {"url": ...} on stdout and runs until its stdin closes
// (the Go test process went away) or it gets SIGTERM/SIGINT. Run by workerdtest.go:
//
//   node serve.mjs MODULES_DIR CONFIG_JSON
//
// MODULES_DIR is the node_modules folder holding miniflare (.tools/npm/node_modules);
// CONFIG_JSON is {"token", "account_id", "databases"}.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [modulesDir, configJSON] = process.argv.slice(2);
if (!modulesDir || !configJSON) {
  console.error("usage: node serve.mjs MODULES_DIR CONFIG_JSON");
  process.exit(2);
}
const config = JSON.parse(configJSON);
const require = createRequire(path.join(path.resolve(modulesDir), "noop.js"));
const { Miniflare, Log, LogLevel } = require("miniflare");

const d1Databases = {};
for (let i = 0; i < config.databases; i++) {
  d1Databases[`DB${i}`] = `db-${i}`;
}

const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(path.dirname(fileURLToPath(import.meta.url)), "worker.js"),
  compatibilityDate: "2025-09-01",
  host: "127.0.0.1",
  port: 0,
  d1Databases,
  d1Persist: false,
  cf: false,
  bindings: { TOKEN: config.token, ACCOUNT_ID: config.account_id },
  log: new Log(LogLevel.WARN),
});

let closing = false;
async function close(code) {
  if (closing) return;
  closing = true;
  try {
    await mf.dispose();
  } finally {
    process.exit(code);
  }
}
process.on("SIGTERM", () => close(0));
process.on("SIGINT", () => close(0));
process.stdin.on("end", () => close(0));
process.stdin.on("error", () => close(0));
process.stdin.resume();

try {
  const url = await mf.ready;
  process.stdout.write(JSON.stringify({ url: url.href }) + "\n");
} catch (e) {
  console.error(`workerdtest: miniflare did not start: ${e.stack || e}`);
  await close(1);
}
