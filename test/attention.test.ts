// flashAttention and pagedAttention against attentionNaive and a float64 reference, across
// causal / GQA / ALiBi / sliding window / sinks / query offset / mask combinations and odd sizes.
import { describe, expect, it } from 'vitest';
import { getBackend, Tensor, type AttentionOptions } from '../src/index.js';
import { onPath, paths, randn, randTensor, relL2, rng } from './helpers.js';
import { attentionRef } from './reference.js';

const ALL = paths();

interface Case {
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  causal?: boolean;
  qOffset?: number;
  alibi?: boolean;
  window?: number;
  sinks?: number;
  mask?: boolean;
}

const CASES: Case[] = [
  { T: 1, S: 1, Hq: 1, Hkv: 1, D: 32 },
  { T: 7, S: 7, Hq: 4, Hkv: 4, D: 64, causal: true },
  { T: 13, S: 29, Hq: 6, Hkv: 2, D: 33 },
  { T: 1, S: 77, Hq: 8, Hkv: 1, D: 128, causal: true }, // decode, MQA
  { T: 9, S: 40, Hq: 4, Hkv: 2, D: 80, causal: true, qOffset: 31 }, // chunked prefill
  { T: 24, S: 24, Hq: 4, Hkv: 4, D: 96, causal: true, alibi: true },
  { T: 37, S: 37, Hq: 2, Hkv: 1, D: 100, causal: true, window: 8 },
  { T: 37, S: 37, Hq: 2, Hkv: 2, D: 127, causal: true, window: 6, sinks: 3 },
  { T: 19, S: 23, Hq: 3, Hkv: 3, D: 255, mask: true },
  { T: 70, S: 70, Hq: 4, Hkv: 2, D: 256, causal: true, alibi: true, window: 20, sinks: 2, mask: true },
  { T: 5, S: 50, Hq: 2, Hkv: 1, D: 48, window: 10 }, // non-causal window
  { T: 100, S: 130, Hq: 2, Hkv: 1, D: 64, causal: true }, // several tiles
];

function caseName(c: Case): string {
  return Object.entries(c).map(([k, v]) => `${k}=${v}`).join(' ');
}

function build(c: Case, seed: number) {
  const r = rng(seed);
  const q = randTensor([c.T, c.Hq, c.D], r), k = randTensor([c.S, c.Hkv, c.D], r), v = randTensor([c.S, c.Hkv, c.D], r);
  const alibi = c.alibi ? getBackend('js').alibiSlopes(c.Hq) : null;
  let mask: Tensor | null = null;
  if (c.mask) {
    const m = randn(c.T * c.S, r);
    for (let i = 0; i < m.length; i += 7) m[i] = -Infinity; // hide some keys outright
    mask = new Tensor('f32', [c.T, c.S], m);
  }
  const opts: AttentionOptions = {
    causal: c.causal ?? false,
    queryOffset: c.qOffset ?? (c.causal ? c.S - c.T : 0),
    alibiSlopes: alibi,
    window: c.window ?? 0,
    sinks: c.sinks ?? 0,
    mask,
  };
  const want = attentionRef(q.data, k.data, v.data, c.T, c.S, c.Hq, c.Hkv, c.D, {
    scale: 1 / Math.sqrt(c.D),
    causal: opts.causal!,
    qOffset: opts.queryOffset!,
    alibi: alibi?.data,
    window: opts.window,
    sinks: opts.sinks,
    mask: mask?.data,
  });
  return { q, k, v, opts, want };
}

describe.each(ALL)('attention on $label', (p) => {
  it.each(CASES.map((c, i) => [caseName(c), c, i] as const))('flash and naive: %s', (_n, c, i) => {
    const { q, k, v, opts, want } = build(c, 100 + i);
    const flash = onPath(p, (be) => be.flashAttention(q, k, v, opts));
    const naive = onPath(p, (be) => be.attentionNaive(q, k, v, opts));
    expect(flash.shape).toEqual([c.T, c.Hq, c.D]);
    expect(relL2(naive.data, want)).toBeLessThan(1e-5);
    expect(relL2(flash.data, want)).toBeLessThan(1e-5);
    expect(relL2(flash.data, naive.data)).toBeLessThan(1e-5);
  });

  it('a query row with every key masked out gives zeros, not NaN', () => {
    const r = rng(5);
    const q = randTensor([2, 2, 32], r), k = randTensor([3, 1, 32], r), v = randTensor([3, 1, 32], r);
    const mask = Tensor.from('f32', [2, 3], [-Infinity, -Infinity, -Infinity, 0, 0, 0]);
    for (const op of ['flashAttention', 'attentionNaive'] as const) {
      const o = onPath(p, (be) => be[op](q, k, v, { mask }));
      expect(Array.from(o.data.subarray(0, 64)).every((x) => x === 0)).toBe(true);
      expect(Array.from(o.data.subarray(64)).every(Number.isFinite)).toBe(true);
    }
  });

  it('a causal query sees exactly its prefix (changing later keys changes nothing)', () => {
    const r = rng(6);
    const c = { T: 10, S: 10, Hq: 2, Hkv: 1, D: 40 };
    const q = randTensor([c.T, c.Hq, c.D], r), k = randTensor([c.S, c.Hkv, c.D], r), v = randTensor([c.S, c.Hkv, c.D], r);
    const a = onPath(p, (be) => be.flashAttention(q, k, v, { causal: true }));
    const k2 = new Tensor('f32', k.shape, k.data.slice()), v2 = new Tensor('f32', v.shape, v.data.slice());
    k2.data.fill(9, 5 * c.D); // keys 5.. change
    v2.data.fill(9, 5 * c.D);
    const b = onPath(p, (be) => be.flashAttention(q, k2, v2, { causal: true }));
    expect(Array.from(b.data.subarray(0, 5 * c.Hq * c.D))).toEqual(Array.from(a.data.subarray(0, 5 * c.Hq * c.D)));
    expect(relL2(b.data.subarray(5 * c.Hq * c.D), a.data.subarray(5 * c.Hq * c.D))).toBeGreaterThan(1e-2);
  });

  it.each([
    { blockSize: 16, lens: [1, 17, 40], nq: [1, 1, 1], Hq: 8, Hkv: 2, D: 64 }, // decode batch
    { blockSize: 4, lens: [9, 3, 12], nq: [9, 2, 5], Hq: 4, Hkv: 4, D: 33 }, // prefill + prefix
    { blockSize: 8, lens: [30, 25], nq: [3, 25], Hq: 6, Hkv: 3, D: 128, alibi: true, window: 7, sinks: 2 },
  ])('pagedAttention matches contiguous attention per sequence (blockSize=$blockSize lens=$lens)', (c) => {
    const r = rng(77);
    const B = c.lens.length;
    const maxBlocks = Math.max(...c.lens.map((l) => Math.ceil(l / c.blockSize))) + 1;
    const numBlocks = B * maxBlocks + 3;
    const row = c.Hkv * c.D;
    const kCache = randTensor([numBlocks, c.blockSize, c.Hkv, c.D], r), vCache = randTensor([numBlocks, c.blockSize, c.Hkv, c.D], r);
    // Scatter each sequence over shuffled blocks.
    const free = Array.from({ length: numBlocks }, (_, i) => i).sort(() => r() - 0.5);
    const tables = new Int32Array(B * maxBlocks).fill(-1);
    for (let b = 0; b < B; b++) for (let i = 0; i < Math.ceil(c.lens[b]! / c.blockSize); i++) tables[b * maxBlocks + i] = free.pop()!;
    const queryStart = new Int32Array(B + 1);
    for (let b = 0; b < B; b++) queryStart[b + 1] = queryStart[b]! + c.nq[b]!;
    const T = queryStart[B]!;
    const q = randTensor([T, c.Hq, c.D], r);
    const alibi = c.alibi ? getBackend('js').alibiSlopes(c.Hq) : null;
    const out = onPath(p, (be) =>
      be.pagedAttention(q, kCache, vCache,
        { blockTables: new Tensor('i32', [B, maxBlocks], tables), contextLens: Tensor.from('i32', [B], c.lens), queryStart: new Tensor('i32', [B + 1], queryStart) },
        { alibiSlopes: alibi, window: c.window ?? 0, sinks: c.sinks ?? 0 }),
    );
    for (let b = 0; b < B; b++) {
      const len = c.lens[b]!, nq = c.nq[b]!;
      const k = new Float32Array(len * row), v = new Float32Array(len * row);
      for (let t = 0; t < len; t++) {
        const slot = tables[b * maxBlocks + Math.floor(t / c.blockSize)]! * c.blockSize + (t % c.blockSize);
        k.set(kCache.data.subarray(slot * row, (slot + 1) * row), t * row);
        v.set(vCache.data.subarray(slot * row, (slot + 1) * row), t * row);
      }
      const qb = q.data.subarray(queryStart[b]! * c.Hq * c.D, queryStart[b + 1]! * c.Hq * c.D);
      const want = attentionRef(qb, k, v, nq, len, c.Hq, c.Hkv, c.D, {
        scale: 1 / Math.sqrt(c.D), causal: true, qOffset: len - nq, alibi: alibi?.data, window: c.window ?? 0, sinks: c.sinks ?? 0,
      });
      expect(relL2(out.data.subarray(queryStart[b]! * c.Hq * c.D, queryStart[b + 1]! * c.Hq * c.D), want)).toBeLessThan(1e-5);
    }
  });

  it('pagedKvWrite puts rows at their slots and leaves the rest untouched', () => {
    const r = rng(8);
    const kc = randTensor([4, 3, 2, 5], r), vc = randTensor([4, 3, 2, 5], r);
    const k0 = kc.data.slice(), v0 = vc.data.slice();
    const k = randTensor([3, 2, 5], r), v = randTensor([3, 2, 5], r);
    const slots = Tensor.from('i32', [3], [11, 0, 4]);
    onPath(p, (be) => be.pagedKvWrite(kc, vc, k, v, slots));
    const row = 10;
    const wantK = k0.slice(), wantV = v0.slice();
    [11, 0, 4].forEach((s, t) => {
      wantK.set(k.data.subarray(t * row, (t + 1) * row), s * row);
      wantV.set(v.data.subarray(t * row, (t + 1) * row), s * row);
    });
    expect(Array.from(kc.data)).toEqual(Array.from(wantK));
    expect(Array.from(vc.data)).toEqual(Array.from(wantV));
  });
});
