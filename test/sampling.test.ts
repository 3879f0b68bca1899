// Sampler against the definitions: greedy = argmax, the filters (top-k, top-p, min-p) and
// penalties computed by hand, reproducible seeds, and sampling frequencies matching softmax.
import { describe, expect, it } from 'vitest';
import { Sampler } from '../src/sampling/sampler.js';
import { randn, rng } from './helpers.js';

const softmax = (l: number[], t = 1) => {
  const m = Math.max(...l);
  const e = l.map((x) => Math.exp((x - m) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
};

function histogram(s: Sampler, logits: Float32Array, n: number, history: number[] = []) {
  const h = new Array(logits.length).fill(0);
  for (let i = 0; i < n; i++) h[s.sample(logits, history).token]++;
  return h.map((c) => c / n);
}

describe('Sampler', () => {
  it('temperature 0 is argmax (ties to the lower id) with the true logprob', () => {
    const l = Float32Array.of(0.5, 2, -1, 2, 1);
    const r = new Sampler({ temperature: 0 }).sample(l);
    expect(r.token).toBe(1);
    expect(r.logprob).toBeCloseTo(Math.log(softmax(Array.from(l))[1]!), 5);
  });

  it('plain sampling follows softmax(logits / T)', () => {
    const l = Float32Array.of(1, 0, 2, -1, 0.5);
    for (const T of [1, 0.5]) {
      const s = new Sampler({ temperature: T, topK: 0, topP: 1, minP: 0, seed: 5 });
      const h = histogram(s, l, 20000);
      softmax(Array.from(l), T).forEach((p, i) => expect(Math.abs(h[i] - p)).toBeLessThan(0.015));
    }
  });

  it('top-k, top-p and min-p keep exactly the tokens their definitions keep', () => {
    const l = Float32Array.of(3, 2, 1, 0, -1, -2); // p ≈ .634 .233 .086 .032 .012 .004
    const p = softmax(Array.from(l));
    const kept = (o: ConstructorParameters<typeof Sampler>[0]) => histogram(new Sampler({ topK: 0, topP: 1, minP: 0, temperature: 1, seed: 9, ...o }), l, 6000).map((f) => f > 0);
    expect(kept({ topK: 2 })).toEqual([true, true, false, false, false, false]);
    // top-p 0.9: .634 + .233 = .867 < .9, so the third token is needed too
    expect(p[0]! + p[1]! < 0.9 && p[0]! + p[1]! + p[2]! >= 0.9).toBe(true);
    expect(kept({ topP: 0.9 })).toEqual([true, true, true, false, false, false]);
    // min-p 0.1: keep p >= 0.0634 -> first three
    expect(kept({ minP: 0.1 })).toEqual([true, true, true, false, false, false]);
    // renormalised among the kept: top-k 2 gives p0 / (p0 + p1)
    const h = histogram(new Sampler({ topK: 2, topP: 1, minP: 0, temperature: 1, seed: 3 }), l, 20000);
    expect(Math.abs(h[0]! - p[0]! / (p[0]! + p[1]!))).toBeLessThan(0.015);
  });

  it('penalties follow llama.cpp: divide positive / multiply negative, then subtract count and presence', () => {
    const l = Float32Array.of(2, -1, 1.5, 0);
    const s = new Sampler({ temperature: 0, repetitionPenalty: 2, frequencyPenalty: 0.1, presencePenalty: 0.2 });
    // token 0: 2 / 2 - 3 * 0.1 - 0.2 = 0.5; token 2 untouched 1.5 -> argmax 2
    expect(s.sample(l, [0, 0, 0]).token).toBe(2);
    // token 2 seen once: 1.5 / 2 - 0.1 - 0.2 = 0.45 < 0.5 (token 0 seen three times) -> 0
    expect(s.sample(l, [0, 0, 0, 2]).token).toBe(0);
    // outside penaltyLastN the history is forgotten
    const s2 = new Sampler({ temperature: 0, repetitionPenalty: 100, penaltyLastN: 1 });
    expect(s2.sample(l, [0, 2]).token).toBe(0);
  });

  it('the same seed gives the same tokens; another seed differs', () => {
    const r = rng(1);
    const l = randn(1000, r, 2);
    const run = (seed: number) => {
      const s = new Sampler({ seed, temperature: 1 });
      return Array.from({ length: 50 }, () => s.sample(l).token);
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });

  it('rejects bad options naming them', () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow(/temperature >= 0/);
    expect(() => new Sampler({ topP: 1.5 })).toThrow(/topP <= 1/);
    expect(() => new Sampler({ topK: 2.5 })).toThrow(/integer for topK/);
    expect(() => new Sampler({ seed: -1 })).toThrow(/seed/);
  });
});
