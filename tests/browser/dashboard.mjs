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

// Clicking a session opens its replay (thinking collapsed, tool calls with
// durations); a search finds a known phrase and links into the replay.
// Screenshots next to the dashboard's: replay.png, search.png.
async function replayAndSearch(page) {
  const sid = "0b7e5c1a-1111-4a1a-9a1a-000000000001";
  await page.click(`#sessions a[href="#/session/${sid}"]`);
  await page.waitForSelector("body[data-view='replay'] #replay .msg", { timeout: 10000 });
  if (await page.isVisible("#kpis")) fail("the dashboard panels stay visible under the replay");
  const lines = await page.$$eval("#replay .msg", (t) => t.length);
  if (lines !== 35) fail(`replay shows ${lines} lines, expected 35`);
  const thinking = await page.$$eval("#replay details:not([open]) > summary", (t) => t.filter((x) => x.textContent === "thinking").length);
  if (thinking < 1) fail("replay shows no collapsed thinking block");
  const calls = await page.$$eval("#replay .call", (t) => t.length);
  if (calls !== 16) fail(`replay shows ${calls} tool calls, expected 16`);
  await page.screenshot({ path: shot.replace(/dashboard\.png$/, "replay.png"), fullPage: true });
  await page.fill("#q", "input validation");
  await page.press("#q", "Enter");
  await page.waitForSelector("body[data-view='search'] .hit", { timeout: 10000 });
  const marks = await page.$$eval(".hit mark", (t) => t.map((x) => x.textContent.toLowerCase()));
  if (!marks.includes("validation")) fail(`search hits mark ${marks.join(",")}`);
  const links = await page.$$eval(".hit a", (t) => t.map((x) => x.getAttribute("href")));
  if (!links.some((l) => l.startsWith(`#/session/${sid}/`))) fail(`no hit links to ${sid}: ${links.join(" ")}`);
  await page.screenshot({ path: shot.replace(/dashboard\.png$/, "search.png"), fullPage: true });
  await page.click(`.hit a[href^="#/session/${sid}/"]`);
  await page.waitForSelector("#replay .msg.target", { timeout: 10000 });
  await page.goto(url + "#/", { waitUntil: "domcontentloaded" });
}

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
  // the insight panels load too (figures are checked exactly by tests/insights_e2e.rs)
  await page.waitForSelector("body[data-insights='1']", { timeout: 20000 });
  const times = await page.$$eval("#tooltimes tbody tr", (t) => t.length);
  if (times < 1) fail("tool execution times panel is empty");
  const exposed = await page.textContent("#expfiles");
  if (!exposed.includes("sensitive")) fail("data exposure panel flags no sensitive file");
  await page.screenshot({ path: shot, fullPage: true });
  await replayAndSearch(page);
  console.log(`dashboard OK: ${messages} messages, ${sessions} sessions, ${bars} day bars, screenshot ${shot}`);
} catch (e) {
  fail(e.message);
  try { await page.screenshot({ path: shot, fullPage: true }); } catch {}
}
if (errors.length) fail("page errors: " + errors.join(" | "));
await browser.close();
