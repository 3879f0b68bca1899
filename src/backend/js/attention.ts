import type { AttentionPlan, PagedAttentionPlan, PagedKvWritePlan } from '../kernels.js';

/** Whether query position qpos sees key position kpos (causal, sliding window, sinks). */
export function visible(qpos: number, kpos: number, causal: boolean, window: number, sinks: number): boolean {
  if (causal && kpos > qpos) return false;
  if (window > 0 && kpos >= sinks && Math.abs(qpos - kpos) >= window) return false;
  return true;
}

/**
 * One query row with an online softmax over keys [0, nKeys): running max m and sum l, the
 * accumulator rescaled when the max grows (Milakov & Gimelshein 2018). keyRow(j) gives the
 * offset of key j's row in k/v.
 */
function attendRow(
  q: Float32Array, qo: number, k: Float32Array, v: Float32Array, o: Float32Array, D: number, nKeys: number,
  qpos: number, scale: number, slope: number, causal: boolean, window: number, sinks: number,
  mask: Float32Array | null, maskOffset: number, acc: Float64Array, keyRow: (j: number) => number,
): void {
  let m = -Infinity, l = 0;
  acc.fill(0);
  const end = causal ? Math.min(nKeys, qpos + 1) : nKeys;
  for (let j = 0; j < end; j++) {
    if (!visible(qpos, j, causal, window, sinks)) continue;
    const ko = keyRow(j);
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
    let s = dot * scale + slope * (j - qpos);
    if (mask) s += mask[maskOffset + j]!;
    if (s === -Infinity) continue;
    const mn = Math.max(m, s);
    const c = Math.exp(m - mn), e = Math.exp(s - mn);
    l = l * c + e;
    m = mn;
    for (let d = 0; d < D; d++) acc[d] = acc[d]! * c + e * v[ko + d]!;
  }
  const inv = l > 0 ? 1 / l : 0;
  for (let d = 0; d < D; d++) o[qo + d] = acc[d]! * inv;
}

export function flashAttention(p: AttentionPlan): void {
  const { q, k, v, o, T, Hq, Hkv, D, S } = p;
  const group = Hq / Hkv, kStride = Hkv * D;
  const acc = new Float64Array(D);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < Hq; h++) {
      const kvOff = Math.floor(h / group) * D;
      attendRow(q, (t * Hq + h) * D, k, v, o, D, S, p.qOffset + t, p.scale, p.alibi ? p.alibi[h]! : 0, p.causal,
        p.window, p.sinks, p.mask, t * S, acc, (j) => j * kStride + kvOff);
    }
}

/** Scores materialised per row, then softmax, then the weighted sum of V. */
export function attentionNaive(p: AttentionPlan): void {
  const { q, k, v, o, T, S, Hq, Hkv, D } = p;
  const group = Hq / Hkv, kStride = Hkv * D;
  const s = new Float64Array(S);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < Hq; h++) {
      const qpos = p.qOffset + t, qo = (t * Hq + h) * D, kvOff = Math.floor(h / group) * D;
      let mx = -Infinity;
      for (let j = 0; j < S; j++) {
        if (!visible(qpos, j, p.causal, p.window, p.sinks)) { s[j] = -Infinity; continue; }
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qo + d]! * k[j * kStride + kvOff + d]!;
        s[j] = dot * p.scale + (p.alibi ? p.alibi[h]! * (j - qpos) : 0) + (p.mask ? p.mask[t * S + j]! : 0);
        mx = Math.max(mx, s[j]!);
      }
      let l = 0;
      for (let d = 0; d < D; d++) o[qo + d] = 0;
      if (mx === -Infinity) continue;
      for (let j = 0; j < S; j++) {
        const e = Math.exp(s[j]! - mx);
        s[j] = e;
        l += e;
      }
      for (let d = 0; d < D; d++) {
        let a = 0;
        for (let j = 0; j < S; j++) if (s[j]! > 0) a += s[j]! * v[j * kStride + kvOff + d]!;
        o[qo + d] = a / l;
      }
    }
}

export function pagedAttention(p: PagedAttentionPlan): void {
  const { q, kCache, vCache, blockTables, contextLens, queryStart, o, B, maxBlocks, blockSize, Hq, Hkv, D } = p;
  const group = Hq / Hkv, row = Hkv * D;
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    const q0 = queryStart[b]!, nq = queryStart[b + 1]! - q0, ctx = contextLens[b]!;
    for (let j = 0; j < nq; j++)
      for (let h = 0; h < Hq; h++) {
        const kvOff = Math.floor(h / group) * D;
        attendRow(q, ((q0 + j) * Hq + h) * D, kCache, vCache, o, D, ctx, ctx - nq + j, p.scale, p.alibi ? p.alibi[h]! : 0,
          true, p.window, p.sinks, null, 0, acc,
          (pos) => (blockTables[b * maxBlocks + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize)) * row + kvOff);
      }
  }
}

export function pagedKvWrite(p: PagedKvWritePlan): void {
  const { kCache, vCache, k, v, slots, T, row } = p;
  for (let t = 0; t < T; t++) {
    kCache.set(k.subarray(t * row, (t + 1) * row), slots[t]! * row);
    vCache.set(v.subarray(t * row, (t + 1) * row), slots[t]! * row);
  }
}
