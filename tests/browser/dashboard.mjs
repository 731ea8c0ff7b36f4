// Loads the dashboard served by `claude-ingest serve` in Debian's Chromium,
// waits for real data, checks the panels, fails on page errors, and saves a
// screenshot. Usage: node dashboard.mjs http://127.0.0.1:PORT OUT.png EXPECTED.json
import { chromium } from "playwright-core";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, shot, expectedPath] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(expectedPath, "utf8"));
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };

const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "ci-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1440, height: 1800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = browser.pages()[0] || await browser.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
page.on("requestfailed", (r) => errors.push("request failed: " + r.url()));

try {
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("body[data-loaded='1']", { timeout: 20000 });
  const kpi = async (name) => (await page.textContent(`[data-kpi='${name}'] .v`)).trim();
  const messages = await kpi("messages");
  if (messages !== String(expected.message_lines)) fail(`messages KPI shows ${messages}, expected ${expected.message_lines}`);
  const sessions = await kpi("sessions");
  if (sessions !== String(expected.session_count)) fail(`sessions KPI shows ${sessions}, expected ${expected.session_count}`);
  const prompts = await kpi("prompts");
  if (prompts !== String(expected.prompts)) fail(`prompts KPI shows ${prompts}, expected ${expected.prompts}`);
  const responses = await kpi("responses");
  if (responses !== String(expected.usage_entries)) fail(`responses KPI shows ${responses}, expected ${expected.usage_entries}`);
  const dangerous = await kpi("dangerous commands");
  if (dangerous !== String(expected.dangerous_commands)) fail(`dangerous commands KPI shows ${dangerous}`);
  const rows = await page.$$eval("#sessions tbody tr", (t) => t.length);
  if (rows !== expected.session_count) fail(`sessions table has ${rows} rows, expected ${expected.session_count}`);
  const bars = await page.$$eval("#daily svg rect.bar", (t) => t.length);
  if (bars < 2) fail(`daily chart has ${bars} bars`);
  const heat = await page.$$eval("#heatmap tbody tr", (t) => t.length);
  if (heat < 1) fail("file heatmap is empty");
  const sec = await page.textContent("#security");
  if (!sec.includes("dangerous command") || !sec.includes("sensitive file")) fail("security events missing");
  const health = await page.textContent("#health");
  if (!health.startsWith("ok")) fail(`health pill says: ${health}`);
  // the project filter narrows every panel
  await page.selectOption("#project", "-home-dev-webapp");
  await page.waitForFunction(() => document.querySelectorAll("#sessions tbody tr").length === 2, null, { timeout: 10000 });
  await page.selectOption("#project", "");
  await page.waitForFunction((n) => document.querySelectorAll("#sessions tbody tr").length === n, expected.session_count, { timeout: 10000 });
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`dashboard OK: ${messages} messages, ${sessions} sessions, ${bars} day bars, screenshot ${shot}`);
} catch (e) {
  fail(e.message);
  try { await page.screenshot({ path: shot, fullPage: true }); } catch {}
}
if (errors.length) fail("page errors: " + errors.join(" | "));
await browser.close();
