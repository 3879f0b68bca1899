/**
 * GPTQ against round-to-nearest, projection by projection. The model is quantised twice to 4 bits
 * on the same grid (quantizeModel: GPTQ with Hessians from calibration text, and RTN), and each
 * projection's error is measured where it matters, on its output: ||X W^T - X Q^T|| / ||X W^T||
 * over held-out activations X (the inputs the projection sees in the unquantised model on text
 * not used for calibration). The result is a table, the perplexities, and an SVG bar chart
 * (GPTQ and RTN side by side for every projection of every layer; hand-written SVG).
 *
 *   npx tsx examples/quantize-walkthrough.ts -o examples/quantize-walkthrough.svg
 *
 * Without -m it quantises the model bundled with tessera (stories260K). Without --calib the
 * calibration and evaluation text is sampled from the model itself (different seeds for each), so
 * nothing needs downloading; with --calib FILE the first 80% of the file calibrates and the rest
 * evaluates. Options: -m MODEL (GGUF F32/F16 or Hugging Face directory), --calib FILE,
 * --bits 4|8, --group-size G (default 128; -1 per output channel), --samples N (calibration
 * windows, default 16), --seq-len L (default 128), --eval-tokens N (held-out tokens, default 512),
 * --json FILE (the numbers).
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  bundledModelPath, dequantizeGptq, Engine, forwardTokens, getBackend, loadModelFile, PagedKvCache, perplexity, quantizeModel, Tensor,
  type LinearRole, type LoadedModel,
} from 'tessera';

function arg(name: string, short?: string): string | undefined {
  const a = process.argv.slice(2);
  const i = a.findIndex((x) => x === name || (short !== undefined && x === short));
  return i >= 0 ? a[i + 1] : undefined;
}
function intArg(name: string, def: number, min: number, max: number): number {
  const s = arg(name);
  const v = s === undefined ? def : Number(s);
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`Expected an integer in [${min}, ${max}] for ${name} but received ${s}`);
  return v;
}

const modelPath = arg('--model', '-m') ?? bundledModelPath;
const calibFile = arg('--calib');
const bits = intArg('--bits', 4, 4, 8);
if (bits !== 4 && bits !== 8) throw new RangeError(`Expected 4 or 8 for --bits but received ${bits}`);
const groupSize = intArg('--group-size', 128, -1, 1 << 20);
if (groupSize === 0 || (groupSize !== -1 && groupSize < 8)) throw new RangeError(`Expected -1 or at least 8 for --group-size but received ${groupSize}`);
const samples = intArg('--samples', 16, 1, 4096);
const seqLen = intArg('--seq-len', 128, 16, 8192);
const evalMax = intArg('--eval-tokens', 512, 16, 1 << 20);
const out = arg('--out', '-o') ?? 'quantize-walkthrough.svg';
const be = getBackend();
const ROLES: LinearRole[] = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'];
const SHORT: Record<string, string> = { wq: 'q', wk: 'k', wv: 'v', wo: 'o', wGate: 'gate', wUp: 'up', wDown: 'down' };
// A Hugging Face directory is named by its last two folders (shakespeare/target/hf -> target/hf).
const modelName = statSync(modelPath).isDirectory() ? path.relative(path.dirname(path.dirname(path.resolve(modelPath))), path.resolve(modelPath)) : path.basename(modelPath).replace(/\.gguf$/, '');

// ---- 1. text: calibration windows and held-out evaluation tokens -------------------------------

const base: LoadedModel = loadModelFile(modelPath, be);
const bos = base.tokenizer.bosId ?? null;
const ctx = Math.min(seqLen, base.model.config.contextLength);
let calib: Int32Array[], evalTokens: number[];
if (calibFile) {
  const ids = base.tokenizer.encode(readFileSync(calibFile, 'utf8'), { addBos: false });
  const cut = Math.floor(ids.length * 0.8);
  if (cut < 2 * ctx) throw new RangeError(`Expected --calib to hold at least ${Math.ceil((2 * ctx) / 0.8)} tokens but it has ${ids.length}`);
  // Evenly spaced windows over the calibration part, each starting with BOS as in training.
  const step = Math.max(1, Math.floor((cut - ctx) / samples));
  calib = Array.from({ length: Math.min(samples, Math.floor((cut - ctx) / step) + 1) }, (_, i) => Int32Array.from([...(bos === null ? [] : [bos]), ...ids.slice(i * step, i * step + ctx - 1)]));
  evalTokens = [...(bos === null ? [] : [bos]), ...ids.slice(cut, cut + evalMax - 1)];
} else {
  // Text the model writes itself (data-free calibration): one sample per seed, BOS first.
  const engine = await Engine.load(modelPath, { backend: be.name });
  const sample = async (seed: number) => {
    const r = await engine.generate(bos === null ? 'Once' : [bos], { seed, temperature: 1, maxTokens: ctx - 1, addBos: bos !== null });
    return [...(bos === null ? [] : [bos]), ...r.tokens];
  };
  calib = [];
  for (let s = 0; s < samples; s++) calib.push(Int32Array.from(await sample(s + 1)));
  evalTokens = [];
  for (let s = 0; evalTokens.length < evalMax; s++) evalTokens.push(...(await sample(100_000 + s)));
  evalTokens.length = evalMax;
  await engine.dispose();
}
const calibCount = calib.reduce((a, w) => a + w.length, 0);
console.log(`${modelName}: ${calib.length} calibration windows (${calibCount} tokens${calibFile ? ` from ${calibFile}` : ', sampled from the model'}), ${evalTokens.length} held-out tokens`);

// ---- 2. held-out activations: what each projection sees in the unquantised model ----------------

const c = base.model.config;
const held = new Map<string, { x: Float32Array[]; T: number }>();
const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(ctx / 16) + 1 });
for (let i = 0; i + 2 <= evalTokens.length; i += ctx) {
  cache.add(0);
  forwardTokens(base.model, cache, 0, Int32Array.from(evalTokens.slice(i, i + ctx)), { observer: {
    onLinearInput: (layer, roles, x) => {
      for (const r of roles) {
        const h = held.get(`${layer}.${r}`) ?? { x: [], T: 0 };
        h.x.push(x.data.slice());
        h.T += x.shape[0]!;
        held.set(`${layer}.${r}`, h);
      }
    },
  } });
  cache.free(0);
}
cache.dispose();
const heldX = new Map([...held].map(([k, h]) => {
  const all = new Float32Array(h.x.reduce((a, x) => a + x.length, 0));
  let at = 0;
  for (const x of h.x) (all.set(x, at), (at += x.length));
  return [k, new Tensor('f32', [h.T, all.length / h.T], all)] as const;
}));
const reference = new Map<string, Float32Array>();
for (let l = 0; l < c.layers; l++)
  for (const r of ROLES) {
    const w = base.model.weights.layers[l]![r];
    if (w instanceof Tensor) reference.set(`${l}.${r}`, be.linear(heldX.get(`${l}.${r}`)!, new Tensor('f32', [...w.shape], w.toFloat32())).data);
  }
const pplF32 = perplexity(base.model, evalTokens, { ctx, bosId: bos }).ppl;
base.model.dispose();

// ---- 3. quantise twice and measure each projection's output error -------------------------------

interface MethodResult {
  method: 'gptq' | 'rtn';
  ppl: number;
  seconds: number;
  /** Relative output error per projection `${layer}.${role}`; skipped projections are absent. */
  errors: Record<string, number>;
  skipped: string[];
}
const results: MethodResult[] = [];
for (const method of ['gptq', 'rtn'] as const) {
  const m = loadModelFile(modelPath, be);
  const t0 = performance.now();
  const q = quantizeModel(m.model, method === 'gptq' ? calib : [], { method, bits, groupSize });
  const seconds = (performance.now() - t0) / 1e3;
  const errors: Record<string, number> = {};
  const skipped: string[] = [];
  for (const r of q.report) {
    const key = `${r.layer}.${r.role}`;
    const layer = q.layers.get(key);
    if (!layer) {
      skipped.push(`${key} [${r.N}x${r.K}]: ${r.reason}`);
      continue;
    }
    const y = be.linear(heldX.get(key)!, new Tensor('f32', [r.N, r.K], dequantizeGptq(layer))).data, ref = reference.get(key)!;
    let num = 0, den = 0;
    for (let i = 0; i < y.length; i++) {
      num += (y[i]! - ref[i]!) ** 2;
      den += ref[i]! ** 2;
    }
    errors[key] = Math.sqrt(num / den);
  }
  const ppl = perplexity(m.model, evalTokens, { ctx, bosId: bos }).ppl;
  m.model.dispose();
  results.push({ method, ppl, seconds, errors, skipped });
}

// ---- 4. report ----------------------------------------------------------------------------------

const [gptq, rtn] = results as [MethodResult, MethodResult];
const keys = Object.keys(gptq.errors);
const setting = `${bits}-bit ${groupSize === -1 ? 'per-channel' : `g${groupSize}`}`;
console.log(`\n${setting}: relative output error on held-out activations (lower is better)\n`);
console.log('| projection | GPTQ | RTN | GPTQ / RTN |');
console.log('|---|---:|---:|---:|');
for (const k of keys) console.log(`| ${k} | ${gptq.errors[k]!.toFixed(4)} | ${rtn.errors[k]!.toFixed(4)} | ${(gptq.errors[k]! / rtn.errors[k]!).toFixed(2)} |`);
const total = (r: MethodResult) => keys.reduce((a, k) => a + r.errors[k]!, 0);
console.log(`| sum | ${total(gptq).toFixed(4)} | ${total(rtn).toFixed(4)} | ${(total(gptq) / total(rtn)).toFixed(2)} |`);
console.log(`\nGPTQ lower in ${keys.filter((k) => gptq.errors[k]! < rtn.errors[k]!).length} of ${keys.length} projections`);
console.log(`perplexity on the held-out tokens: f32 ${pplF32.toFixed(4)}, GPTQ ${gptq.ppl.toFixed(4)}, RTN ${rtn.ppl.toFixed(4)}`);
console.log(`quantising took ${gptq.seconds.toFixed(1)} s (GPTQ), ${rtn.seconds.toFixed(1)} s (RTN)`);
if (gptq.skipped.length) console.log(`left unquantised: ${skippedSummary(gptq)}`);

writeFileSync(out, chart());
console.log(`chart: ${out}`);
const json = arg('--json');
if (json) writeFileSync(json, JSON.stringify({ model: modelName, bits, groupSize, calibWindows: calib.length, evalTokens: evalTokens.length, pplF32, results }, null, 1));

// ---- the chart ----------------------------------------------------------------------------------

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Axis ticks: the smallest round step (1, 2, 2.5 or 5 times a power of ten) that covers v in at
 *  most 6 steps, and the axis maximum, a whole number of steps at or above v. */
function niceAxis(v: number): { max: number; step: number } {
  const p = 10 ** Math.floor(Math.log10(v / 6));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((st) => Math.ceil(v / st) <= 6)!;
  return { max: Math.ceil(v / step) * step, step };
}

/** Skipped projections grouped by reason: "down in layers 0-4: K = 172 is not ...". */
function skippedSummary(r: MethodResult): string {
  const byReason = new Map<string, string[]>();
  for (const t of r.skipped) {
    const [key, ...why] = t.split(': ');
    const reason = why.join(': ');
    byReason.set(reason, [...(byReason.get(reason) ?? []), key!.split(' ')[0]!]);
  }
  return [...byReason].map(([reason, ks]) => {
    const roles = [...new Set(ks.map((k) => SHORT[k.split('.')[1]!]))].join(', ');
    const layers = [...new Set(ks.map((k) => Number(k.split('.')[0])))];
    const span = layers.length > 1 && layers[layers.length - 1]! - layers[0]! === layers.length - 1 ? `${layers[0]}-${layers[layers.length - 1]}` : layers.join(', ');
    return `${roles} in layer${layers.length > 1 ? 's' : ''} ${span}: ${reason}`;
  }).join('; ');
}

/** Grouped bars: for every quantised projection (grouped by layer) a GPTQ and an RTN bar. */
function chart(): string {
  const COLORS = { gptq: '#1b7f79', rtn: '#e07b39' };
  const bar = 9, pair = 2 * bar + 1, gap = 8, layerGap = 16;
  const left = 72, right = 24, top = 112, plotH = 300, bottom = 96;
  const layers = [...new Set(keys.map((k) => Number(k.split('.')[0])))];
  const perLayer = (l: number) => keys.filter((k) => Number(k.split('.')[0]) === l);
  const plotW = layers.reduce((a, l) => a + perLayer(l).length * (pair + gap) + layerGap, layerGap);
  const width = Math.max(left + plotW + right, 760), height = top + plotH + bottom;
  const maxErr = Math.max(...keys.flatMap((k) => [gptq.errors[k]!, rtn.errors[k]!]));
  const axis = niceAxis(maxErr * 100);
  const y = (pct: number) => top + plotH - (pct / axis.max) * plotH;
  const font = 'font-family="system-ui, -apple-system, \'Segoe UI\', Helvetica, Arial, sans-serif"';
  const s: string[] = [];
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${font} font-size="12" fill="#222">`);
  s.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  s.push(`<text x="${left}" y="30" font-size="17" font-weight="600">GPTQ vs round-to-nearest, ${esc(setting)}: error of each projection (${esc(modelName)})</text>`);
  s.push(`<text x="${left}" y="50" fill="#555">Relative output error ‖XWᵀ − XQᵀ‖ / ‖XWᵀ‖ on held-out activations X; lower is better.</text>`);
  s.push(`<text x="${left}" y="68" fill="#555">Perplexity on the held-out text: f32 ${pplF32.toFixed(3)}, GPTQ ${gptq.ppl.toFixed(3)}, RTN ${rtn.ppl.toFixed(3)}. Calibration: ${calib.length} windows, ${calibCount} tokens${calibFile ? '' : ' (text sampled from the model)'}.</text>`);
  // Legend, on its own row above the plot.
  const mean = (r: MethodResult) => ((total(r) / keys.length) * 100).toFixed(2);
  s.push(`<g id="legend" transform="translate(${left}, 84)">`);
  s.push(`<rect x="0" y="0" width="12" height="12" fill="${COLORS.gptq}"/><text x="18" y="10.5">GPTQ (mean ${mean(gptq)}%)</text>`);
  s.push(`<rect x="170" y="0" width="12" height="12" fill="${COLORS.rtn}"/><text x="188" y="10.5">round-to-nearest (mean ${mean(rtn)}%)</text>`);
  s.push('</g>');
  // Y grid, ticks and label.
  s.push('<g id="y-axis">');
  for (let t = 0; t <= axis.max + 1e-9; t += axis.step) {
    const yy = y(t).toFixed(1);
    s.push(`<line x1="${left}" x2="${left + plotW}" y1="${yy}" y2="${yy}" stroke="${t === 0 ? '#333' : '#e3e3e3'}" stroke-width="1"/>`);
    s.push(`<text x="${left - 8}" y="${yy}" dy="4" text-anchor="end" fill="#444">${+t.toFixed(6)}%</text>`);
  }
  s.push(`<text transform="translate(20, ${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#333">relative output error (%)</text>`);
  s.push('</g>');
  // Bars, grouped by layer.
  s.push('<g id="bars">');
  let x = left + layerGap;
  for (const l of layers) {
    const x0 = x;
    for (const k of perLayer(l)) {
      const role = k.split('.')[1]!;
      for (const [i, r] of [gptq, rtn].entries()) {
        const v = r.errors[k]! * 100, by = y(v);
        s.push(`<rect class="bar" data-method="${r.method}" data-projection="${k}" data-value="${r.errors[k]}" x="${(x + i * (bar + 1)).toFixed(1)}" y="${by.toFixed(2)}" width="${bar}" height="${(top + plotH - by).toFixed(2)}" fill="${COLORS[r.method]}"><title>layer ${l} ${esc(role)}, ${r.method.toUpperCase()}: ${v.toFixed(2)}%</title></rect>`);
      }
      s.push(`<text x="${(x + pair / 2).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" font-size="11" fill="#444">${esc(SHORT[role] ?? role)}</text>`);
      x += pair + gap;
    }
    s.push(`<text x="${((x0 + x - gap) / 2).toFixed(1)}" y="${top + plotH + 36}" text-anchor="middle" font-weight="600" fill="#333">layer ${l}</text>`);
    if (l !== layers[layers.length - 1]) s.push(`<line x1="${(x + layerGap / 2 - gap / 2).toFixed(1)}" x2="${(x + layerGap / 2 - gap / 2).toFixed(1)}" y1="${top}" y2="${top + plotH + 40}" stroke="#cfcfcf" stroke-dasharray="3 3"/>`);
    x += layerGap;
  }
  s.push('</g>');
  s.push(`<text x="${left + plotW / 2}" y="${top + plotH + 60}" text-anchor="middle" fill="#333">projection (q, k, v, o: attention; gate, up, down: MLP)</text>`);
  if (gptq.skipped.length) s.push(`<text x="${left}" y="${height - 12}" font-size="11" fill="#666">Not quantised: ${esc(skippedSummary(gptq))}.</text>`);
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}
