// The web UI in a real browser (issue 18): Debian's chromium driven by playwright-core against `oboro serve` with the
// bundled default model. Loads the UI, types a prompt, generates, sees progress (step text, a preview) and the image,
// cancels a second job, reuses the settings of a gallery image, tries img2img; screenshots go to WORKDIR/screenshots.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const http = require('http');

const opts = {};
for (let i = 2; i < process.argv.length; i += 2) opts[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const { chromium } = require(path.join(opts['node-modules'], 'playwright-core'));
const work = path.resolve(opts.workdir);
const shots = path.join(work, 'screenshots');
fs.mkdirSync(shots, { recursive: true });

let passed = 0, failed = 0;
function check(cond, what) {
  if (cond) { passed++; console.log('ok   ' + what); } else { failed++; console.log('FAIL ' + what); }
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => { let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve({ status: res.statusCode, body: b })); })
      .on('error', reject);
  });
}

async function startServer() {
  const port = await freePort();
  const outputs = path.join(work, 'outputs');
  fs.rmSync(outputs, { recursive: true, force: true });
  const log = fs.openSync(path.join(work, 'server.log'), 'w');
  const proc = spawn(opts.oboro, ['serve', '--port', String(port), '--outputs', outputs, '--max-steps', '400'],
    { stdio: ['ignore', log, log] });
  const base = 'http://127.0.0.1:' + port;
  for (let i = 0; i < 600; i++) {
    try { if ((await get(base + '/health')).status === 200) return { proc, base }; } catch (e) { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('oboro serve did not start: ' + fs.readFileSync(path.join(work, 'server.log'), 'utf8'));
}

async function setRange(page, sel, value) {
  await page.$eval(sel, (el, v) => { el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); }, String(value));
}

async function main() {
  const { proc, base } = await startServer();
  const userDir = path.join(work, 'chromium-profile');
  fs.rmSync(userDir, { recursive: true, force: true });
  const ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: opts.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1366, height: 800 },
  });
  const errors = [];
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(base + '/');
    await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0);
    check((await page.title()) === 'oboro', 'the UI loads');
    check((await page.inputValue('#width')) === '32' && (await page.inputValue('#height')) === '32', 'size preset: the model\'s 32x32');
    await page.screenshot({ path: path.join(shots, '1-loaded.png') });

    // 1. Generate: progress, preview, then the image.
    const prompt = 'pixel art style, short hair, brown hair, smile, red shirt, blue background';
    await page.fill('#prompt', prompt);
    await page.fill('#negative', 'blurry');
    await page.fill('#seed', '9');
    await setRange(page, '#steps', 150);
    await page.click('#generate');
    await page.waitForFunction(() => /step \d+\/150/.test(document.querySelector('#progress-text').textContent), null, { timeout: 30000 });
    await page.waitForFunction(() => { const p = document.querySelector('#preview'); return !p.hidden && p.src.startsWith('data:image/png'); }, null, { timeout: 30000 });
    check(true, 'progress (step n/150) and a live preview appear');
    const value = await page.$eval('#progress', (el) => el.value);
    check(value > 0 && value <= 1, 'the progress bar moves (' + value + ')');
    await page.screenshot({ path: path.join(shots, '2-progress.png') });
    await page.waitForSelector('#results img.result', { timeout: 60000 });
    await page.waitForFunction(() => document.querySelector('#results img.result').naturalWidth === 32);
    check((await page.textContent('#progress-text')) === 'completed', 'the job completes and the image appears');
    await page.waitForFunction(() => document.querySelectorAll('#gallery img').length >= 1);
    check(true, 'the gallery lists the new image');
    await page.screenshot({ path: path.join(shots, '3-result.png') });
    if (opts['docs-screenshot']) await page.screenshot({ path: opts['docs-screenshot'] });

    // 2. A second, long job, cancelled from the UI.
    await setRange(page, '#steps', 400);
    await page.fill('#batch', '4');
    await page.fill('#seed', '-1');
    await page.click('#generate');
    await page.waitForFunction(() => /step \d+\/400/.test(document.querySelector('#progress-text').textContent), null, { timeout: 30000 });
    await page.click('#cancel');
    await page.waitForFunction(() => document.querySelector('#progress-text').textContent === 'cancelled', null, { timeout: 30000 });
    const rows = await page.$$eval('#jobs .job .st', (els) => els.map((e) => e.textContent));
    check(rows[0] === 'cancelled' && rows[1] === 'completed', 'the second job is cancelled, the first stays completed (' + rows + ')');
    const hist = JSON.parse((await get(base + '/oboro/v1/history')).body);
    check(hist.total === 1, 'the cancelled job wrote no image');
    await page.screenshot({ path: path.join(shots, '4-cancelled.png') });

    // 3. Reuse the settings of a gallery image.
    await page.fill('#prompt', 'something else');
    await page.fill('#seed', '-1');
    await setRange(page, '#steps', 10);
    await page.click('#gallery img');
    await page.waitForSelector('#details:not([hidden])');
    check((await page.textContent('#details-prompt')) === prompt, 'the gallery shows the image\'s parameters');
    await page.click('#reuse');
    check((await page.inputValue('#prompt')) === prompt, 'reuse: the prompt');
    check((await page.inputValue('#negative')) === 'blurry', 'reuse: the negative prompt');
    check((await page.inputValue('#seed')) === '9', 'reuse: the seed');
    check((await page.inputValue('#steps')) === '150', 'reuse: the steps');
    check((await page.inputValue('#batch')) === '1', 'reuse: one image');
    await page.screenshot({ path: path.join(shots, '5-reuse.png') });

    // 4. img2img: upload the generated image, generate from it.
    const png = path.join(work, 'outputs', hist.items[0].file);
    await page.click('#img2img-box summary');
    await page.setInputFiles('#init-image', png);
    await page.waitForSelector('#init-preview-box:not([hidden])');
    await setRange(page, '#steps', 10);
    await page.fill('#batch', '1');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelector('#progress-text').textContent === 'completed' &&
      document.querySelectorAll('#jobs .job').length === 3, null, { timeout: 60000 });
    const last = JSON.parse((await get(base + '/oboro/v1/history?limit=1')).body).items[0];
    check(last.denoising_strength === 0.75, 'img2img from an uploaded image');
    await page.screenshot({ path: path.join(shots, '6-img2img.png') });
    check(errors.length === 0, 'no errors in the page' + (errors.length ? ': ' + errors.join(' | ') : ''));
  } finally {
    await ctx.close();
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('exit', r));
  }
  console.log(`${passed} passed, ${failed} failed`);
  console.log('screenshots: ' + shots);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); console.log(`${passed} passed, ${failed + 1} failed`); process.exit(1); });
