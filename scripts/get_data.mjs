// Builds the licensed training set that scripts/get-data prepares the npm packages for:
//   emoji-datasource-twitter / -google (64×64 PNGs, Twemoji CC-BY-4.0, Noto Emoji Apache-2.0)
//   DiceBear avatar styles whose own meta licence is CC0 1.0 or CC BY 4.0, rendered from options
//   drawn by a seeded RNG, captioned from exactly those options, rasterised by rsvg-convert.
// Writes <out>/<folder>/<name>.png + .txt (first caption), <out>/manifest.jsonl (one JSON object
// per image: file, sha256, source, original, license, attribution, captions), <out>/README.md.
// Every image is a pure function of (package version, seed, style, index): reruns skip what is
// already there, and a finished run with the same parameters is detected and left alone.
//
// node scripts/get_data.mjs --out DIR --modules DIR/.npm/node_modules [--per-style N]
//      [--styles a,b,...] [--seed S] [--no-skin-tones] [--jobs N]
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import zlib from 'node:zlib';

// ------------------------------------------------------------------ arguments

const DEFAULT_STYLES = ['adventurer', 'big-smile', 'lorelei', 'micah', 'notionists', 'open-peeps', 'personas', 'pixel-art'];
// Never used, whatever their meta says: their licence is not a standard open licence.
const EXCLUDED_STYLES = new Set(['avataaars', 'avataaars-neutral', 'bottts', 'bottts-neutral']);
const STYLE_LICENSES = { 'CC0 1.0': 'CC0-1.0', 'CC BY 4.0': 'CC-BY-4.0' };

function die(msg) {
  console.error(`get-data: ${msg}`);
  process.exit(1);
}

const args = { out: '', modules: '', perStyle: 200, styles: DEFAULT_STYLES, seed: 1, skinTones: true, jobs: 2 };
for (let i = 2; i < process.argv.length; ++i) {
  const a = process.argv[i];
  const val = () => {
    if (i + 1 >= process.argv.length) die(`${a} needs a value`);
    return process.argv[++i];
  };
  const int = (s, lo) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < lo) die(`${a} ${s}: expected an integer >= ${lo}`);
    return n;
  };
  if (a === '--out') args.out = val();
  else if (a === '--modules') args.modules = val();
  else if (a === '--per-style') args.perStyle = int(val(), 0);
  else if (a === '--styles') args.styles = val().split(',').map((s) => s.trim()).filter(Boolean);
  else if (a === '--seed') args.seed = int(val(), 0);
  else if (a === '--jobs') args.jobs = int(val(), 1);
  else if (a === '--no-skin-tones') args.skinTones = false;
  else die(`unknown option ${a} (see scripts/get-data --help)`);
}
if (!args.out || !args.modules) die('--out and --modules are required (run scripts/get-data, which sets them)');
const OUT = path.resolve(args.out);

// ------------------------------------------------------------------ small helpers

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const readJson = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));

function writeAtomic(file, data) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

// Same content already there → leave the file (and its mtime) alone.
function writeIfChanged(file, data) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  try {
    if (fs.readFileSync(file).equals(buf)) return false;
  } catch {}
  writeAtomic(file, buf);
  return true;
}

function pkgInfo(name) {
  const dir = path.join(args.modules, name);
  const pj = path.join(dir, 'package.json');
  if (!fs.existsSync(pj)) die(`${pj} is missing: run scripts/get-data (it installs the npm packages) instead of this script`);
  const j = readJson(pj);
  return { dir, version: j.version, json: j };
}

async function importPkg(name) {
  const { dir, json } = pkgInfo(name);
  let entry = json.exports?.['.'] ?? json.module ?? json.main ?? 'index.js';
  if (typeof entry === 'object') entry = entry.import ?? entry.default;
  return import(pathToFileURL(path.join(dir, entry)).href);
}

// Minimal PNG reader: size and a "does it have content" check (more than one distinct pixel value
// and not fully transparent). 8-bit non-interlaced images are decoded; others only get the size.
function pngStats(buf) {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (buf.length < 33 || !buf.subarray(0, 8).equals(sig)) return { ok: false, why: 'not a PNG file' };
  let off = 8, w = 0, h = 0, depth = 0, ctype = 0, interlace = 0;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off), type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      w = data.readUInt32BE(0); h = data.readUInt32BE(4); depth = data[8]; ctype = data[9]; interlace = data[12];
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  if (!w || !h || !idat.length) return { ok: false, why: 'PNG without IHDR/IDAT' };
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[ctype];
  if (depth !== 8 || interlace !== 0 || !channels) return { ok: true, w, h, checked: false };
  let raw;
  try {
    raw = zlib.inflateSync(Buffer.concat(idat));
  } catch (e) {
    return { ok: false, why: `corrupt PNG data (${e.message})` };
  }
  const bpp = channels, stride = w * bpp;
  if (raw.length < h * (stride + 1)) return { ok: false, why: 'truncated PNG data' };
  const px = Buffer.alloc(h * stride);
  for (let y = 0; y < h; ++y) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = px.subarray(y * stride, (y + 1) * stride), up = y ? px.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; ++x) {
      const a = x >= bpp ? row[x - bpp] : 0, b = up ? up[x] : 0, c = up && x >= bpp ? up[x - bpp] : 0;
      let v = src[x];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[x] = v & 255;
    }
  }
  const seen = new Set();
  let opaque = ctype === 4 || ctype === 6 ? 0 : w * h;
  for (let i = 0; i < w * h; ++i) {
    const p = px.subarray(i * bpp, (i + 1) * bpp);
    if (ctype === 4 || ctype === 6) {
      if (p[bpp - 1] === 0) continue;
      ++opaque;
    }
    if (seen.size < 2) seen.add(p.toString('hex'));
  }
  if (!opaque) return { ok: false, why: 'fully transparent image' };
  if (seen.size < 2) return { ok: false, why: 'blank image (a single colour)' };
  return { ok: true, w, h, checked: true };
}

// ------------------------------------------------------------------ colour names for captions

function hsl(hex) {
  const r = parseInt(hex.slice(0, 2), 16) / 255, g = parseInt(hex.slice(2, 4), 16) / 255, b = parseInt(hex.slice(4, 6), 16) / 255;
  const mx = Math.max(r, g, b), mn = Math.min(r, g, b), l = (mx + mn) / 2, d = mx - mn;
  if (d === 0) return { h: 0, s: 0, l };
  const s = d / (1 - Math.abs(2 * l - 1));
  let h = mx === r ? ((g - b) / d) % 6 : mx === g ? (b - r) / d + 2 : (r - g) / d + 4;
  h = (h * 60 + 360) % 360;
  return { h, s, l };
}

function hueName(h, l) {
  if (h < 12 || h >= 345) return 'red';
  if (h < 40) return 'orange';
  if (h < 68) return 'yellow';
  if (h < 165) return 'green';
  if (h < 200) return 'aqua';
  if (h < 255) return 'blue';
  if (h < 290) return 'purple';
  return l < 0.4 ? 'purple' : 'pink';
}

// Clothes, hats: "blue", "light green", "dark red", "grey", "brown".
function colourName(hex) {
  const { h, s, l } = hsl(hex);
  if (l < 0.12) return 'black';
  if (l > 0.93) return 'white';
  if (s < 0.15) return l > 0.7 ? 'light grey' : l < 0.3 ? 'dark grey' : 'grey';
  if (h >= 12 && h < 50 && l < 0.45) return 'brown';
  const base = hueName(h, l);
  if (l > 0.78) return `light ${base}`;
  if (l < 0.25) return `dark ${base}`;
  return base;
}

// Hair: black, brown, blonde, orange, red, grey, white, or a hue for dyed colours.
function hairName(hex) {
  const { h, s, l } = hsl(hex);
  if (l < 0.13) return 'black';
  if (s < 0.15) return l > 0.85 ? 'white' : 'grey';
  if (h >= 12 && h < 60) {
    if (l >= 0.55) return 'blonde';
    if (s > 0.6 && l > 0.33) return 'orange';
    return 'brown';
  }
  return hueName(h, l);
}

// The emoji skin-tone names (Unicode CLDR), so both sources share one vocabulary.
const SKIN_TONES = { '1F3FB': 'light', '1F3FC': 'medium-light', '1F3FD': 'medium', '1F3FE': 'medium-dark', '1F3FF': 'dark' };
function skinName(hex) {
  const { l } = hsl(hex);
  const t = l >= 0.8 ? 'light' : l >= 0.68 ? 'medium-light' : l >= 0.5 ? 'medium' : l >= 0.36 ? 'medium-dark' : 'dark';
  return `${t} skin tone`;
}

// ------------------------------------------------------------------ seeded RNG

// splitmix64-style hash of (seed, style, index) → mulberry32 state: image i of a style depends
// on nothing else, so --per-style can grow without changing the images already made.
function rngFor(seed, style, index) {
  let h = 0x9e3779b9 ^ seed;
  for (const ch of `${style}#${index}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x85ebca6b) ^ (h >>> 13);
  let a = (h ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next(); next();
  return { next, pick: (arr) => arr[Math.floor(next() * arr.length)] };
}

// Backgrounds: our palette (pastel enough that every avatar stays visible), named exactly.
const BACKGROUNDS = [
  ['ffffff', 'white'], ['d9d9d9', 'grey'], ['f4a3a3', 'red'], ['f7c58f', 'orange'], ['f6e58d', 'yellow'],
  ['a8e0a0', 'green'], ['9fe0dc', 'aqua'], ['a3c4f3', 'blue'], ['c9b3f0', 'purple'], ['f5b5d8', 'pink'],
];

// ------------------------------------------------------------------ DiceBear caption rules
// Per style, [option, rule] in tag order: hair, hair colour, facial hair, eyes, expression,
// eyewear, accessories, clothes, skin tone. A rule gets (value, options) and returns a tag, a list
// of tags, or null. Optional parts (those with an `XProbability` option) only count when drawn.

const on = (o, part) => o[`${part}Probability`] === undefined || o[`${part}Probability`] === 100;
const when = (part, tag) => (v, o) => (on(o, part) ? (typeof tag === 'function' ? tag(v, o) : tag) : null);
const map = (part, table) => (v, o) => (on(o, part) ? table[v] ?? null : null);
const hairColour = (part = 'hair', skip = []) => (c, o) => (on(o, part) && !skip.includes(o[part]?.[0]) ? `${hairName(c)} hair` : null);
const skin = (c) => skinName(c);
const firstOf = (v) => (Array.isArray(v) ? v[0] : v);

const OPEN_PEEPS_HEAD = {
  afro: 'afro', bangs: 'bangs', bangs2: 'bangs', bantuKnots: 'bantu knots', bear: 'bear hat', bun: 'hair bun',
  bun2: 'hair bun', buns: 'double bun', cornrows: 'cornrows', cornrows2: 'cornrows', dreads1: 'dreadlocks',
  dreads2: 'dreadlocks', flatTop: 'flat top', flatTopLong: 'flat top', grayBun: 'hair bun',
  grayMedium: 'medium hair', grayShort: 'short hair', hatBeanie: 'beanie',
  hatHip: 'hat', hijab: 'hijab', long: 'long hair', longAfro: 'long afro', longBangs: ['long hair', 'bangs'],
  longCurly: 'long curly hair', medium1: 'medium hair', medium2: 'medium hair', medium3: 'medium hair',
  mediumBangs: ['medium hair', 'bangs'], mediumBangs2: ['medium hair', 'bangs'], mediumBangs3: ['medium hair', 'bangs'],
  mediumStraight: 'medium straight hair', mohawk: 'mohawk', mohawk2: 'mohawk', noHair1: 'bald', noHair2: 'bald',
  noHair3: 'bald', pomp: 'pompadour', shaved1: 'buzz cut', shaved2: 'buzz cut', shaved3: 'buzz cut',
  short1: 'short hair', short2: 'short hair', short3: 'short hair', short4: 'short hair', short5: 'short hair',
  turban: 'turban', twists: 'twists', twists2: 'twists',
};

const CAPTION_RULES = {
  adventurer: [
    ['hair', (v, o) => (on(o, 'hair') ? (v.startsWith('short') ? 'short hair' : 'long hair') : 'bald')],
    ['hairColor', hairColour()],
    ['features', map('features', { mustache: 'mustache', blush: 'blush', birthmark: 'mole', freckles: 'freckles' })],
    ['glasses', when('glasses', 'glasses')],
    ['earrings', when('earrings', 'earrings')],
    ['skinColor', skin],
  ],
  'big-smile': [
    ['hair', map('hair', {
      shortHair: 'short hair', mohawk: 'mohawk', wavyBob: 'wavy bob cut', bowlCutHair: 'bowl cut', curlyBob: 'curly bob cut',
      straightHair: 'long straight hair', braids: 'braids', shavedHead: 'shaved head', bunHair: 'hair bun', froBun: 'afro puff',
      bangs: 'bangs', halfShavedHead: 'half shaved head', curlyShortHair: 'short curly hair' })],
    ['hairColor', hairColour()],
    ['eyes', map('eyes', { cheery: 'happy eyes', confused: 'confused', starstruck: 'starry eyes', winking: 'wink', sleepy: 'sleepy', sad: 'sad eyes', angry: 'angry' })],
    ['mouth', map('mouth', { openedSmile: 'open mouth smile', unimpressed: 'unimpressed', gapSmile: 'gap-toothed smile', openSad: 'open mouth frown',
      teethSmile: 'toothy smile', awkwardSmile: 'awkward smile', braces: 'braces', kawaii: 'cat mouth' })],
    ['accessories', map('accessories', { catEars: 'cat ears', glasses: 'glasses', sailormoonCrown: 'tiara', clownNose: 'clown nose',
      sleepMask: 'sleep mask', sunglasses: 'sunglasses', faceMask: 'face mask', mustache: 'mustache' })],
    ['skinColor', skin],
  ],
  lorelei: [
    ['hairAccessories', when('hairAccessories', 'flower in hair')],
    ['beard', when('beard', 'beard')],
    ['mouth', (v) => (v.startsWith('happy') ? 'smile' : 'frown')],
    ['glasses', when('glasses', 'glasses')],
    ['earrings', when('earrings', 'earrings')],
    ['freckles', when('freckles', 'freckles')],
  ],
  micah: [
    ['hair', (v, o) => (on(o, 'hair') ? { fonze: 'quiff', mrT: 'mohawk', dougFunny: 'short hair', mrClean: 'bald', dannyPhantom: 'messy hair',
      full: 'full hair', turban: 'turban', pixie: 'pixie cut' }[v] : 'bald')],
    ['hairColor', hairColour('hair', ['mrClean', 'turban'])],
    ['facialHair', map('facialHair', { beard: 'beard', scruff: 'stubble' })],
    ['eyes', map('eyes', { round: 'round eyes', eyesShadow: 'eyeshadow', smiling: 'smiling eyes', smilingShadow: ['smiling eyes', 'eyeshadow'] })],
    ['mouth', map('mouth', { surprised: 'surprised', laughing: 'laughing', nervous: 'nervous', smile: 'smile', sad: 'sad', pucker: 'pucker',
      frown: 'frown', smirk: 'smirk' })],
    ['glasses', map('glasses', { round: 'round glasses', square: 'square glasses' })],
    ['earrings', map('earrings', { hoop: 'hoop earrings', stud: 'stud earrings' })],
    ['shirt', map('shirt', { open: 'open collar shirt', crew: 'crew neck shirt', collared: 'collared shirt' })],
    ['shirtColor', (c) => `${colourName(c)} shirt`],
    ['baseColor', skin],
  ],
  notionists: [
    ['beard', when('beard', 'beard')],
    ['glasses', when('glasses', 'glasses')],
    ['gesture', map('gesture', { wavePointLongArms: 'waving', waveOkLongArms: 'waving', waveLongArms: 'waving', waveLongArm: 'waving',
      pointLongArm: 'pointing', okLongArm: 'ok sign', point: 'pointing', ok: 'ok sign', hand: 'raised hand', handPhone: 'holding phone' })],
    ['bodyIcon', map('bodyIcon', { electric: 'lightning bolt on shirt', saturn: 'planet on shirt', galaxy: 'galaxy on shirt' })],
  ],
  'open-peeps': [
    ['head', (v) => OPEN_PEEPS_HEAD[v] ?? null],
    // no hair colour: open peeps hair is ink-black; headContrastColor only tints a few heads' highlights
    ['facialHair', (v, o) => (on(o, 'facialHair') ? (v === 'chin' ? 'chin beard' : v.startsWith('full') ? 'beard' : v.startsWith('goatee') ? 'goatee' : 'mustache') : null)],
    ['face', (v) => ({
      angryWithFang: ['angry', 'fang'], awe: 'awe', blank: 'expressionless', calm: 'calm', cheeky: 'cheeky', concerned: 'worried',
      concernedFear: 'scared', contempt: 'contempt', cute: 'cute', cyclops: 'cyclops', driven: 'determined', eatingHappy: 'eating',
      explaining: 'talking', eyesClosed: 'closed eyes', fear: 'scared', hectic: 'panicking', lovingGrin1: 'grin', lovingGrin2: 'grin',
      monster: 'monster face', old: 'old', rage: 'rage', serious: 'serious', smile: 'smile', smileBig: 'big smile', smileLOL: 'laughing',
      smileTeethGap: 'gap-toothed smile', solemn: 'solemn', suspicious: 'suspicious', tired: 'tired', veryAngry: 'angry' }[v] ?? null)],
    ['accessories', (v, o) => (on(o, 'accessories') ? (v === 'eyepatch' ? 'eyepatch' : v.startsWith('sunglasses') ? 'sunglasses' : 'glasses') : null)],
    ['mask', map('mask', { medicalMask: 'surgical mask', respirator: 'respirator' })],
    ['clothingColor', (c) => `${colourName(c)} shirt`],
    ['skinColor', skin],
  ],
  personas: [
    ['hair', map('hair', {
      long: 'long hair', sideShave: 'side shave', shortCombover: 'short combover', curlyHighTop: 'curly high top', bobCut: 'bob cut',
      curly: 'curly hair', pigtails: 'pigtails', curlyBun: 'curly bun', buzzcut: 'buzz cut', bobBangs: ['bob cut', 'bangs'], bald: 'bald',
      balding: 'balding', cap: 'cap', bunUndercut: 'bun with undercut', fade: 'fade haircut', beanie: 'beanie', straightBun: 'hair bun',
      extraLong: 'very long hair', shortComboverChops: ['short combover', 'sideburns'], mohawk: 'mohawk' })],
    ['hairColor', hairColour('hair', ['bald', 'cap', 'beanie'])],
    ['facialHair', map('facialHair', { beardMustache: 'beard', pyramid: 'mustache', walrus: 'walrus mustache', goatee: 'goatee',
      shadow: 'stubble', soulPatch: 'soul patch' })],
    ['eyes', map('eyes', { sleep: 'closed eyes', wink: 'wink', glasses: 'glasses', happy: 'happy eyes', sunglasses: 'sunglasses' })],
    ['mouth', map('mouth', { smile: 'smile', frown: 'frown', surprise: 'surprised', pacifier: 'pacifier', bigSmile: 'big smile',
      smirk: 'smirk', lips: 'lips' })],
    ['clothingColor', (c) => `${colourName(c)} shirt`],
    ['skinColor', skin],
  ],
  'pixel-art': [
    ['hair', (v) => (v.startsWith('short') ? 'short hair' : 'long hair')],
    ['hairColor', hairColour()],
    ['beard', when('beard', 'beard')],
    ['mouth', (v) => (v.startsWith('happy') ? 'smile' : 'frown')],
    ['glasses', (v, o) => (on(o, 'glasses') ? (v.startsWith('dark') ? 'sunglasses' : 'glasses') : null)],
    ['hat', (v, o) => (on(o, 'hat') ? `${colourName(o.hatColor[0])} hat` : null)],
    ['clothingColor', (c) => `${colourName(c)} shirt`],
    ['skinColor', skin],
  ],
};

const camel = (kebab) => kebab.replace(/-([a-z])/g, (_, c) => c.toUpperCase());

// The options of avatar `index`: every style option set explicitly (one value each; optional parts
// drawn with the style's own probability, clamped to [20, 80] % so both cases are common).
function avatarOptions(styleName, schema, index) {
  const rng = rngFor(args.seed, styleName, index);
  const props = schema.properties ?? {};
  const o = { seed: `${styleName}-${index}` };
  for (const k of Object.keys(props).sort()) {
    const s = props[k];
    if (k.endsWith('Probability') && s.type === 'integer') {
      const d = typeof s.default === 'number' ? s.default : 50;
      const p = d >= 100 ? 100 : Math.min(80, Math.max(20, d));
      o[k] = rng.next() * 100 < p ? 100 : 0;
    } else if (s.type === 'array' && s.items?.enum?.length) {
      o[k] = [rng.pick([...s.items.enum].sort())];
    } else if (s.type === 'array' && Array.isArray(s.default) && s.default.length && /^[0-9a-fA-F]{6}$/.test(s.default[0])) {
      o[k] = [rng.pick(s.default)];
    }
  }
  const [bgHex, bgName] = rng.pick(BACKGROUNDS);
  Object.assign(o, { backgroundColor: [bgHex], backgroundType: ['solid'], flip: false, rotate: 0, scale: 100,
                     radius: 0, translateX: 0, translateY: 0, clip: true });
  return { options: o, background: bgName };
}

function avatarCaption(styleName, props, o, background) {
  const tags = [`${styleName.replace(/-/g, ' ')} style`];
  const rules = CAPTION_RULES[styleName];
  if (rules) {
    for (const [k, rule] of rules) {
      if (o[k] === undefined) continue;
      // A colour with one possible value says nothing (e.g. lorelei's black line art).
      const def = props[k]?.default;
      if (Array.isArray(def) && def.length === 1 && /^[0-9a-fA-F]{6}$/.test(def[0])) continue;
      const t = rule(firstOf(o[k]), o);
      for (const x of [t].flat()) if (x && !tags.includes(x)) tags.push(x);
    }
  } else {
    // A style without hand-written rules: the optional parts that were drawn, by name.
    for (const k of Object.keys(o))
      if (k.endsWith('Probability') && o[k] === 100 && k !== 'hairProbability')
        tags.push(k.slice(0, -11).replace(/([A-Z])/g, ' $1').toLowerCase());
  }
  tags.push(`${background} background`);
  return tags.join(', ');
}

// ------------------------------------------------------------------ rasterising

function rsvg(svg) {
  return new Promise((resolve, reject) => {
    const p = spawn('rsvg-convert', ['--width', '64', '--height', '64', '--format', 'png'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [], err = [];
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => err.push(d));
    p.on('error', (e) => reject(new Error(`cannot run rsvg-convert (${e.message}): apt-get install librsvg2-bin`)));
    p.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`rsvg-convert failed (${code}): ${Buffer.concat(err)}`))));
    p.stdin.end(svg);
  });
}

async function parallel(items, jobs, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker));
}

// ------------------------------------------------------------------ sources

const records = [];  // manifest entries
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

function progress(label, done, total) {
  if (done === total || done % 500 === 0) console.log(`  ${label}: ${done}/${total} (${elapsed()})`);
}

// Names for captions: "FOX FACE" → "fox face"; commas would split a tag list, so they go.
const cleanName = (s) => s.toLowerCase().replace(/,/g, '').replace(/_/g, ' ').replace(/\s+/g, ' ').trim();

const EMOJI_SETS = [
  { set: 'twitter', pkg: 'emoji-datasource-twitter', folder: 'emoji-twitter', style: 'twemoji style', license: 'CC-BY-4.0',
    attribution: 'Twemoji by Twitter, Inc and other contributors, CC-BY 4.0' },
  { set: 'google', pkg: 'emoji-datasource-google', folder: 'emoji-google', style: 'noto emoji style', license: 'Apache-2.0',
    attribution: 'Noto Emoji by Google, Apache License 2.0' },
];

function emojiSource(cfg) {
  const { dir, version } = pkgInfo(cfg.pkg);
  const list = readJson(path.join(dir, 'emoji.json'));
  const outDir = path.join(OUT, cfg.folder);
  fs.mkdirSync(outDir, { recursive: true });
  const items = [];
  const skipped = { component: 0, obsolete: 0, no_image: 0, multi_tone: 0, skin_tone: 0 };
  for (const e of list) {
    if (e.category === 'Component') { ++skipped.component; continue; }  // bare skin-tone swatches
    if (e.obsoleted_by) { ++skipped.obsolete; continue; }               // duplicates of a newer emoji
    const name = cleanName(e.name || e.short_name);
    const short = cleanName(e.short_name || '');
    const cat = e.category.toLowerCase();
    const variants = [{ image: e.image, has: e[`has_img_${cfg.set}`], tone: null }];
    for (const [k, v] of Object.entries(e.skin_variations ?? {})) {
      if (k.includes('-')) { ++skipped.multi_tone; continue; }  // two people, two tones: left out
      if (!args.skinTones) { ++skipped.skin_tone; continue; }
      variants.push({ image: v.image, has: v[`has_img_${cfg.set}`], tone: `${SKIN_TONES[k] ?? k.toLowerCase()} skin tone` });
    }
    for (const v of variants) {
      if (!v.has) { ++skipped.no_image; continue; }
      const tags = (n) => [n, v.tone, cat, cfg.style].filter(Boolean).join(', ');
      const captions = [tags(name)];
      if (short && short !== name) captions.push(tags(short));
      items.push({ image: v.image, captions });
    }
  }
  const source = `npm:${cfg.pkg}@${version}`;
  console.log(`${cfg.folder}: ${items.length} images from ${source} (left out: ${Object.entries(skipped).filter(([, n]) => n).map(([k, n]) => `${n} ${k.replace('_', ' ')}`).join(', ')})`);
  let done = 0, copied = 0;
  const keep = new Set();
  for (const it of items) {
    const rel = `img/${cfg.set}/64/${it.image}`;
    const src = path.join(dir, rel);
    if (!fs.existsSync(src)) die(`${src}: listed in emoji.json with has_img_${cfg.set} but missing from the package`);
    const bytes = fs.readFileSync(src);
    const st = pngStats(bytes);
    if (!st.ok) die(`${src}: ${st.why}`);
    if (st.w !== 64 || st.h !== 64) die(`${src}: ${st.w}x${st.h}, expected 64x64`);
    const base = it.image.replace(/\.png$/, '');
    if (writeIfChanged(path.join(outDir, `${base}.png`), bytes)) ++copied;
    writeIfChanged(path.join(outDir, `${base}.txt`), `${it.captions[0]}\n`);
    keep.add(`${base}.png`).add(`${base}.txt`);
    records.push({ file: `${cfg.folder}/${base}.png`, sha256: sha256(bytes), source, original: rel, license: cfg.license,
                   attribution: cfg.attribution, captions: it.captions });
    progress(cfg.folder, ++done, items.length);
  }
  prune(outDir, keep);
  console.log(`  ${cfg.folder}: ${copied} copied, ${items.length - copied} already there`);
}

// Files of ours that the current parameters no longer produce (e.g. a smaller --per-style).
function prune(dir, keep) {
  for (const f of fs.readdirSync(dir))
    if (/\.(png|txt)$/.test(f) && !keep.has(f)) fs.unlinkSync(path.join(dir, f));
}

async function dicebearSource() {
  const core = await importPkg('@dicebear/core');
  const collection = await importPkg('@dicebear/collection');
  const used = [];
  for (const name of args.styles) {
    if (EXCLUDED_STYLES.has(name)) { console.log(`dicebear-${name}: left out (excluded: not an open licence)`); continue; }
    const style = collection[camel(name)];
    if (!style) die(`--styles: no DiceBear style '${name}' in @dicebear/collection (names as on dicebear.com, e.g. open-peeps)`);
    const lic = style.meta?.license?.name;
    const spdx = STYLE_LICENSES[lic];
    if (!spdx) { console.log(`dicebear-${name}: left out (licence '${lic ?? 'unknown'}' is not CC0 1.0 or CC BY 4.0)`); continue; }
    used.push({ name, style, spdx });
  }
  for (const { name, style, spdx } of used) {
    const { version } = pkgInfo(`@dicebear/${name}`);
    const source = `npm:@dicebear/${name}@${version}`;
    const m = style.meta;
    const attribution = `${m.title} by ${m.creator} (${m.source}), ${m.license.name} (${m.license.url}), rendered with DiceBear`;
    const folder = `dicebear-${name}`;
    const outDir = path.join(OUT, folder);
    fs.mkdirSync(outDir, { recursive: true });
    console.log(`${folder}: ${args.perStyle} avatars from ${source} (${m.license.name})`);
    const props = style.schema?.properties ?? {};
    const keep = new Set();
    const recs = new Array(args.perStyle);
    let done = 0, rendered = 0;
    await parallel([...Array(args.perStyle).keys()], args.jobs, async (i) => {
      const { options, background } = avatarOptions(name, style.schema ?? {}, i);
      const caption = avatarCaption(name, props, options, background);
      const base = `${name}-${String(i).padStart(5, '0')}`;
      const png = path.join(outDir, `${base}.png`);
      let bytes = null;
      try {
        bytes = fs.readFileSync(png);
        if (!pngStats(bytes).ok) bytes = null;
      } catch {}
      if (!bytes) {
        const svg = core.createAvatar(style, options).toString();
        bytes = await rsvg(svg);
        const st = pngStats(bytes);
        if (!st.ok || !st.checked) die(`${folder}/${base}.png: rsvg-convert gave a bad image (${st.why ?? 'not 8-bit'}) for options ${JSON.stringify(options)}`);
        if (st.w !== 64 || st.h !== 64) die(`${folder}/${base}.png: ${st.w}x${st.h}, expected 64x64`);
        writeAtomic(png, bytes);
        ++rendered;
      }
      writeIfChanged(path.join(outDir, `${base}.txt`), `${caption}\n`);
      keep.add(`${base}.png`).add(`${base}.txt`);
      recs[i] = { file: `${folder}/${base}.png`, sha256: sha256(bytes), source,
                  original: { style: name, seed: options.seed, options }, license: spdx, attribution, captions: [caption] };
      progress(folder, ++done, args.perStyle);
    });
    records.push(...recs);
    prune(outDir, keep);
    console.log(`  ${folder}: ${rendered} rendered, ${args.perStyle - rendered} already there`);
  }
  // A style folder from an earlier run with other --styles: its images are not in this manifest.
  for (const f of fs.readdirSync(OUT))
    if (f.startsWith('dicebear-') && !used.some((u) => `dicebear-${u.name}` === f)) {
      fs.rmSync(path.join(OUT, f), { recursive: true, force: true });
      console.log(`${f}: removed (not among --styles)`);
    }
}

// ------------------------------------------------------------------ main

function params() {
  const versions = {};
  for (const p of ['emoji-datasource-twitter', 'emoji-datasource-google', '@dicebear/core', '@dicebear/collection'])
    versions[p] = pkgInfo(p).version;
  return { format: 1, versions, perStyle: args.perStyle, styles: args.styles, seed: args.seed, skinTones: args.skinTones };
}

function alreadyComplete(p) {
  const stampFile = path.join(OUT, '.get-data.json'), manifest = path.join(OUT, 'manifest.jsonl');
  try {
    const stamp = readJson(stampFile);
    if (JSON.stringify(stamp.params) !== JSON.stringify(p)) return false;
    const text = fs.readFileSync(manifest);
    if (sha256(text) !== stamp.manifest_sha256) return false;
    for (const line of text.toString('utf8').split('\n'))
      if (line && !fs.existsSync(path.join(OUT, JSON.parse(line).file))) return false;
    return stamp;
  } catch {
    return false;
  }
}

function summary() {
  const by = (k) => records.reduce((m, r) => ((m[r[k]] = (m[r[k]] ?? 0) + 1), m), {});
  const bytes = records.reduce((s, r) => s + fs.statSync(path.join(OUT, r.file)).size, 0);
  return { images: records.length, bytes, sources: by('source'), licenses: by('license') };
}

function readme(s) {
  const attributions = [...new Set(records.map((r) => r.attribution))];
  const rows = (o) => Object.entries(o).sort().map(([k, n]) => `| ${k} | ${n} |`).join('\n');
  return `# Licensed training data (made by scripts/get-data)

${s.images} images, 64×64 PNG, ${(s.bytes / 1048576).toFixed(1)} MiB of PNG. Every image has a
caption sidecar (\`.txt\`, its first caption) and one line in \`manifest.jsonl\` with its sha256,
npm source, the file or options it came from, its SPDX licence, the attribution and its captions.
\`oboro train\` checks the images it uses against this manifest and records a digest of it in the
model (\`oboro.dataset\`; \`oboro info\` shows it).

## Per source

| source | images |
|---|---|
${rows(s.sources)}

## Per licence

| licence | images |
|---|---|
${rows(s.licenses)}

## Attribution (required by CC-BY-4.0 and Apache-2.0; shown by \`oboro info\`)

${attributions.map((a) => `- ${a}`).join('\n')}

## What was chosen

- Emoji: every emoji of emoji.json whose image exists for the set (\`has_img_twitter\` /
  \`has_img_google\`), flags and symbols included; left out: the Component category (bare
  skin-tone swatches), emoji marked \`obsoleted_by\` (duplicates of a newer one) and mixed
  two-tone skin variations.${args.skinTones ? ' Single skin-tone variations are included, with the tone in the caption\n  ("waving hand sign, medium skin tone, people & body, twemoji style").' : ' Skin-tone variations are left out (--no-skin-tones).'}
  Apple and Facebook images are never used (not openly licensed).
- Captions: emoji name (lowercase, from \`name\`; a second caption from \`short_name\` when it
  differs), skin tone, category, style. DiceBear: "<style> style", then tags from the exact
  options drawn, in the order hair, hair colour, facial hair, eyes, expression, eyewear,
  accessories, clothes, skin tone, background.
- DiceBear styles: ${args.styles.join(', ')} (those whose meta licence is CC0 1.0 or CC BY 4.0;
  avataaars and bottts are always excluded), ${args.perStyle} per style, seed ${args.seed}. Options are drawn
  by a seeded RNG per (seed, style, index); optional parts use the style's probability clamped to
  20–80 %. Rendered by rsvg-convert at 64×64 and checked to be non-blank.
`;
}

async function main() {
  const p = params();
  fs.mkdirSync(OUT, { recursive: true });
  const done = alreadyComplete(p);
  if (done) {
    console.log(`get-data: ${OUT} is already complete (${done.images} images, same packages and options); nothing to do`);
    console.log(`get-data: to rebuild, delete ${path.join(OUT, '.get-data.json')}`);
    return;
  }
  fs.rmSync(path.join(OUT, '.get-data.json'), { force: true });
  for (const cfg of EMOJI_SETS) emojiSource(cfg);
  await dicebearSource();
  records.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  const manifest = records.map((r) => JSON.stringify({ file: r.file, sha256: r.sha256, source: r.source, original: r.original,
    license: r.license, attribution: r.attribution, captions: r.captions })).join('\n') + '\n';
  writeAtomic(path.join(OUT, 'manifest.jsonl'), manifest);
  const s = summary();
  writeAtomic(path.join(OUT, 'README.md'), readme(s));
  writeAtomic(path.join(OUT, '.get-data.json'), JSON.stringify({ params: p, manifest_sha256: sha256(Buffer.from(manifest)), images: s.images }, null, 1) + '\n');
  console.log(`\nget-data: wrote ${OUT}/manifest.jsonl: ${s.images} images, ${(s.bytes / 1048576).toFixed(1)} MiB of PNG, ${elapsed()}`);
  for (const [k, n] of Object.entries(s.licenses).sort()) console.log(`  ${k.padEnd(12)} ${n}`);
  for (const [k, n] of Object.entries(s.sources).sort()) console.log(`  ${k.padEnd(44)} ${n}`);
}

main().catch((e) => die(e.stack ?? String(e)));
