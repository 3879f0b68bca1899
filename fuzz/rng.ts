/** The fuzzers' deterministic PRNG (mulberry32) and the small helpers every mutator uses. */
export class Rng {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(a: readonly T[]): T {
    if (!a.length) throw new RangeError('Rng.pick: empty array');
    return a[this.int(a.length)]!;
  }
  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((s, c) => s + c[0], 0);
    let x = this.next() * total;
    for (const [w, v] of choices) if ((x -= w) < 0) return v;
    return choices[choices.length - 1]![1];
  }
  /** A new generator seeded from this one. */
  fork(): Rng {
    return new Rng(this.int(2 ** 32));
  }
}

/** Integers that break size and offset arithmetic, for fields of `bytes` width (signed view too). */
export function interestingInts(bytes: 1 | 2 | 4 | 8): bigint[] {
  const bits = BigInt(bytes * 8);
  const max = (1n << bits) - 1n;
  const out = [0n, 1n, 2n, 3n, 7n, 8n, 15n, 16n, 31n, 32n, 33n, 63n, 64n, 127n, 128n, 255n, 256n, 1023n, 1024n, 4096n, 65535n, 65536n];
  out.push(max, max - 1n, max >> 1n, (max >> 1n) + 1n); // -1, -2, INT_MAX, INT_MIN
  if (bytes >= 4) out.push(0x7fffffffn, 0x80000000n, 0xffffffffn, 1n << 24n, 1n << 30n, 1n << 31n);
  if (bytes === 8) out.push(1n << 32n, (1n << 32n) + 1n, 1n << 53n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, 0x7fffffffffffffffn);
  return out.filter((v) => v <= max);
}
