// The citizen portal's main journeys in real headless Chromium (Debian's /usr/bin/chromium),
// driven by playwright-core, with axe-core checking every page visited (WCAG 2.1 A/AA rules),
// a keyboard check (skip link, visible focus) and a 360-px phone check (no sideways scrolling).
//
//   node journeys.mjs BASE_URL [SCREENSHOT_DIR]
//
// Exits non-zero on the first failed expectation or on any accessibility violation; prints
// what axe found per page. Against a demo server (`fascicolo` with demo mode on).
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { inflateSync } from "node:zlib";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const BASE = process.argv[2];
const SHOTS = process.argv[3];
if (!BASE) {
  console.error("usage: node journeys.mjs BASE_URL [SCREENSHOT_DIR]");
  process.exit(2);
}
const GIULIA = "RSSGLI85D52F205Q"; // citizen, mother of Luca, delegate of Anna
const GP = "FRRPLA70A01F205"; // prefix: the family doctor (check character computed by the demo)

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const report = [];
let failures = 0;

/** Run axe on the page; every WCAG 2.0/2.1 A/AA violation fails the run. */
async function a11y(page, name) {
  await page.addScriptTag({ content: AXE });
  const res = await page.evaluate(async () =>
    await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
  const v = res.violations.map((x) => `${x.id} (${x.impact}, ${x.nodes.length} nodes): ${x.nodes.slice(0, 2).map((n) => n.target.join(" ")).join(" | ")}`);
  report.push({ page: name, passes: res.passes.length, violations: v, incomplete: res.incomplete.map((x) => x.id) });
  if (v.length) {
    failures++;
    console.error(`ACCESSIBILITY ${name}:\n  ${v.join("\n  ")}`);
  }
}

/** Keyboard: the first Tab reaches the skip link, which is visible with a focus outline, and leads to main. */
async function keyboard(page, name) {
  await page.keyboard.press("Tab");
  const f = await page.evaluate(() => {
    const e = document.activeElement;
    const s = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    return { cls: e.className, href: e.getAttribute("href"), outline: s.outlineStyle, width: s.outlineWidth, visible: r.left >= 0 && r.width > 0 };
  });
  assert.equal(f.href, "#main", `${name}: the first Tab stop is the skip link`);
  assert.ok(f.visible && f.outline !== "none", `${name}: the focused skip link is visible with an outline (${JSON.stringify(f)})`);
  await page.keyboard.press("Enter");
  const inMain = await page.evaluate(() => document.activeElement.id === "main" || location.hash === "#main");
  assert.ok(inMain, `${name}: the skip link moves to the main content`);
}

async function phone(ctx, path, name, { minSections = 12 } = {}) {
  const page = await ctx.newPage();
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto(BASE + path);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${name}: no sideways scrolling at 360 px (overflow ${overflow}px)`);
  // tables are stacked cards: nothing hides off screen inside a scrolling box either
  const cut = await page.evaluate(() => [...document.querySelectorAll("table.stack")].map((t) => t.scrollWidth - t.parentElement.clientWidth).filter((d) => d > 1));
  assert.deepEqual(cut, [], `${name}: a table is cut off at 360 px`);
  // every section is one tap away: the menu button opens all of them
  if (await page.locator("nav.main").count()) {
    assert.equal(await page.locator("nav.main ul.wide").isVisible(), false, `${name}: the wide menu is replaced on a phone`);
    await page.locator("details.phone-menu summary").click();
    const links = await page.locator("details.phone-menu a").evaluateAll((as) => as.filter((a) => a.getBoundingClientRect().height > 0).length);
    const sections = await page.locator("nav.main ul.wide a").count();
    assert.ok(sections >= minSections, `${name}: the wide menu has every section (${sections})`);
    assert.equal(links, sections, `${name}: the menu button shows every section`);
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}-phone-menu.jpg`, type: "jpeg", quality: 72, fullPage: false });
    await page.locator("details.phone-menu summary").click();
  }
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}-phone.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await page.close();
}

async function visit(page, path, name, { shot = true } = {}) {
  const r = await page.goto(BASE + path);
  assert.ok(r.ok(), `${name}: ${path} answers ${r.status()}`);
  await a11y(page, name);
  if (SHOTS && shot) await page.screenshot({ path: `${SHOTS}/${name}-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  return r;
}

async function signIn(ctx, cf, profile) {
  const page = await ctx.newPage();
  await page.goto(BASE + "/auth/login?next=/");
  await a11y(page, "demo-identity-provider");
  const form = page.locator(`form:has(input[name=cf][value^="${cf}"]):has(input[name=profile][value="${profile}"])`);
  await form.locator("button").click();
  await page.waitForLoadState();
  return page;
}

/** Text drawn on a PDF's pages (inflated content streams; literal strings of Tj). */
function pdfStrings(buf) {
  const out = [];
  const s = buf.toString("latin1");
  let i = 0;
  for (;;) {
    const a = s.indexOf("stream", i);
    if (a < 0) break;
    const start = s[a + 6] === "\r" ? a + 8 : a + 7;
    const end = s.indexOf("endstream", start);
    if (end < 0) break;
    let data = buf.subarray(start, end);
    try { data = inflateSync(data); } catch { data = null; }
    if (data) {
      const text = data.toString("latin1");
      // one Tj per line (as our writer emits them); balanced parentheses may stay unescaped
      for (const m of text.matchAll(/^\((.*)\) Tj$/gm)) out.push(m[1].replace(/\\(.)/g, "$1"));
    }
    i = end + 9;
  }
  return out;
}

const step = (s) => console.log(`- ${s}`);
try {
  // ---- the landing page, signed out
  const anon = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const landing = await anon.newPage();
  await visit(landing, "/", "landing");
  await keyboard(landing, "landing");
  await phone(anon, "/", "landing");
  // the public waiting times, signed out, in Italian and English
  await landing.click("#public-services a >> text=Tempi di attesa");
  await landing.waitForURL("**/tempi-di-attesa");
  assert.ok((await landing.locator("#waits tbody tr").count()) > 3, "waiting times per ASST");
  assert.match(await landing.locator("#waits").innerText(), /ASST[\s\S]*giorni/);
  await visit(landing, "/tempi-di-attesa?prestazione=88.76.1", "waiting-times");
  await phone(anon, "/tempi-di-attesa?prestazione=88.76.1", "waiting-times");
  await visit(landing, "/tempi-di-attesa?prestazione=88.76.1&lang=en", "waiting-times-en", { shot: false });
  assert.match(await landing.locator("#waits").innerText(), /Median wait|days/);
  const feed = await (await landing.request.get(BASE + "/tempi-di-attesa.json")).json();
  assert.ok(feed.services.length >= 10 && feed.services[0].groups.length > 0, "the JSON lists services and groups");
  step("read the public waiting times signed out (page in Italian and English, and the JSON)");
  await anon.close();

  // ---- Giulia signs in with the demo provider
  const citizen = await browser.newContext({ bypassCSP: true, locale: "it-IT", acceptDownloads: true });
  const page = await signIn(citizen, GIULIA, "citizen");
  assert.equal(new URL(page.url()).pathname, "/", "signed in, on the home page");
  assert.match(await page.locator("#record-holder").innerText(), /Giulia Rossi/);
  step("Giulia signed in through the demo identity provider; the home page names whose record it is");
  await visit(page, "/", "home");
  await keyboard(page, "home");
  await phone(citizen, "/", "home");

  // ---- find a lab report by text, open it
  await visit(page, "/documenti", "documents");
  await phone(citizen, "/documenti", "documents");
  {
    // on a phone the filters fold away: the first document is on the first screen
    const small = await citizen.newPage();
    await small.setViewportSize({ width: 360, height: 740 });
    await small.goto(BASE + "/documenti");
    assert.equal(await small.locator("#tipo").isVisible(), false, "the other filters are folded");
    const top = await small.locator("ul.doclist li").first().evaluate((e) => e.getBoundingClientRect().top);
    assert.ok(top < 740, `the first document is on the first screen of a phone (at ${top}px)`);
    await small.locator("details.more summary").first().click();
    assert.equal(await small.locator("#tipo").isVisible(), true, "and open with one tap");
    await small.close();
  }
  const total = Number((await page.locator("#doc-count").innerText()).match(/\d+/)[0]);
  await page.fill("#q", "laboratorio");
  await page.click("form.filters button[type=submit]");
  await page.waitForLoadState();
  const found = await page.locator("ul.doclist li").count();
  assert.ok(found > 0 && found <= total, `the text search finds lab reports (${found} of ${total})`);
  const titles = await page.locator("ul.doclist a.title").allInnerTexts();
  assert.ok(titles.every((t) => /laboratorio/i.test(t)), `every hit is a lab report: ${titles.join("; ")}`);
  await a11y(page, "documents-search");
  // the first published report (the demo also holds hand-made index entries without a CDA)
  const hrefs = await page.locator("ul.doclist a.title").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  let docPath = null;
  for (const h of hrefs) {
    await page.goto(BASE + h);
    if (await page.locator(".rendering").count() === 1 && await page.locator(".badge.hidden").count() === 0) { docPath = h; break; }
  }
  assert.ok(docPath, "a lab report with its content");
  const docId = docPath.split("/").pop();
  assert.match(await page.locator("h1").innerText(), /laboratorio/i);
  assert.ok(await page.locator(".rendering").count() === 1, "the report's content is rendered");
  await a11y(page, "document");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/document-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(citizen, docPath, "document");
  step(`found ${found} lab reports of ${total} documents by text and opened ${docId}`);

  // ---- open its chart
  await page.click("text=Vedi i risultati nei grafici");
  await page.waitForLoadState();
  await a11y(page, "results");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/results-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await page.locator("table tbody th a", { hasText: /Glucosio/i }).first().click();
  await page.waitForLoadState();
  const svg = page.locator("figure.chart svg.wide");
  assert.equal(await svg.count(), 1, "the chart is drawn");
  assert.ok(await svg.locator("polygon").count() === 1, "the reference range is shaded");
  assert.ok(await svg.locator("circle, path.out").count() >= 2, "the values are plotted");
  await a11y(page, "chart");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/chart-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(citizen, new URL(page.url()).pathname, "chart");
  {
    // on a phone the narrow drawing is shown, its labels readable (at least 10 px high)
    const p = await citizen.newPage();
    await p.setViewportSize({ width: 360, height: 740 });
    await p.goto(page.url());
    assert.equal(await p.locator("figure.chart svg.wide").isVisible(), false, "the wide chart is not shown on a phone");
    assert.ok(await p.locator("figure.chart svg.narrow").isVisible(), "the phone's chart is");
    const h = await p.locator("figure.chart svg.narrow text").first().evaluate((t) => t.getBoundingClientRect().height);
    assert.ok(h >= 10, `chart labels are readable on a phone (${h} px)`);
    await p.close();
  }
  step("opened the glucose chart: values plotted over the laboratory's reference range");

  // ---- the GP looks at the report (consent and care relation: allowed, and logged)
  const gpCtx = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const gp = await signIn(gpCtx, GP, "gp");
  const before = await gp.goto(`${BASE}/documents/${docId}`);
  assert.equal(before.status(), 200, "the GP sees the report before it is hidden");
  assert.ok((await gp.content()).includes("Glucosio"), "with its content");
  step("the family doctor opened the report");

  // ---- Giulia hides it from clinicians
  await page.goto(BASE + docPath);
  await page.click("button:has-text('Oscura ai medici')");
  await page.waitForLoadState();
  // a confirmation first, saying what hiding means; the GP still sees it meanwhile
  assert.match(await page.locator("main h1").innerText(), /Vuoi oscurare questo documento/);
  assert.equal((await gp.goto(`${BASE}/documents/${docId}`)).status(), 200, "nothing hidden before she confirms");
  await a11y(page, "hide-confirmation");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/hide-confirmation-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await page.click("button:has-text('Sì, oscura il documento')");
  await page.waitForLoadState();
  assert.match(await page.locator("main .alert.ok").innerText(), /oscurato ai medici/i);
  assert.ok(await page.locator(".badge.hidden").count() >= 1, "the document is marked hidden");
  step("Giulia hid the report from clinicians");

  // ---- the GP can no longer see it, anywhere
  const after = await gp.goto(`${BASE}/documents/${docId}`);
  assert.equal(after.status(), 404, "hidden: the GP gets not-found");
  assert.ok(!(await gp.content()).includes("Glucosio"));
  const api = await gpCtx.request.get(`${BASE}/documents/${docId}/pdf`);
  assert.equal(api.status(), 404, "nor its PDF");
  step("the GP now gets 404 for the report and its PDF");

  // ---- Giulia sees the GP's earlier access in the log
  await visit(page, "/privacy/accessi", "access-log");
  const log = await page.locator("#access-log").innerText();
  assert.match(log, /Paolo Ferrari/, "the GP is named in the access log");
  assert.match(log, /Medico di medicina generale/, "with his role");
  await phone(citizen, "/privacy/accessi", "access-log");
  step("the access log shows the GP's access");

  // ---- the professional's area: the GP's list, a record through the gate, an emergency opening
  await visit(gp, "/", "pro-list");
  assert.equal(new URL(gp.url()).pathname, "/professionista", "a professional lands on his own area");
  await keyboard(gp, "pro-list");
  await phone(gpCtx, "/professionista", "pro-list");
  await gp.click("a[href='/professionista/assistiti/rossi-giulia']");
  await gp.waitForLoadState();
  assert.match(await gp.locator("main h1").innerText(), /Giulia Rossi/);
  assert.equal(await gp.locator(`a[href='/professionista/documenti/${docId}']`).count(), 0, "the report she hid is not listed");
  await a11y(gp, "pro-record");
  if (SHOTS) await gp.screenshot({ path: `${SHOTS}/pro-record-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(gpCtx, "/professionista/assistiti/rossi-giulia", "pro-record");
  await gp.locator("ul.doclist a").first().click();
  await gp.waitForLoadState();
  assert.ok(await gp.locator(".rendering").count() >= 1, "a document opens with its content");
  await a11y(gp, "pro-document");
  await phone(gpCtx, new URL(gp.url()).pathname, "pro-document");
  // the record's other tabs: results grouped with their charts, vaccinations, prescriptions, timeline
  await visit(gp, "/professionista/assistiti/rossi-giulia/risultati", "pro-results");
  assert.equal(await gp.locator("nav.tabs a[aria-current=page]").innerText(), "Risultati");
  assert.ok(await gp.locator("section.results-group h2").count() >= 2, "results in groups");
  await phone(gpCtx, "/professionista/assistiti/rossi-giulia/risultati", "pro-results");
  await gp.locator("section.results-group table tbody th a").first().click();
  await gp.waitForLoadState();
  assert.ok(await gp.locator("figure.chart svg").count() >= 1, "a result opens on its chart");
  await a11y(gp, "pro-chart");
  if (SHOTS) await gp.screenshot({ path: `${SHOTS}/pro-chart-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  for (const [sub, n] of [["vaccinazioni", "pro-vaccinations"], ["prescrizioni", "pro-prescriptions"], ["cronologia", "pro-timeline"]]) {
    await visit(gp, `/professionista/assistiti/rossi-giulia/${sub}`, n);
    assert.equal(await gp.locator(`a[href='/professionista/documenti/${docId}']`).count(), 0, `${n}: the report she hid is not there`);
    await phone(gpCtx, `/professionista/assistiti/rossi-giulia/${sub}`, n);
  }
  await visit(gp, "/professionista/assistiti/bianchi-marco", "pro-closed");
  assert.match(await gp.locator("#record-closed").innerText(), /consenso/);
  await phone(gpCtx, "/professionista/assistiti/bianchi-marco", "pro-closed");
  await gp.fill("#reason", "Paziente incosciente portato in studio");
  await gp.click("button:has-text('Apri in emergenza')");
  await gp.waitForLoadState();
  assert.ok(await gp.locator("#emergency-open").isVisible(), "the page says it is an emergency access");
  await a11y(gp, "pro-emergency");
  if (SHOTS) await gp.screenshot({ path: `${SHOTS}/pro-emergency-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await visit(gp, "/professionista?lang=en", "pro-list-en", { shot: false });
  assert.match(await gp.locator("main h1").innerText(), /My patients/);
  await gp.goto(BASE + "/lingua/it?next=/professionista");
  step("the GP's list, Giulia's record without the hidden report, a document, Marco's closed record opened as an emergency");

  // ---- the ASST registry office: a person found by codice fiscale, their doctor changed at the desk
  const deskCtx = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const desk = await signIn(deskCtx, "CNTCHR79T41F205", "asst-admin");
  assert.equal(new URL(desk.url()).pathname, "/professionista");
  await desk.fill("#cf", "VRDNNA40B60F205C");
  await desk.click("form[role=search] button[type=submit]");
  await desk.waitForURL("**/professionista/anagrafe/verdi-anna");
  assert.match(await desk.locator("#current-doctor").innerText(), /Paolo Ferrari/);
  assert.equal(await desk.locator("a[href^='/professionista/documenti/']").count(), 0, "no clinical content at the desk");
  await a11y(desk, "registry-desk");
  if (SHOTS) await desk.screenshot({ path: `${SHOTS}/registry-desk-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(deskCtx, "/professionista/anagrafe/verdi-anna", "registry-desk");
  await desk.click("a[href='/professionista/anagrafe/verdi-anna/esenzioni']");
  await desk.waitForLoadState();
  assert.match(await desk.locator("main h1").innerText(), /Esenzioni: Anna Verdi/);
  await a11y(desk, "desk-exemptions");
  if (SHOTS) await desk.screenshot({ path: `${SHOTS}/desk-exemptions-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(deskCtx, "/professionista/anagrafe/verdi-anna/esenzioni", "desk-exemptions");
  await deskCtx.close();
  step("the ASST registry office found Anna by codice fiscale: her doctor and the ones she may take, no clinical content");

  // ---- the CUP desk: Anna found by codice fiscale, her ultrasound booked at the counter
  const cupCtx = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const cup = await signIn(cupCtx, "MRTLGU82C08F205", "cup-operator");
  await cup.fill("#cf", "VRDNNA40B60F205C");
  await cup.click("form[role=search] button[type=submit]");
  await cup.waitForURL("**/professionista/cup/verdi-anna");
  assert.match(await cup.locator("#to-book").innerText(), /Ecografia dell'addome completo/);
  await a11y(cup, "cup-desk");
  await cup.click("#to-book a >> nth=0");
  await cup.waitForLoadState();
  assert.match(await cup.locator("#prescription").innerText(), /NRE[\s\S]*B — Breve/);
  await a11y(cup, "cup-options");
  if (SHOTS) await cup.screenshot({ path: `${SHOTS}/cup-options-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(cupCtx, new URL(cup.url()).pathname, "cup-options");
  await cup.click("#options button[type=submit] >> nth=0");
  await cup.waitForURL("**/professionista/cup/verdi-anna?esito=prenotato");
  assert.match(await cup.locator("#desk-bookings").innerText(), /Ecografia dell'addome completo[\s\S]*Prenotato/);
  await a11y(cup, "cup-desk-booked");
  if (SHOTS) await cup.screenshot({ path: `${SHOTS}/cup-desk-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(cupCtx, "/professionista/cup/verdi-anna", "cup-desk");
  // the agendas of the desk's ASST: check a day, then close it
  await visit(cup, "/professionista/agende", "cup-agendas");
  await phone(cupCtx, "/professionista/agende", "cup-agendas", { minSections: 1 });
  await cup.click("#agendas tbody a >> nth=0");
  await cup.waitForLoadState();
  const agendaPath = new URL(cup.url()).pathname;
  const closeDay = new Date(Date.now() + 86400000 * 40);
  for (let i = 0; i < 14; i++) {
    await cup.fill("#giorno", closeDay.toISOString().slice(0, 10));
    await cup.click("form.filters button[type=submit]");
    await cup.waitForLoadState();
    if (await cup.locator("#closing").count()) break;
    closeDay.setDate(closeDay.getDate() + 1);
  }
  assert.equal(await cup.locator("#closing").count(), 1, "a day the agenda opens within two weeks");
  {
    await a11y(cup, "cup-agenda-check");
    if (SHOTS) await cup.screenshot({ path: `${SHOTS}/cup-agenda-check-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
    await phone(cupCtx, agendaPath + "?giorno=" + closeDay.toISOString().slice(0, 10), "cup-agenda-check", { minSections: 1 });
    await cup.click("#closing button[type=submit]");
    await cup.waitForURL("**esito=chiuso**");
    assert.match(await cup.locator("#closed").innerText(), /Giorno chiuso/);
  }
  step("the CUP desk listed its ASST's agendas, checked a day and closed it");
  await cupCtx.close();
  step("the CUP desk found Anna, saw her prescriptions and the region's first availability, booked her ultrasound");

  // ---- Marco finds the emergency opening on his home page, and the link to it in his log
  const marcoCtx = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const marco = await signIn(marcoCtx, "BNCMRC07A10F205", "citizen");
  const banner = await marco.locator("#recent-emergency").innerText();
  assert.match(banner, /Paolo Ferrari/, "who opened it");
  assert.match(banner, /Paziente incosciente portato in studio/, "and why");
  await a11y(marco, "home-emergency");
  if (SHOTS) await marco.screenshot({ path: `${SHOTS}/home-emergency-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(marcoCtx, "/", "home-emergency");
  await marco.click("#recent-emergency a.btn");
  await marco.waitForLoadState();
  assert.match(await marco.locator("#access-log").innerText(), /Paziente incosciente portato in studio/);
  await a11y(marco, "access-log-emergencies");
  await marcoCtx.close();
  step("Marco's home page shows the emergency opening, who and why; its link shows it in his access log");

  // ---- the PDF index lists every document
  const pdf = await citizen.request.get(`${BASE}/documenti/indice.pdf`);
  assert.equal(pdf.status(), 200);
  assert.equal(pdf.headers()["content-type"], "application/pdf");
  const bytes = await pdf.body();
  assert.equal(bytes.subarray(0, 5).toString(), "%PDF-");
  const strings = pdfStrings(bytes);
  const rows = strings.filter((s) => /^\d\d\/\d\d\/\d{4}$/.test(s)).length;
  assert.equal(rows, total, `the PDF index lists ${rows} documents, the portal ${total}`);
  assert.ok(strings.join(" ").includes(`${total} documenti`), "and says how many");
  assert.ok(bytes.toString("latin1").includes("/FontFile2"), "with the font embedded");
  step(`the PDF index lists all ${total} documents`);

  // ---- Taccuino: a wrong value is refused next to its field, a right one is charted
  const weights = async () => {
    const r = await page.goto(BASE + "/risultati/29463-7");
    return r.status() === 404 ? 0 : await page.locator("figure.chart svg.wide rect[width='9']").count();
  };
  const weightsBefore = await weights();
  await visit(page, "/taccuino", "taccuino");
  await page.selectOption("#kind", "weight");
  await page.fill("#value", "abc");
  await page.click("form[action='/taccuino'] button[type=submit]");
  await page.waitForLoadState();
  assert.match(await page.locator("#value-error").innerText(), /fuori dall'intervallo/);
  assert.equal(await page.locator("#value").getAttribute("aria-invalid"), "true");
  await a11y(page, "taccuino-error");
  await page.fill("#value", "72,5");
  await page.click("form[action='/taccuino'] button[type=submit]");
  await page.waitForLoadState();
  assert.match(page.url(), /esito=misura/);
  await page.goto(BASE + "/risultati");
  await page.locator("table tbody th a", { hasText: "Peso corporeo" }).click();
  await page.waitForLoadState();
  assert.equal(await page.locator("figure.chart svg.wide rect[width='9']").count(), weightsBefore + 1, "the measurement is on the chart (one more Taccuino point)");
  assert.match(await page.locator("table").last().innerText(), /72,5|72\.5/);
  await phone(citizen, "/taccuino", "taccuino");
  step("added a weight in the Taccuino (after a refused wrong value) and saw it on the chart");

  // ---- the family doctor: the current one, the others of her ATS with free places, the confirmation
  await visit(page, "/medico", "doctor-choice");
  assert.match(await page.locator("#current-doctor").innerText(), /Paolo Ferrari/);
  assert.match(await page.locator("#doctors").innerText(), /Andrea Marino[\s\S]*posti liberi/);
  await phone(citizen, "/medico", "doctor-choice");
  await page.click("a[aria-label='Scegli Andrea Marino']");
  await page.waitForLoadState();
  assert.match(await page.locator("main").innerText(), /La scelta vale da subito/);
  await a11y(page, "doctor-confirm");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/doctor-confirm-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await page.click("text=Annulla");
  await page.waitForLoadState();
  assert.match(await page.locator("#current-doctor").innerText(), /Paolo Ferrari/, "cancelling changes nothing");
  step("the family doctor page: current doctor, the others with free places, a confirmation that can be cancelled");

  // ---- exemptions: a refused self-certification says why, a right one is in force, then revoked
  await visit(page, "/esenzioni", "exemptions", { shot: false });
  await page.check("input[name=code][value=E01]");
  await page.fill("#income", "20.000");
  await page.check("input[name=accepted]");
  await page.click("#declare button[type=submit]");
  await page.waitForLoadState();
  assert.match(await page.locator("main").innerText(), /E01 spetta a chi ha meno di 6 anni/);
  await a11y(page, "exemptions-refused");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/exemptions-refused-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await page.check("input[name=code][value=E02]");
  await page.check("input[name=standing][value=holder]");
  await page.fill("#income", "7.800,00");
  await page.check("input[name=spouse]");
  await page.check("input[name=accepted]");
  await page.click("#declare button[type=submit]");
  await page.waitForLoadState();
  assert.match(page.url(), /esito=dichiarata/);
  assert.match(await page.locator("#exemptions").innerText(), /E02[\s\S]*Autocertificazione del[\s\S]*In corso/);
  await visit(page, "/esenzioni", "exemptions");
  await phone(citizen, "/esenzioni", "exemptions");
  await page.click("a[aria-label='Revoca E02']");
  await page.waitForLoadState();
  await a11y(page, "exemption-revoke");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/exemption-revoke-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await page.click("main form button[type=submit]");
  await page.waitForLoadState();
  assert.match(await page.locator("#past-exemptions").innerText(), /E02[\s\S]*Revocata/);
  step("self-certified an income exemption (after a refusal that says why), saw it in force, revoked it");

  // ---- booking: from the cardiology prescription to an appointment, moved, then cancelled
  await visit(page, "/prenota", "booking-list");
  await phone(citizen, "/prenota", "booking-list");
  await page.click("#to-book a >> nth=0");
  await page.waitForLoadState();
  assert.match(await page.locator("#prescription").innerText(), /Prima visita cardiologica[\s\S]*NRE[\s\S]*D — Differibile/);
  await a11y(page, "booking-options");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/booking-options-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  const optionsPath = new URL(page.url()).pathname;
  await phone(citizen, optionsPath, "booking-options");
  await page.click("#options button[type=submit] >> nth=0");
  await page.waitForURL("**/conferma?**");
  assert.match(await page.locator("#held").innerText(), /Preparazione[\s\S]*Posto riservato fino alle/);
  await a11y(page, "booking-confirm");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/booking-confirm-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await page.click("main form button[type=submit]");
  await page.waitForURL("**/appuntamenti/**esito=prenotato");
  assert.match(await page.locator("main").innerText(), /Prima visita cardiologica[\s\S]*Prenotazione confermata/);
  await a11y(page, "booking-done");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/booking-done-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(citizen, new URL(page.url()).pathname, "booking-done");
  assert.equal(await page.locator("a[href$='/calendario.ics']").count(), 1, "the calendar file is offered");
  await page.click("#earlier-opt-in button");
  await page.waitForURL("**esito=anticipo-attivo");
  assert.match(await page.locator("#earlier-opt-in").innerText(), /Ti avvisiamo/);
  await a11y(page, "booking-earlier-opt-in");
  await page.click("#appointment-actions a >> text=Sposta");
  await page.waitForLoadState();
  assert.match(await page.locator("main h1").innerText(), /Sposta l'appuntamento/);
  await page.click("#options button[type=submit] >> nth=1");
  await page.waitForURL("**esito=spostato");
  assert.match(await page.locator("main").innerText(), /Appuntamento spostato/);
  await page.click("#appointment-actions a >> text=Disdici");
  await page.waitForLoadState();
  await a11y(page, "booking-cancel");
  await phone(citizen, new URL(page.url()).pathname, "booking-cancel");
  await page.click("main form button[type=submit]");
  await page.waitForURL("**/prenota?esito=disdetto*");
  assert.match(await page.locator("#to-book").innerText(), /Prima visita cardiologica/, "bookable again");
  step("booked the cardiology visit from the prescription (first availability, hold, confirm), moved it, cancelled it");

  // ---- privacy page
  await visit(page, "/privacy", "privacy");
  await phone(citizen, "/privacy", "privacy");

  // ---- switch to the child's record
  await visit(page, "/famiglia", "family");
  await page.click("button[aria-label*='Luca Bianchi']");
  await page.waitForLoadState();
  assert.match(await page.locator("#record-holder").innerText(), /Luca Bianchi/);
  assert.match(await page.locator("section.record").innerText(), /figlio minore/);
  await visit(page, "/documenti", "child-documents", { shot: false });
  const childTitles = await page.locator("ul.doclist a.title").allInnerTexts();
  assert.ok(childTitles.length > 0, "the child's documents are listed");
  assert.ok(!childTitles.some((t) => /consultorio/i.test(t)), "a document hidden from parents (P97) is not listed");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/child-record-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  // the parent chooses the child's doctor: at 10, a pediatrician or a family doctor
  await visit(page, "/medico", "doctor-choice-child");
  assert.match(await page.locator("#current-doctor").innerText(), /Luca Bianchi[\s\S]*Elena Colombo/);
  assert.match(await page.locator("main").innerText(), /Tra 6 e 14 anni/);
  await phone(citizen, "/medico", "doctor-choice-child");
  await visit(page, "/esenzioni", "exemptions-child");
  assert.match(await page.locator("main").innerText(), /Esenzioni di[\s\S]*Luca Bianchi/);
  await phone(citizen, "/esenzioni", "exemptions-child");
  // Luca has coeliac disease: from his exemption to his gluten-free budget, and the code for the till
  await page.click("a[href='/celiachia']");
  await page.waitForLoadState();
  await a11y(page, "celiac");
  assert.match(await page.locator("#celiac-budget").innerText(), /46,80\s€ disponibili/);
  const spends = await page.locator("#spends").innerText();
  assert.match(spends, /Farmacia San Luca/);
  assert.match(spends, /Supermercato Navigli/);
  await page.click("#celiac-code button[type=submit]");
  await page.waitForLoadState();
  assert.equal(await page.locator("#celiac-code svg").count(), 1, "a QR code");
  await a11y(page, "celiac-code");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/celiac-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(citizen, "/celiachia", "celiac");
  {
    // the code as it is shown at the till, on a phone
    const p = await citizen.newPage();
    await p.setViewportSize({ width: 360, height: 740 });
    await p.goto(BASE + "/celiachia");
    await p.click("#celiac-code button[type=submit]");
    await p.waitForLoadState();
    await p.locator("#celiac-code").scrollIntoViewIfNeeded();
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `celiac code: no sideways scrolling at 360 px (overflow ${overflow}px)`);
    if (SHOTS) await p.screenshot({ path: `${SHOTS}/celiac-code-phone.jpg`, type: "jpeg", quality: 72, fullPage: false });
    await p.close();
  }
  step("the parent opened Luca's gluten-free budget from his exemption: what remains, the month's purchases, the QR code");
  {
    // the shop's till (demo): the code Luca's mother shows, 12,50 euro, and the budget drops
    const code = (await page.locator("#code-text").innerText()).trim();
    const till = await citizen.newPage();
    await till.goto(BASE + "/esercente");
    await a11y(till, "till");
    await till.selectOption("#merchant", "demo-bottega-senza-glutine");
    await till.fill("#code", code);
    await till.fill("#amount", "12,50");
    await till.click("#till button[type=submit]");
    await till.waitForLoadState();
    assert.match(await till.locator("#till-outcome").innerText(), /12,50\s€[\s\S]*Restano 34,30\s€/);
    await a11y(till, "till-charged");
    if (SHOTS) await till.screenshot({ path: `${SHOTS}/till-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
    await till.close();
    await page.goto(BASE + "/celiachia");
    assert.match(await page.locator("#celiac-budget").innerText(), /34,30\s€ disponibili/);
    assert.match(await page.locator("#spends").innerText(), /Bottega Senza Glutine/);
    await phone(citizen, "/esercente", "till");
    step("the demo till charged 12,50 euro with Luca's code, and his budget dropped to 34,30 euro");
  }
  // the parent books for Luca: his eye examination is there to book
  await visit(page, "/prenota", "booking-child");
  assert.match(await page.locator("#to-book").innerText(), /Prima visita oculistica/);
  assert.match(await page.locator("main").innerText(), /Prenotazioni per\s+Luca Bianchi/);
  await phone(citizen, "/prenota", "booking-child");
  // as Anna's delegate: no doctor choice in the menu, and its address says why
  await page.goto(BASE + "/famiglia");
  await page.click("button[aria-label*='Anna Verdi']");
  await page.waitForLoadState();
  assert.equal(await page.locator("nav.main a[href='/medico']").count(), 0, "a delegate is not offered the doctor choice");
  const refused = await page.goto(BASE + "/medico");
  assert.equal(refused.status(), 403);
  assert.match(await page.locator("main").innerText(), /una delega non lo comprende/, "and says why");
  await a11y(page, "doctor-choice-delegate");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/doctor-choice-delegate-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(citizen, "/medico", "doctor-choice-delegate");
  assert.equal(await page.locator("nav.main a[href='/esenzioni']").count(), 0, "her delegation does not cover exemptions");
  const noExemptions = await page.goto(BASE + "/esenzioni");
  assert.equal(noExemptions.status(), 403);
  assert.match(await page.locator("main").innerText(), /non comprende le esenzioni/);
  await a11y(page, "exemptions-delegate");
  // the ultrasound the CUP desk booked is in Anna's appointments, and the desk in her access log
  await page.goto(BASE + "/appuntamenti");
  assert.match(await page.locator("main").innerText(), /Ecografia dell'addome completo/);
  await page.goto(BASE + "/privacy/accessi");
  assert.match(await page.locator("main").innerText(), /Luigi Moretti/);
  // her delegation covers appointments: she can book Anna's eye examination's options
  await visit(page, "/prenota", "booking-delegate");
  // (a delegate's menu has the sections her delegation covers)
  await phone(citizen, "/prenota", "booking-delegate", { minSections: 4 });
  await page.click("#to-book a >> nth=0");
  await page.waitForLoadState();
  assert.match(await page.locator("#prescription").innerText(), /Prima visita oculistica/);
  await a11y(page, "booking-options-delegate");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/booking-delegate-options-desktop.jpg`, type: "jpeg", quality: 72, fullPage: false });
  await phone(citizen, new URL(page.url()).pathname, "booking-options-delegate", { minSections: 4 });
  step("as Anna's delegate: the ultrasound the desk booked, the desk in her log, her eye examination's options");
  await page.goto(BASE + "/famiglia");
  await page.click("text=Consulta il mio fascicolo");
  await page.waitForLoadState();
  assert.match(await page.locator("#record-holder").innerText(), /Giulia Rossi/);
  step("switched to Luca's record (parent of a minor) and back");

  // ---- the other pages
  for (const [p, n] of [["/cronologia", "timeline"], ["/vaccinazioni", "vaccinations"], ["/prescrizioni", "prescriptions"],
    ["/appuntamenti", "appointments"], ["/piano-di-cura", "care-plan"]]) {
    await visit(page, p, n);
  }
  await phone(citizen, "/prescrizioni", "prescriptions");
  await phone(citizen, "/cronologia", "timeline");
  await phone(citizen, "/vaccinazioni", "vaccinations");
  await phone(citizen, "/risultati", "results");
  // prescriptions say in words whether they can still be collected
  const rx = await page.goto(BASE + "/prescrizioni").then(() => page.locator("main").innerText());
  assert.match(rx, /Scaduta il|Da ritirare entro il/, "a prescription's status says until when");
  assert.doesNotMatch(rx, /\bactive\b|\bcompleted\b/, "no raw FHIR status");
  // the pages every public site links from its footer, open without signing in
  const visitor = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
  const open = await visitor.newPage();
  for (const [p, n, h] of [["/aiuto", "help", /Aiuto/], ["/accessibilita", "accessibility-statement", /accessibilità/],
    ["/note-legali", "legal-notes", /Note legali/]]) {
    await visit(open, p, n);
    assert.match(await open.locator("h1").innerText(), h);
    assert.equal(await open.locator(`footer a[href='${p}']`).count(), 1, `${n}: linked from the footer`);
    await phone(visitor, p, n);
  }
  await visitor.close();
  step("the footer's help, accessibility statement and legal notes open for everyone");
  await page.goto(BASE + "/vaccinazioni");
  await page.locator("table tbody th a").first().click();
  await page.waitForLoadState();
  assert.match(new URL(page.url()).pathname, /^\/vaccinazioni\/.+/);
  await a11y(page, "vaccination");
  assert.ok(await page.goto(BASE + "/prescrizioni").then(() => page.locator(".barcode svg").count()) > 0, "prescriptions carry the NRE barcode");

  // ---- switch language
  await page.goto(BASE + "/documenti");
  await page.click("a[hreflang=en]");
  await page.waitForLoadState();
  assert.equal(await page.getAttribute("html", "lang"), "en");
  assert.equal(await page.locator("h1").innerText(), "Your documents");
  await page.goto(BASE + "/privacy");
  assert.equal(await page.locator("#consent").innerText(), "Consent to consultation", "English is remembered across pages");
  await a11y(page, "privacy-en");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/privacy-en-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await page.click("a[hreflang=it]");
  await page.waitForLoadState();
  assert.equal(await page.getAttribute("html", "lang"), "it");
  step("switched to English and back");

  // ---- a page that does not exist reads as a message, not a stack trace
  const missing = await page.goto(BASE + "/documenti/does-not-exist");
  assert.equal(missing.status(), 404);
  assert.match(await page.locator("h1").innerText(), /Non trovato/);
  await a11y(page, "not-found");
  // ---- an address the site does not have: the designed page, with the way home
  const unknown = await page.goto(BASE + "/pagina-inesistente");
  assert.equal(unknown.status(), 404);
  assert.match(await page.locator("h1").innerText(), /Pagina non trovata/);
  assert.equal(await page.locator("main a[href='/']").count(), 1, "the page leads home");
  await a11y(page, "unknown-address");
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/unknown-address-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
  await phone(citizen, "/pagina-inesistente", "unknown-address");
  step("an unknown address is a designed page that leads home");
  await gpCtx.close();
  await citizen.close();

  // ---- emergency rooms live, without login (the demo simulates every room in real time)
  {
    const er = await browser.newContext({ bypassCSP: true, locale: "it-IT" });
    const p = await er.newPage();
    await visit(p, "/pronto-soccorso", "er-board");
    await keyboard(p, "er-board");
    await phone(er, "/pronto-soccorso", "er-board");
    const rooms = await p.locator("table.stack tbody tr[data-er]").count();
    assert.ok(rooms >= 80, `every emergency room of the region is listed (${rooms})`);
    assert.equal(await p.locator("svg.map circle").count(), rooms, "the map shows each room");
    await p.fill("#comune", "Bergamo");
    await p.click("form.near button[type=submit]");
    await p.waitForLoadState();
    const near = await p.locator("ul.er-grid > li").allInnerTexts();
    assert.equal(near.length, 6, "the six nearest rooms");
    assert.match(near[0], /Bergamo|BG|km/, `the nearest first: ${near[0].slice(0, 80)}`);
    const kms = near.map((t) => Number((t.match(/([\d,]+) km/) || [0, "999"])[1].replace(",", ".")));
    assert.deepEqual([...kms].sort((a, b) => a - b), kms, `nearest first: ${kms.join(", ")}`);
    await a11y(p, "er-nearest");
    if (SHOTS) await p.screenshot({ path: `${SHOTS}/er-nearest-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
    await p.locator("ul.er-grid > li h3 a").first().click();
    await p.waitForLoadState();
    assert.equal(await p.locator("tr[data-code]").count(), 5, "the table per triage code");
    await a11y(p, "er-room");
    if (SHOTS) await p.screenshot({ path: `${SHOTS}/er-room-desktop.jpg`, type: "jpeg", quality: 72, fullPage: true });
    await phone(er, new URL(p.url()).pathname, "er-room");
    await p.goto(BASE + new URL(p.url()).pathname + "?lang=en");
    assert.match(await p.locator("caption").innerText(), /Patients by triage code/);
    await a11y(p, "er-room-en");
    step(`the emergency rooms: ${rooms} on the map and in the table, the six nearest Bergamo, one room per triage code, in English`);
    await er.close();

    // with the page's own content security policy (no bypass): the script runs and the page
    // follows the live stream; the browser's position finds the nearest rooms
    const live = await browser.newContext({ locale: "it-IT", geolocation: { latitude: 45.464, longitude: 9.19 }, permissions: ["geolocation"] });
    const lp = await live.newPage();
    await lp.goto(BASE + "/pronto-soccorso");
    await lp.waitForFunction(() => document.documentElement.classList.contains("live-on"), null, { timeout: 5000 });
    // blank every count; the next message from the server writes them again (it comes with
    // the next simulated event, every few seconds, and at least once a minute in any case)
    await lp.evaluate(() => document.querySelectorAll('tr[data-er] [data-k="waiting"]').forEach((n) => { n.textContent = "?"; }));
    const t0 = Date.now();
    await lp.waitForFunction(() => ![...document.querySelectorAll('tr[data-er] [data-k="waiting"]')].some((n) => n.textContent === "?"), null, { timeout: 75000 });
    step(`the next change (a simulated event) reached the open page through the live stream ${Date.now() - t0} ms after we blanked it, without reloading`);
    await lp.click("#use-position");
    await lp.waitForURL(/lat=45\.464/);
    assert.equal(await lp.locator("ul.er-grid > li").count(), 6, "the nearest rooms from the browser's position");
    assert.match(await lp.locator("ul.er-grid > li").first().innerText(), /Milano/);
    step("the browser's position found the six nearest rooms, in Milan first");
    await live.close();
  }
} catch (e) {
  failures++;
  console.error(e);
} finally {
  await browser.close();
}
console.log("\naccessibility (axe-core, WCAG 2.1 A/AA rules):");
for (const r of report) console.log(`  ${r.page}: ${r.passes} rules passed, ${r.violations.length} violations${r.incomplete.length ? `, needs review: ${r.incomplete.join(", ")}` : ""}`);
if (SHOTS) writeFileSync(`${SHOTS}/axe-report.json`, JSON.stringify(report, null, 2));
if (failures) {
  console.error(`\n${failures} failure(s)`);
  process.exit(1);
}
console.log("\nbrowser journeys: all passed");
