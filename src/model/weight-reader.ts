/**
 * Reads named weights out of a model file with the checks every loader needs: a missing tensor
 * or a wrong shape is a ModelFileError naming the tensor, norms and biases come back as f32, and
 * progress is reported per tensor. Loaders supply only the lookup.
 */
import { ModelFileError } from '../formats/errors.js';
import { Tensor } from '../tensor/tensor.js';

export type QuantMode = 'packed' | 'f16' | 'f32';

export interface WeightEntry {
  shape: readonly number[];
  /** File name for error messages. */
  file: string;
  load(mode: QuantMode): Tensor;
}

export interface WeightReader {
  /** A matrix of exactly `shape`; null for a missing optional one. */
  get(name: string, shape: number[], optional?: boolean, mode?: QuantMode): Tensor | null;
  /** A vector (norm weight, bias) as f32. */
  vec(name: string, n: number, optional?: boolean): Tensor | null;
}

export function weightReader(
  source: string,
  lookup: (name: string) => WeightEntry | undefined,
  total: number,
  defaultMode: QuantMode,
  onProgress?: (done: number, total: number) => void,
): WeightReader {
  let done = 0;
  const get = (name: string, shape: number[], optional = false, mode: QuantMode = defaultMode): Tensor | null => {
    const e = lookup(name);
    if (!e) {
      if (optional) return null;
      throw new ModelFileError(source, `missing tensor '${name}'`);
    }
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i]))
      throw new ModelFileError(e.file, `tensor '${name}' has shape [${e.shape.join(', ')}], expected [${shape.join(', ')}]`);
    const t = e.load(mode);
    onProgress?.(++done, total);
    return t;
  };
  const vec = (name: string, n: number, optional = false): Tensor | null => {
    const t = get(name, [n], optional, 'f32');
    return t && t.dtype !== 'f32' ? new Tensor('f32', t.shape, t.toFloat32()) : t;
  };
  return { get, vec };
}
