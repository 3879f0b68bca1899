/**
 * The acceptance rule of speculative sampling (Leviathan et al. 2023, Chen et al. 2023): a draft
 * token x drawn from q is kept with probability min(1, p(x) / q(x)); otherwise the token is drawn
 * from normalize(max(0, p - q)). The result is distributed exactly as p. A deterministic draft
 * (q = null) is a point mass at x. With a greedy p (one-hot) this keeps x iff it is the argmax.
 */

export interface AcceptRng {
  /** Uniform in [0, 1). */
  random(): number;
  /** A draw from a non-negative, unnormalised distribution. */
  draw(p: Float64Array): number;
}

/** Verifies draft token x against the target distribution p (and the draft's q). */
export function acceptDraftToken(p: Float64Array, q: Float64Array | null, x: number, rng: AcceptRng): { token: number; accepted: boolean } {
  const px = p[x]!;
  const qx = q ? q[x]! : 1;
  if (!(qx > 0)) throw new RangeError(`Expected the draft token ${x} to have positive draft probability`);
  if (px >= qx || rng.random() < px / qx) return { token: x, accepted: true };
  const residual = new Float64Array(p.length);
  let mass = 0;
  for (let i = 0; i < p.length; i++) {
    const r = p[i]! - (q ? q[i]! : i === x ? 1 : 0);
    if (r > 0) (residual[i] = r), (mass += r);
  }
  // mass is 0 only when p == q, where rejection has probability 0 (rounding aside): fall back to p.
  return { token: rng.draw(mass > 0 ? residual : p), accepted: false };
}
