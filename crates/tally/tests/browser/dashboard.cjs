// The browser half of crates/tally/tests/browser.rs: headless Chromium (Debian's package),
// driven by playwright-core, against a running `tally serve` with data. It signs in with a read
// key, opens the dashboard, checks every number widget's text against the API's numbers,
// ingests more events and waits for the first number widget to show the new value (at most
// 2 s), opens the explorer, and fails on any console error or page error. Screenshots go to
// SCREENSHOTS when set. Prints one JSON line with what it measured.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, "node_modules", "playwright-core"));

const url = process.env.TALLY_URL;
const readKey = process.env.READ_KEY;
const writeKey = process.env.WRITE_KEY;
const dashboard = process.env.DASHBOARD_ID;
const stream = process.env.STREAM;
const moreEvents = JSON.parse(process.env.MORE_EVENTS);
const shots = process.env.SCREENSHOTS || "";

function fail(message) {
  throw new Error(message);
}

async function api(pathname, key, body) {
  const response = await fetch(url + pathname, {
    method: body ? "POST" : "GET",
    headers: { authorization: "Bearer " + key, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) fail(pathname + " answered " + response.status + ": " + (await response.text()));
  return response.json();
}

// The page shows numbers with thousands separators and at most 2 decimals.
const shown = (text) => Number(text.replace(/,/g, ""));
const expected = (value) => Math.round(Number(value) * 100) / 100;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const problems = [];
  let page = null;
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(m.type() + ": " + m.text());
    });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("requestfailed", (r) => problems.push("request failed: " + r.url() + " " + (r.failure() && r.failure().errorText)));

    // Sign in; the key goes to session storage, never into the URL.
    await page.goto(url + "/");
    await page.fill("#key", readKey);
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("#dashboards a");
    if (page.url().includes(readKey)) fail("the key is in the URL");
    await page.click("#dashboards a");
    await page.waitForSelector("[data-kind=number] .value");
    await page.waitForSelector("[data-kind=line] canvas");
    await page.waitForSelector("[data-kind=table] table");

    // Every number widget shows the API's value and previous value.
    const widgets = (await api("/v1/dashboards/" + dashboard, readKey)).widgets;
    const numbers = [];
    for (let i = 0; i < widgets.length; i++) {
      if (widgets[i].kind !== "number") continue;
      const data = await api("/v1/dashboards/" + dashboard + "/widgets/" + i + "/data", readKey);
      const card = page.locator("[data-widget='" + i + "']");
      await card.locator(".value").waitFor();
      const text = await card.locator(".value").innerText();
      if (shown(text) !== expected(data.value)) fail("widget " + i + " shows " + text + ", the API says " + data.value);
      const previous = await card.locator("[data-previous]").innerText();
      if (data.previous !== null && shown(previous) !== expected(data.previous)) {
        fail("widget " + i + " shows previous " + previous + ", the API says " + data.previous);
      }
      numbers.push({ widget: i, text, value: data.value, previous: data.previous, change_pct: data.change_pct });
    }
    if (!numbers.length) fail("the dashboard has no number widget");
    if (shots) await page.screenshot({ path: path.join(shots, "dashboard.png"), fullPage: true });

    // More events: the first number widget follows within 2 s of the acknowledgement.
    const first = numbers[0].widget;
    const card = page.locator("[data-widget='" + first + "'] .value");
    const before = await card.innerText();
    await api("/v1/streams/" + stream + "/events", writeKey, moreEvents);
    const acknowledged = Date.now();
    const now = await api("/v1/dashboards/" + dashboard + "/widgets/" + first + "/data", readKey);
    if (expected(now.value) === shown(before)) fail("the new events did not change widget " + first + "'s value");
    await page.waitForFunction(
      ([selector, want]) => {
        const node = document.querySelector(selector);
        return node && Number(node.textContent.replace(/,/g, "")) === want;
      },
      ["[data-widget='" + first + "'] .value", expected(now.value)],
      { timeout: 2000, polling: 50 },
    );
    const followedMs = Date.now() - acknowledged;

    // The explorer: a view, its chart and its rows.
    await page.click("a[href='/explore']");
    await page.waitForSelector("#view");
    await page.selectOption("#grain", "hour");
    await page.waitForSelector("#explore-chart canvas");
    await page.waitForSelector("#explore-rows table tbody tr");
    await page.waitForTimeout(300);
    if (shots) await page.screenshot({ path: path.join(shots, "explore.png"), fullPage: true });

    // Back to the list with the browser's history, then sign out.
    await page.goBack();
    await page.waitForSelector("#dashboard-name");
    await page.click("#sign-out");
    await page.waitForSelector("#key");
    if (problems.length) fail("console: " + problems.join(" | "));
    console.log(JSON.stringify({ ok: true, numbers, followed_ms: followedMs, before, after: now.value }));
  } catch (e) {
    // What the page showed when it failed, and what it logged.
    if (page && shots) await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
    if (problems.length) e.message += " (console: " + problems.join(" | ") + ")";
    throw e;
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }));
  process.exit(1);
});
