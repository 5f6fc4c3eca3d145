// oboro web UI: plain JS against the server's own API (POST /oboro/v1/jobs, SSE progress, cancel, history).
'use strict';

const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem('oboro.key') || '', lastSeed: null, jobs: new Map(), current: null,
  galleryOffset: 0, info: null, selected: null, initImage: null };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h['Authorization'] = 'Bearer ' + state.key;
  return h;
}

async function api(path, options) {
  const opt = Object.assign({}, options || {});
  opt.headers = headers(opt.headers);
  const res = await fetch(path, opt);
  if (res.status === 401) {
    $('key-box').hidden = false;
    $('api-key').focus();
    throw new Error('this server needs an API key: enter it at the top right');
  }
  let body = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) body = await res.json();
  if (!res.ok) {
    const msg = body && (typeof body.error === 'string' ? body.error : body.error && body.error.message);
    const err = new Error(msg || ('HTTP ' + res.status));
    err.status = res.status;
    throw err;
  }
  return body;
}

// Images are fetched with the API key when there is one (an <img src> cannot send it).
async function setImage(img, url) {
  if (!state.key) { img.src = url; return; }
  const res = await fetch(url, { headers: headers() });
  if (res.ok) img.src = URL.createObjectURL(await res.blob());
}

function showError(msg) {
  $('error').textContent = msg;
  $('error').hidden = !msg;
}

// ---------------------------------------------------------------- form

function sizePresets(native, maxSide) {
  const [w, h] = native.split('x').map(Number);
  const out = [[w, h, 'native']];
  for (const s of [64, 128, 256, 512, 768, 1024]) if (s !== w || s !== h) out.push([s, s, 'square']);
  out.push([Math.round(w * 1.5 / 4) * 4, h, 'landscape 3:2'], [w, Math.round(h * 1.5 / 4) * 4, 'portrait 2:3']);
  return out.filter(([a, b]) => a <= maxSide && b <= maxSide);
}

function fillPresets() {
  const sel = $('size-preset');
  sel.innerHTML = '';
  for (const [w, h, label] of sizePresets(state.info.resolution, state.info.limits.max_side)) {
    const o = document.createElement('option');
    o.value = w + 'x' + h;
    o.textContent = w + '×' + h + ' ' + label;
    sel.appendChild(o);
  }
  const custom = document.createElement('option');
  custom.value = 'custom';
  custom.textContent = 'custom';
  sel.appendChild(custom);
  applyPreset();
}

function applyPreset() {
  const v = $('size-preset').value;
  if (v === 'custom') return;
  const [w, h] = v.split('x');
  $('width').value = w;
  $('height').value = h;
}

function matchPreset() {
  const v = $('width').value + 'x' + $('height').value;
  const opt = Array.from($('size-preset').options).find((o) => o.value === v);
  $('size-preset').value = opt ? v : 'custom';
}

function syncOutputs() {
  $('steps-out').textContent = $('steps').value;
  $('cfg-out').textContent = $('cfg').value;
  $('strength-out').textContent = $('strength').value;
}

function requestBody() {
  const body = {
    prompt: $('prompt').value,
    negative_prompt: $('negative').value,
    width: Number($('width').value),
    height: Number($('height').value),
    steps: Number($('steps').value),
    cfg_scale: Number($('cfg').value),
    seed: Number($('seed').value),
    batch_size: Number($('batch').value),
    sampler_name: 'Euler',
  };
  if ($('model').value) body.override_settings = { sd_model_checkpoint: $('model').value };
  if (state.initImage) {
    body.init_images = [state.initImage];
    body.denoising_strength = Number($('strength').value);
  }
  return body;
}

// ---------------------------------------------------------------- jobs

async function generate(ev) {
  ev.preventDefault();
  showError('');
  let job;
  try {
    job = await api('/oboro/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(requestBody()) });
  } catch (e) {
    showError(e.message);
    return;
  }
  track(job);
}

function track(job) {
  const row = document.createElement('div');
  row.className = 'job';
  row.id = 'job-' + job.id;
  row.innerHTML = '<span class="label"></span><progress max="1" value="0"></progress><span class="st"></span>' +
    '<button type="button" class="job-cancel">Cancel</button>';
  row.querySelector('.label').textContent = (job.parameters.prompt || '(no prompt)') + ' · seed ' + job.parameters.seed;
  row.querySelector('.job-cancel').addEventListener('click', () => cancel(job.id));
  $('jobs').prepend(row);
  state.jobs.set(job.id, { row, status: job.status });
  state.current = job.id;
  $('cancel').disabled = false;
  update(job);
  stream(job.id).catch((e) => showError('progress stream: ' + e.message));
}

// Server-Sent Events read with fetch (so the API key header can be sent).
async function stream(id) {
  const res = await fetch('/oboro/v1/jobs/' + id + '/events', { headers: headers({ Accept: 'text/event-stream' }) });
  if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data) update(JSON.parse(data), event);
    }
  }
}

function fmtEta(s) {
  if (s === undefined || s === null) return '';
  return s < 60 ? ' · ETA ' + s.toFixed(1) + ' s' : ' · ETA ' + Math.round(s / 60) + ' min';
}

function update(s, event) {
  const j = state.jobs.get(s.id);
  if (!j) return;
  j.status = s.status;
  const row = j.row;
  row.querySelector('progress').value = s.progress || 0;
  let text = s.status;
  if (s.status === 'queued') text = 'queued, position ' + s.position;
  if (s.status === 'running') text = 'step ' + s.step + '/' + s.total + (s.n_batches > 1 ? ' (batch ' + (s.batch + 1) + '/' + s.n_batches + ')' : '') + fmtEta(s.eta_relative);
  if (s.status === 'failed') text = 'failed: ' + (s.error || '');
  row.querySelector('.st').textContent = text;
  const finished = ['completed', 'failed', 'cancelled'].includes(s.status);
  row.querySelector('.job-cancel').hidden = finished;
  if (finished || event === 'status') refreshQueue();
  if (state.current !== s.id) return;
  $('progress').value = s.progress || 0;
  $('progress-text').textContent = text;
  if (s.preview) {
    $('preview').src = 'data:image/png;base64,' + s.preview;
    $('preview').hidden = false;
    $('placeholder').hidden = true;
  }
  if (!finished) return;
  $('cancel').disabled = !Array.from(state.jobs.values()).some((x) => !['completed', 'failed', 'cancelled'].includes(x.status));
  if (s.status === 'failed') showError(s.error || 'generation failed');
  if (s.status !== 'completed') return;
  const results = $('results');
  results.innerHTML = '';
  for (const im of s.images) {
    const img = document.createElement('img');
    img.alt = 'seed ' + im.seed;
    img.dataset.file = im.file;
    img.className = 'result';
    setImage(img, im.url);
    img.addEventListener('click', () => showDetails(Object.assign({ file: im.file, url: im.url, infotext: im.infotext, seed: im.seed }, s.parameters, { seed: im.seed })));
    results.appendChild(img);
    state.lastSeed = im.seed;
  }
  if (s.images.length) {
    setImage($('preview'), s.images[0].url);
    $('preview').hidden = false;
    $('placeholder').hidden = true;
  }
  loadGallery(true);
}

async function cancel(id) {
  try {
    await api('/oboro/v1/jobs/' + id + '/cancel', { method: 'POST' });
  } catch (e) {
    if (e.status !== 409) showError(e.message);
  }
}

function cancelCurrent() {
  const active = Array.from(state.jobs.entries()).filter(([, j]) => !['completed', 'failed', 'cancelled'].includes(j.status));
  const cur = active.find(([id]) => id === state.current) || active[0];
  if (cur) cancel(cur[0]);
}

// ---------------------------------------------------------------- gallery

async function loadGallery(reset) {
  if (reset) { state.galleryOffset = 0; $('gallery').innerHTML = ''; }
  let h;
  try {
    h = await api('/oboro/v1/history?limit=48&offset=' + state.galleryOffset);
  } catch (e) {
    showError(e.message);
    return;
  }
  $('gallery-count').textContent = '(' + h.total + ')';
  for (const item of h.items) {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.alt = item.prompt || '';
    img.title = item.prompt || '';
    img.dataset.file = item.file;
    img.loading = 'lazy';
    setImage(img, item.url);
    img.addEventListener('click', () => showDetails(item));
    const cap = document.createElement('figcaption');
    cap.textContent = item.prompt || '';
    fig.append(img, cap);
    $('gallery').appendChild(fig);
  }
  state.galleryOffset += h.items.length;
  $('gallery-more').hidden = state.galleryOffset >= h.total;
}

function showDetails(item) {
  state.selected = item;
  setImage($('details-image'), item.url);
  $('details-prompt').textContent = item.prompt || '(no prompt)';
  $('details-negative').textContent = item.negative_prompt ? 'Negative: ' + item.negative_prompt : '';
  const rows = [['Seed', item.seed], ['Size', (item.width || '?') + ' × ' + (item.height || '?')], ['Steps', item.steps],
    ['CFG scale', item.cfg_scale], ['Sampler', item.sampler_name || 'Euler'], ['Model', item.model],
    ['Denoising strength', item.denoising_strength], ['File', item.file]];
  const t = $('details-params');
  t.innerHTML = '';
  for (const [k, v] of rows) {
    if (v === undefined || v === null) continue;
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    const b = document.createElement('td');
    a.textContent = k;
    b.textContent = String(v);
    tr.append(a, b);
    t.appendChild(tr);
  }
  $('details-open').href = item.url;
  $('details').hidden = false;
  $('details').scrollIntoView({ block: 'nearest' });
}

function reuse() {
  const it = state.selected;
  if (!it) return;
  $('prompt').value = it.prompt || '';
  $('negative').value = it.negative_prompt || '';
  if (it.width) $('width').value = it.width;
  if (it.height) $('height').value = it.height;
  matchPreset();
  if (it.steps) $('steps').value = it.steps;
  if (it.cfg_scale) $('cfg').value = it.cfg_scale;
  if (it.seed !== undefined) $('seed').value = it.seed;
  $('batch').value = 1;
  if (it.model && Array.from($('model').options).some((o) => o.value === it.model)) $('model').value = it.model;
  syncOutputs();
  $('prompt').focus();
}

// ---------------------------------------------------------------- start

async function start() {
  if (state.key) $('api-key').value = state.key;
  $('api-key').addEventListener('change', () => {
    state.key = $('api-key').value.trim();
    localStorage.setItem('oboro.key', state.key);
    init();
  });
  $('form').addEventListener('submit', generate);
  $('cancel').addEventListener('click', cancelCurrent);
  $('size-preset').addEventListener('change', applyPreset);
  $('width').addEventListener('input', matchPreset);
  $('height').addEventListener('input', matchPreset);
  for (const id of ['steps', 'cfg', 'strength']) $(id).addEventListener('input', syncOutputs);
  $('seed-random').addEventListener('click', () => { $('seed').value = -1; });
  $('seed-reuse').addEventListener('click', () => { if (state.lastSeed !== null) $('seed').value = state.lastSeed; });
  $('reuse').addEventListener('click', reuse);
  $('details-close').addEventListener('click', () => { $('details').hidden = true; });
  $('gallery-more').addEventListener('click', () => loadGallery(false));
  $('prompt').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) $('form').requestSubmit(); });
  $('init-image').addEventListener('change', () => {
    const f = $('init-image').files[0];
    if (!f) return;
    const r = new FileReader();
    r.onload = () => {
      state.initImage = r.result;
      $('init-preview').src = r.result;
      $('init-preview-box').hidden = false;
    };
    r.readAsDataURL(f);
  });
  $('init-clear').addEventListener('click', () => {
    state.initImage = null;
    $('init-image').value = '';
    $('init-preview-box').hidden = true;
  });
  syncOutputs();
  await init();
  setInterval(refreshQueue, 3000);
}

async function init() {
  try {
    state.info = await api('/oboro/v1/info');
  } catch (e) {
    showError(e.message);
    return;
  }
  showError('');
  $('server-info').textContent = state.info.version + ' · ' + state.info.model;
  $('steps').max = state.info.limits.max_steps;
  $('steps').value = state.info.defaults.steps;
  $('cfg').value = state.info.defaults.cfg_scale;
  $('batch').max = state.info.limits.max_batch;
  syncOutputs();
  fillPresets();
  const models = await api('/sdapi/v1/sd-models');
  $('model').innerHTML = '';
  for (const m of models) {
    const o = document.createElement('option');
    o.value = m.model_name;
    o.textContent = m.title;
    $('model').appendChild(o);
  }
  $('model').value = state.info.model;
  loadGallery(true);
}

async function refreshQueue() {
  try {
    const r = await api('/oboro/v1/jobs');
    const running = r.jobs.filter((j) => j.status === 'running').length;
    $('queue-info').textContent = running + ' running · ' + (r.jobs.length - running) + ' queued';
  } catch (e) { /* shown by the next action */ }
}

start();
