// The GPTQ checkpoints of test/quantize-readback.test.ts, shared with the script that wrote them
// for its Python reference (test/fixtures/hf-export/gptq-export.ts, run by gptq-reference.py).
//
// Each is `tessera quantize --backend js`: the js backend is plain TypeScript (IEEE doubles, no
// native kernels, no threads), so the checkpoint is the same bytes on every machine; the native
// kernels' rounding depends on the CPU's ISA (scalar, AVX2 and AVX-512 builds each pick slightly
// different GPTQ integers), which would tie the reference to one machine.
const root = new URL('../', import.meta.url).pathname;

export interface ReadbackCase {
  name: string;
  /** Source model and calibration text, relative to the repository root. */
  model: string;
  calib: string;
  /** The other `tessera quantize` options. */
  options: string[];
  /** Texts the reference tokenizes and runs. */
  texts: string[];
}

const CALIB = ['--samples', '8', '--seq-len', '64', '--seed', '0', '--backend', 'js'];
const STORIES_TEXTS = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
  'Tom had a big red ball. He said, "Look, Mom! I can throw it so high!" 3 birds sang.',
  'The café had one £2 cake 🎂, and the dog wanted it.',
];
const SHAKESPEARE_TEXTS = [
  'ROMEO:\nWhat light through yonder window breaks?',
  'KING HENRY:\nOnce more unto the breach, dear friends, once more;\nOr close the wall up with our English dead.',
  'First Citizen:\nWe are accounted poor citizens, the patricians good.',
];

export const READBACK_CASES: ReadbackCase[] = [
  {
    // 4-bit asymmetric v1 (stored zero - 1) with act-order: g_idx is a real permutation of groups.
    // gate/up have N = 172 (a padded zero-point word); down (K = 172) cannot pack at 4 bits and stays f32.
    name: 'stories260K-gptq4-g32-act',
    model: 'models/stories260K/stories260K.gguf',
    calib: 'test/fixtures/text/tinystories-valid-head.txt',
    options: ['--method', 'gptq', '--bits', '4', '--group-size', '32', '--act-order', ...CALIB],
    texts: STORIES_TEXTS,
  },
  {
    // 8-bit, GPTQModel's gptq_v2 (zero points stored as they are), act-order; every projection packed.
    name: 'stories260K-gptq8-g32-act-v2',
    model: 'models/stories260K/stories260K.gguf',
    calib: 'test/fixtures/text/tinystories-valid-head.txt',
    options: ['--method', 'gptq', '--bits', '8', '--group-size', '32', '--act-order', '--checkpoint-format', 'gptq_v2', ...CALIB],
    texts: STORIES_TEXTS,
  },
  {
    // Every dimension a multiple of 32: the buffer shapes AutoGPTQ / GPTQModel allocate. 4-bit
    // symmetric v1, group 64, act-order (the common published configuration, smaller groups).
    name: 'shakespeare-draft-gptq4-g64-act-sym',
    model: 'test/fixtures/shakespeare-draft/shakespeare-draft-F32.gguf',
    calib: 'test/fixtures/text/shakespeare-val.txt',
    options: ['--method', 'gptq', '--bits', '4', '--group-size', '64', '--act-order', '--sym', ...CALIB],
    texts: SHAKESPEARE_TEXTS,
  },
];

/** `tessera quantize` arguments of a case writing to `out`. */
export function readbackArgs(c: ReadbackCase, out: string): string[] {
  return ['quantize', '-m', root + c.model, '--calib', root + c.calib, ...c.options, '-o', out];
}
