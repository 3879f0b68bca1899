/**
 * Non-finite logits: a model whose forward gives NaN or ±Inf (corrupted or overflowing weights)
 * cannot be sampled, scored or searched; the request ends with this error instead of a token
 * picked from garbage.
 */
export class NonFiniteLogitsError extends Error {
  /** Position in the sequence (0-based, prompt included) of the token whose logits are non-finite. */
  readonly position: number;
  /** The first non-finite value found (NaN, Infinity or -Infinity). */
  readonly value: number;
  constructor(position: number, value: number, what = 'the model') {
    super(`${what} produced non-finite logits (${value}) at token position ${position}; the weights may be corrupted`);
    this.name = 'NonFiniteLogitsError';
    this.position = position;
    this.value = value;
  }
}

/**
 * Throws NonFiniteLogitsError unless every value of `row` (the logits of the token at `position`)
 * is finite. One branch-free pass: the sum of f32 values cannot overflow a double, so it is
 * finite exactly when every value is; the row is scanned again only to name the bad value.
 */
export function checkFiniteLogits(row: Float32Array, position: number, what?: string): void {
  let s = 0;
  for (let i = 0; i < row.length; i++) s += row[i]!;
  if (Number.isFinite(s)) return;
  throw new NonFiniteLogitsError(position, row.find((v) => !Number.isFinite(v)) ?? s, what);
}
