/**
 * AutoGPTQ / GPTQModel checkpoints: the quantisation settings (quantize_config.json, or
 * config.json's "quantization_config") and each quantised projection's tensors
 * (`<prefix>.qweight`, `.qzeros`, `.scales`, `.g_idx`, optional `.bias`).
 *
 * Zero points: checkpoint_format "gptq" (v1, AutoGPTQ, the default when absent) stores
 * zero - 1; "gptq_v2" (GPTQModel) stores the zero point itself. Which one was read is reported
 * (GptqCheckpointConfig.zeroFormat, and `tessera inspect`).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFileError } from './errors.js';
import { loadSafetensor, type SafetensorsEntry } from './safetensors.js';
import { GptqFormatError, validateGptq, zeroWords, type GptqBits, type GptqLinear, type GptqZeroFormat } from '../tensor/gptq.js';
import { Tensor } from '../tensor/tensor.js';
import { parseJson } from './json.js';

export interface GptqCheckpointConfig {
  bits: GptqBits;
  groupSize: number;
  descAct: boolean;
  sym: boolean;
  checkpointFormat: 'gptq' | 'gptq_v2';
  zeroFormat: GptqZeroFormat;
  /** Where the settings came from. */
  source: 'quantize_config.json' | 'config.json';
}

/** The GPTQ settings of a Hugging Face directory, or null if it is not GPTQ-quantised. */
export function readGptqConfig(dir: string): GptqCheckpointConfig | null {
  let raw: Record<string, unknown> | null = null;
  let source: GptqCheckpointConfig['source'] = 'config.json';
  const cfgFile = path.join(dir, 'config.json');
  if (existsSync(cfgFile)) {
    try {
      const j = parseJson(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
      if (j.quantization_config && typeof j.quantization_config === 'object') raw = j.quantization_config as Record<string, unknown>;
    } catch {
      // config.json errors are reported by the config reader
    }
  }
  const qc = path.join(dir, 'quantize_config.json');
  if (!raw && existsSync(qc)) {
    source = 'quantize_config.json';
    try {
      raw = parseJson(readFileSync(qc, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new ModelFileError('quantize_config.json', `not valid JSON (${(err as Error).message})`);
    }
  }
  if (!raw) return null;
  const fail = (m: string): never => {
    throw new ModelFileError(source, m);
  };
  const method = raw.quant_method ?? 'gptq';
  if (method !== 'gptq') fail(`quant_method ${JSON.stringify(method)} is not supported (tessera reads gptq)`);
  const bits = raw.bits;
  if (bits !== 2 && bits !== 3 && bits !== 4 && bits !== 8) fail(`bits ${JSON.stringify(bits)} is not supported (2, 3, 4 or 8)`);
  const gs = raw.group_size ?? -1;
  if (typeof gs !== 'number' || !Number.isInteger(gs) || (gs !== -1 && gs < 1)) fail(`group_size ${JSON.stringify(gs)} must be a positive integer or -1`);
  const fmt = raw.checkpoint_format ?? 'gptq';
  if (fmt !== 'gptq' && fmt !== 'gptq_v2') fail(`checkpoint_format ${JSON.stringify(fmt)} is not supported (gptq or gptq_v2)`);
  return {
    bits: bits as GptqBits, groupSize: gs as number, descAct: raw.desc_act === true, sym: raw.sym !== false,
    checkpointFormat: fmt as 'gptq' | 'gptq_v2', zeroFormat: fmt === 'gptq_v2' ? 'v2' : 'v1', source,
  };
}

/**
 * One quantised projection `<prefix>.*` of shape (N outputs, K inputs), checked against the
 * settings and the expected shape; a missing tensor or any mismatch is a ModelFileError naming it.
 */
export function readGptqLinear(lookup: (name: string) => SafetensorsEntry | undefined, prefix: string, N: number, K: number, cfg: GptqCheckpointConfig): GptqLinear {
  const need = (suffix: string, dtypes: string[]): SafetensorsEntry => {
    const e = lookup(`${prefix}.${suffix}`);
    if (!e) throw new ModelFileError(prefix, `missing tensor '${prefix}.${suffix}' of a GPTQ layer`);
    if (!dtypes.includes(e.dtype)) throw new ModelFileError(path.basename(e.file), `tensor '${e.name}' has dtype ${e.dtype}, expected ${dtypes.join(' or ')}`);
    return e;
  };
  const shapeIs = (e: SafetensorsEntry, want: number[]) => {
    if (e.shape.length !== want.length || e.shape.some((d, i) => d !== want[i]))
      throw new ModelFileError(path.basename(e.file), `tensor '${e.name}' has shape [${e.shape.join(', ')}], expected [${want.join(', ')}]`);
  };
  const { bits } = cfg;
  if ((K * bits) % 32) throw new ModelFileError(prefix, `a [${N}, ${K}] projection cannot be packed at ${bits} bits`);
  const qw = need('qweight', ['I32']);
  shapeIs(qw, [(K * bits) / 32, N]);
  const sc = need('scales', ['F16']);
  if (sc.shape.length !== 2 || sc.shape[1] !== N) throw new ModelFileError(path.basename(sc.file), `tensor '${sc.name}' has shape [${sc.shape.join(', ')}], expected [groups, ${N}]`);
  const G = sc.shape[0]!;
  const qz = need('qzeros', ['I32']);
  shapeIs(qz, [G, zeroWords(N, bits)]);
  const gi = lookup(`${prefix}.g_idx`);
  if (gi) {
    if (gi.dtype !== 'I32') throw new ModelFileError(path.basename(gi.file), `tensor '${gi.name}' has dtype ${gi.dtype}, expected I32`);
    shapeIs(gi, [K]);
  }
  const b = lookup(`${prefix}.bias`);
  let bias: Float32Array | null = null;
  if (b) {
    shapeIs(b, [N]);
    const t = loadSafetensor(b);
    if (!['f32', 'f16', 'bf16'].includes(t.dtype)) throw new ModelFileError(path.basename(b.file), `tensor '${b.name}' has dtype ${b.dtype}`);
    bias = t.toFloat32();
  }
  const layer: GptqLinear = {
    bits, groupSize: cfg.groupSize, K, N,
    qweight: loadSafetensor(qw).data as Int32Array,
    qzeros: loadSafetensor(qz).data as Int32Array,
    scales: loadSafetensor(sc).data as Uint16Array,
    gIdx: gi ? (loadSafetensor(gi).data as Int32Array) : null,
    zeroFormat: cfg.zeroFormat, bias,
  };
  try {
    validateGptq(layer, prefix);
  } catch (err) {
    if (err instanceof GptqFormatError) throw new ModelFileError(prefix, err.message);
    throw err;
  }
  return layer;
}

/** The tensors of a quantised projection as a checkpoint stores them (AutoGPTQ names and dtypes). */
export function gptqTensors(prefix: string, l: GptqLinear): { name: string; tensor: Tensor }[] {
  const { K, N, bits } = l;
  const G = l.scales.length / N;
  const gIdx = l.gIdx ?? Int32Array.from({ length: K }, (_, k) => Math.floor(k / (l.groupSize === -1 ? K : l.groupSize)));
  const out: { name: string; tensor: Tensor }[] = [
    { name: `${prefix}.qweight`, tensor: new Tensor('i32', [(K * bits) / 32, N], l.qweight) },
    { name: `${prefix}.qzeros`, tensor: new Tensor('i32', [G, zeroWords(N, bits)], l.qzeros) },
    { name: `${prefix}.scales`, tensor: new Tensor('f16', [G, N], l.scales) },
    { name: `${prefix}.g_idx`, tensor: new Tensor('i32', [K], gIdx) },
  ];
  if (l.bias) out.push({ name: `${prefix}.bias`, tensor: Tensor.from('f16', [N], l.bias) });
  return out;
}

/** quantization_config / quantize_config.json contents for a checkpoint tessera writes. */
export function gptqConfigJson(o: { bits: number; groupSize: number; descAct: boolean; sym: boolean; zeroFormat: GptqZeroFormat; damp: number }): Record<string, unknown> {
  return {
    quant_method: 'gptq', bits: o.bits, group_size: o.groupSize, desc_act: o.descAct, sym: o.sym, damp_percent: o.damp,
    true_sequential: true, static_groups: false, checkpoint_format: o.zeroFormat === 'v2' ? 'gptq_v2' : 'gptq',
    quantizer: 'tessera',
  };
}
