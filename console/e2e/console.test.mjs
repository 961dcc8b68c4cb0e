// The web console in a real browser: Debian's Chromium driven by playwright-core against a
// real `invokd serve` that console/e2e/run started (INVOKD_URL, INVOKD_KEY, INVOKD_ADMIN,
// INVOKD_SLOW_MODEL). Each test saves a screenshot under target/console-e2e/; every request
// the pages make is recorded, and none may leave the server's origin.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const url = process.env.INVOKD_URL;
const key = process.env.INVOKD_KEY;
const admin = process.env.INVOKD_ADMIN;
const slow = process.env.INVOKD_SLOW_MODEL;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });

let browser, context, page;
const requests = [];
const problems = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.on("request", (r) => requests.push(r.url()));
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  // A script refused by the Content-Security-Policy, or one that throws, shows here.
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
});

after(async () => { await browser?.close(); });

async function shot(name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function signIn(secret) {
  await page.goto(`${url}/console/sign-in`);
  await page.getByLabel("Access key or admin token").fill(secret);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/// Submits the playground's form for `model`, filled by `fill`; the new job's id.
async function submit(model, fill) {
  await page.goto(`${url}/console/playground`);
  await page.getByLabel("Model").selectOption(model);
  await page.getByRole("button", { name: "Choose" }).click();
  await page.waitForURL((u) => u.searchParams.get("model") === model);
  await page.getByLabel("prompt (required)").fill(`e2e ${model}`);
  await fill?.();
  await page.getByRole("button", { name: "Submit" }).click();
  await page.waitForURL(/\/console\/jobs\/[0-9a-f-]{36}$/);
  return page.url().split("/").pop();
}

/// The statuses the job page shows, without reloads, until `last` (htmx's polling).
async function watch(last) {
  const seen = [];
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = (await page.locator("#job-status").textContent()).trim();
    if (seen.at(-1) !== s) seen.push(s);
    if (s === last) return seen;
    assert.ok(Date.now() < deadline, `still ${s} after 60 s (${seen})`);
    await page.waitForTimeout(100);
  }
}

test("a wrong key is refused; the key signs in", async () => {
  await page.goto(`${url}/console/jobs`);
  assert.match(page.url(), /\/console\/sign-in$/, "no page without a session");
  await signIn("invk_wrong");
  await assert.doesNotReject(page.getByText("That key is not valid.").waitFor());
  await shot("sign-in-refused");
  await signIn(key);
  await page.waitForURL(/\/console\/overview$/);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await shot("overview");
});

test("the playground makes an image of the requested size, live from queued to completed", async () => {
  const id = await submit("fal-ai/flux/schnell", async () => {
    await page.locator("#more > summary").click();
    await page.getByLabel("image size").selectOption("custom");
    await page.getByLabel("width").fill("640");
    await page.getByLabel("height").fill("360");
  });
  const seen = await watch("COMPLETED");
  assert.notEqual(seen[0], "COMPLETED", `the page saw the job before it ended: ${seen}`);
  const img = page.locator("#job-live figure img").first();
  await img.waitFor();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
  const size = await img.evaluate((el) => [el.naturalWidth, el.naturalHeight]);
  assert.deepEqual(size, [640, 360]);
  await shot(`job-image-${id}`);
  // The full-size view: the image itself, its caption legible.
  const full = await page.locator("#job-live figcaption a", { hasText: "full size" }).getAttribute("href");
  await page.goto(full);
  await shot("image-full-size");
});

test("the playground makes audio that plays", async () => {
  await submit("fal-ai/stable-audio-25/text-to-audio", async () => {
    await page.locator("#more > summary").click();
    await page.getByLabel("seconds total").fill("3");
  });
  await watch("COMPLETED");
  const audio = page.locator("#job-live audio").first();
  await audio.waitFor();
  const duration = await audio.evaluate((a) => new Promise((resolve) => {
    if (a.readyState >= 1) resolve(a.duration);
    else a.addEventListener("loadedmetadata", () => resolve(a.duration), { once: true });
    a.load();
  }));
  assert.ok(Math.abs(duration - 3) < 0.1, `duration ${duration}`);
  await shot("job-audio");
});

test("the jobs list filters by model, in the URL", async () => {
  await page.goto(`${url}/console/jobs`);
  await page.getByLabel("Model").selectOption("fal-ai/flux/schnell");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/model=fal-ai%2Fflux%2Fschnell/);
  const models = await page.locator("table.jobs tbody tr td:nth-child(3)").allTextContents();
  assert.ok(models.length >= 1);
  assert.deepEqual([...new Set(models)], ["fal-ai/flux/schnell"]);
  await shot("jobs-filtered");
});

test("live updates of the list pause and resume", async () => {
  await page.goto(`${url}/console/jobs`);
  const polls = () => requests.filter((r) => r.includes("/console/jobs/live")).length;
  await page.waitForTimeout(2500);
  assert.ok(polls() >= 1, "the list refreshes itself");
  await page.getByLabel("Live updates").uncheck();
  const paused = polls();
  await page.waitForTimeout(4500);
  assert.equal(polls(), paused, "no refresh while paused");
  await page.getByLabel("Live updates").check();
  const deadline = Date.now() + 10_000;
  while (polls() === paused) {
    assert.ok(Date.now() < deadline, "refreshes again once resumed");
    await page.waitForTimeout(200);
  }
  await shot("jobs-live");
});

test("a slow job is canceled from its page", async () => {
  await submit(slow);
  await page.getByRole("button", { name: "Cancel" }).click();
  const seen = await watch("CANCELED");
  assert.ok(!seen.includes("COMPLETED"), `${seen}`);
  await shot("job-canceled");
});

test("a selection of jobs is canceled from the list", async () => {
  const ids = [];
  for (let i = 0; i < 2; i++) {
    const r = await fetch(`${url}/v1/async-invoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model_id: slow, input: { prompt: `selected ${i}` } }),
    });
    assert.equal(r.status, 202);
    ids.push((await r.json()).request_id);
  }
  await page.goto(`${url}/console/jobs?text=selected`);
  await page.getByLabel("Select every job that can be canceled").check();
  for (const id of ids) assert.ok(await page.getByLabel(`Select job ${id}`).isChecked());
  await page.getByRole("button", { name: "Cancel selected" }).click();
  await page.getByText("Asked to cancel 2 job(s).").waitFor();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const statuses = await page.locator("table.jobs tbody tr").evaluateAll(
      (rows) => rows.map((r) => r.dataset.status));
    if (statuses.length === 2 && statuses.every((s) => s === "CANCELED")) break;
    assert.ok(Date.now() < deadline, `not canceled after 30 s: ${statuses}`);
    await page.waitForTimeout(250);
  }
  await shot("jobs-selection-canceled");
});

test("the admin creates a key, sees it once, and revokes it", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/console\/sign-in$/);
  await signIn(admin);
  await page.getByRole("link", { name: "Keys" }).click();
  await page.getByLabel("Name").fill("e2e-key");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = (await page.locator("#new-key-secret").textContent()).trim();
  assert.match(secret, /^invk_/);
  await shot("admin-key-created");
  await page.getByRole("button", { name: "Revoke e2e-key" }).click();
  await page.waitForURL(/\/console\/admin\/keys$/);
  const revoked = await page.locator("tr[data-key='e2e-key'] td:nth-child(5)").textContent();
  assert.match(revoked, /UTC/);
  assert.equal(await page.locator("#new-key-secret").count(), 0, "the secret is not shown again");
  await shot("admin-key-revoked");
});

test("the admin makes a worker token on the workers page and sees its secret once", async () => {
  await page.getByRole("link", { name: "Workers" }).click();
  await page.waitForURL(/\/console\/admin\/workers$/);
  assert.equal(await page.locator("#workers[data-live]").count(), 1);
  await page.getByLabel("Name").fill("e2e-box");
  await page.getByLabel(/^Models/).fill("fal-ai/*");
  await page.getByRole("button", { name: "Create token" }).click();
  const secret = (await page.locator("#new-token-secret").textContent()).trim();
  assert.match(secret, /^invw_/);
  await shot("admin-worker-token-created");
  await page.goto(`${url}/console/admin/workers`);
  assert.equal(await page.locator("tr[data-token='e2e-box']").count(), 1);
  assert.equal(await page.locator("#new-token-secret").count(), 0, "the secret is not shown again");
  assert.ok(!(await page.content()).includes(secret));
  await shot("admin-workers");
});

test("pages look tidy at laptop and phone widths", async () => {
  for (const [name, width, height] of [["laptop", 1280, 800], ["phone", 390, 844]]) {
    await page.setViewportSize({ width, height });
    for (const path of ["overview", "jobs", "playground", "gallery", "admin/keys", "admin/workers"]) {
      await page.goto(`${url}/console/${path}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${path} at ${width}px scrolls sideways by ${overflow}px`);
      await shot(`${name}-${path.replace("/", "-")}`);
    }
  }
});

test("no request left the page's origin and no script was refused", () => {
  const origin = new URL(url).origin;
  const foreign = requests.filter((r) => new URL(r).origin !== origin);
  assert.deepEqual(foreign, []);
  assert.ok(requests.length > 20, `${requests.length} requests recorded`);
  // The wrong key's sign-in is the one refusal the tests ask for.
  const expected = (p) => p.includes("401") || p.startsWith("Failed to load resource");
  const unexpected = problems.filter((p) => !expected(p));
  assert.deepEqual(unexpected, []);
  assert.equal(problems.filter((p) => /^4\d\d /.test(p)).length, 1, `${problems}`);
});
