/** `tessera quantize`: GPTQ or RTN quantisation of a Llama model's projections. */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gptqConfigJson, gptqTensors, readGptqConfig } from '../formats/gptq-checkpoint.js';
import { GGUF_MAGIC, GGUF_VALUE, ggufMetadataEntries, loadTensor, readGGUF, writeGGUF } from '../formats/gguf.js';
import { loadSafetensor, openSafetensorsDir, writeSafetensors } from '../formats/safetensors.js';
import type { LinearRole } from '../model/llama.js';
import { quantizeModel, type LinearReport } from '../quant/quantize-model.js';
import { HF_PROJECTIONS, hfArchitecture, hfConfigJson, hfExportProblem, hfGenerationConfig, hfLayout, hfTensors, hfTokenizerFiles } from '../quant/hf-checkpoint.js';
import { Rng } from '../sampling/rng.js';
import { perplexity } from '../runtime/perplexity.js';
import type { GptqBits } from '../tensor/gptq.js';
import { Tensor } from '../tensor/tensor.js';
import { inputFile, MAX_TOKENS, MODEL_OPTIONS, num, openModel, parse } from './common.js';
import { UsageError } from './errors.js';

export const QUANTIZE_HELP = `Usage: tessera quantize -m IN --method gptq|rtn --bits 4|8 [--group-size 128] [--act-order] [--sym]
                        --calib TEXTFILE [--samples N --seq-len L] -o OUT

Quantises the attention and MLP projections of a Llama-family model and writes a GPTQ checkpoint
(AutoGPTQ / GPTQModel layout: qweight, qzeros, scales, g_idx + quantize_config.json) for tessera and
the GPTQ tools. Embeddings, norms and the output head are kept as the source stores them. (Other
loaders expect every projection quantised and both its dimensions, N and K, multiples of 32; the
report says when that is not the case.)

The input is any dense model tessera loads: a Hugging Face directory (its config and tokenizer
files are copied), a GGUF file with F32 / F16 / BF16 weights, or a llama2.c checkpoint (.bin with
tokenizer.bin or tok<vocab>.bin beside it). From a GGUF or llama2.c input the output is a complete
Hugging Face directory: config.json (LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM, with
every hyper-parameter and the quantization_config), generation_config.json, tokenizer.json built
from the vocabulary (SentencePiece "llama" vocabularies as byte-fallback BPE, as transformers'
GGUF converter writes them; "gpt2" byte-level BPE with its merges and the pre-tokenizer regexes of
tokenizer.ggml.pre), tokenizer_config.json (chat template, BOS/EOS/UNK, add_bos_token) and
special_tokens_map.json. A llama GGUF's Q/K rows are un-permuted to Hugging Face's RoPE layout.
Quantised GGUFs (Q8_0, Q4_0) and mixtures of experts are refused.

Methods:
  gptq   Frantar et al. 2022: layer by layer, the calibration text runs through the model (earlier
         layers already quantised), each projection's Hessian 2XX^T/n is accumulated from its
         real inputs, and columns are quantised with error feedback (blocks of 128).
  rtn    Round to nearest on the same grid and groups (the baseline; no calibration needed).

Bits: 4 and 8 run on tessera's integer kernels. 2 and 3 are for experiments: the checkpoint is
written, but tessera evaluates them as dequantised f32 weights ("simulated"), and says so.
A projection whose shape cannot be packed (e.g. K = 172 at 4 bits) stays unquantised; the
report says which and why.

Options:
  -m, --model IN          Hugging Face directory, GGUF file (F32 / F16 / BF16) or llama2.c .bin
      --method M          gptq (default) | rtn
      --bits B            2 | 3 | 4 (default) | 8
      --group-size G      Inputs per group: 32, 64, 128 (default), ... or -1 (per output channel)
      --act-order         Quantise inputs by descending Hessian diagonal (GPTQ; writes g_idx)
      --sym               Symmetric grid (zero point 2^(bits-1)); default asymmetric
      --damp F            Dampening, fraction of the mean Hessian diagonal (default 0.01)
      --calib FILE        Calibration text (needed by gptq)
      --samples N         Calibration windows (default 128)
      --seq-len L         Tokens per window (default 256, at most the model's context)
      --seed S            Window sampling seed (default 0)
      --checkpoint-format gptq (default: v1 zero points, zero - 1 stored) | gptq_v2
      --format F          gptq (default) | gguf: RTN to GGUF Q4_0 (--bits 4) / Q8_0 (--bits 8)
                          from a GGUF input, like llama-quantize (group size 32, symmetric)
      --eval FILE         Report perplexity before and after on this text (chunks of --seq-len)
      --json              Print the per-layer report as JSON on stdout
  -o, --out OUT           Output directory (gptq) or file (gguf)
      --backend B         cpu | js | auto
      --threads N         Native threads
  -h, --help              Show this help
`;

/** Calibration windows: `samples` windows of `len` tokens at seeded random offsets (BOS first). */
export function calibrationWindows(tokens: readonly number[], samples: number, len: number, seed: number, bos: number | null): Int32Array[] {
  if (tokens.length < len) throw new UsageError(`the calibration text has ${tokens.length} tokens, fewer than --seq-len ${len}`);
  const r = new Rng(seed);
  return Array.from({ length: samples }, () => {
    const start = Math.floor(r.next() * (tokens.length - len + 1));
    const w = Int32Array.from(tokens.slice(start, start + len));
    if (bos !== null) w[0] = bos;
    return w;
  });
}

export function quantizeCommand(argv: string[]): void {
  const { values: a } = parse('quantize', argv, {
    ...MODEL_OPTIONS,
    method: { type: 'string' },
    bits: { type: 'string' },
    'group-size': { type: 'string' },
    'act-order': { type: 'boolean' },
    sym: { type: 'boolean' },
    damp: { type: 'string' },
    calib: { type: 'string' },
    samples: { type: 'string' },
    'seq-len': { type: 'string' },
    seed: { type: 'string' },
    'checkpoint-format': { type: 'string' },
    format: { type: 'string' },
    eval: { type: 'string' },
    json: { type: 'boolean' },
    out: { type: 'string', short: 'o' },
  });
  if (a.help) return void process.stdout.write(QUANTIZE_HELP);
  const method = a.method ?? 'gptq';
  if (method !== 'gptq' && method !== 'rtn') throw new UsageError(`--method expects gptq or rtn but received '${method}'`);
  const bits = num(a.bits, 'bits', true, 2, 8) ?? 4;
  if (![2, 3, 4, 8].includes(bits)) throw new UsageError(`--bits expects 2, 3, 4 or 8 but received '${a.bits}'`);
  const groupSize = num(a['group-size'], 'group-size', true, -1, MAX_TOKENS) ?? 128;
  // The integer kernels need every group to start at a multiple of 32 inputs (gptqKernelSupport).
  if (groupSize !== -1 && (groupSize < 32 || groupSize % 32 !== 0))
    throw new UsageError(`--group-size expects -1 (per output channel) or a positive multiple of 32 (32, 64, 128, ...) but received '${a['group-size']}'`);
  const format = a.format ?? 'gptq';
  if (format !== 'gptq' && format !== 'gguf') throw new UsageError(`--format expects gptq or gguf but received '${format}'`);
  const ckfmt = a['checkpoint-format'] ?? 'gptq';
  if (ckfmt !== 'gptq' && ckfmt !== 'gptq_v2') throw new UsageError(`--checkpoint-format expects gptq or gptq_v2 but received '${ckfmt}'`);
  if (!a.out) throw new UsageError('missing -o OUT (see tessera quantize --help)');
  if (!a.model) throw new UsageError('missing -m IN (see tessera quantize --help)');
  if (!existsSync(a.model)) throw new UsageError(`model not found: ${a.model}`);
  const damp = num(a.damp, 'damp', false, 0, 1) ?? 0.01;
  const samples = num(a.samples, 'samples', true, 1, 2 ** 20) ?? 128;
  const seed = num(a.seed, 'seed', true, 0) ?? 0;
  for (const f of [a.calib, a.eval]) if (f !== undefined) inputFile(f, 'text file');

  const outIsDir = existsSync(a.out) && statSync(a.out).isDirectory();
  if (format === 'gguf' && outIsDir) throw new UsageError(`-o is a directory, not a file (--format gguf writes one file): ${a.out}`);
  if (format === 'gptq' && existsSync(a.out) && !outIsDir) throw new UsageError(`-o is a file, not a directory (a GPTQ checkpoint is a directory): ${a.out}`);
  if (format === 'gguf') return ggufRtn(a.model, a.out, bits);
  if (method === 'gptq' && !a.calib) throw new UsageError('--method gptq needs --calib TEXTFILE (calibration text)');
  if (a['act-order'] && method === 'rtn') throw new UsageError('--act-order applies to --method gptq only');
  const isDir = statSync(a.model).isDirectory();
  if (isDir && !existsSync(path.join(a.model, 'config.json'))) throw new UsageError(`${a.model} is a directory without config.json (a Hugging Face model directory has one)`);
  if (isDir && readGptqConfig(a.model)) throw new UsageError(`${a.model} is already GPTQ-quantised; quantise its original weights`);
  if (!isDir) refuseQuantizedGGUF(a.model);

  const loaded = openModel(a, true);
  const { tokenizer } = loaded;
  let model = loaded.model;
  if (!isDir) {
    // GGUF / llama2.c: the checkpoint is written in Hugging Face's layout, so calibrate on it.
    const problem = hfExportProblem(model);
    if (problem) throw new UsageError(`cannot write a Hugging Face GPTQ checkpoint from ${path.basename(a.model)}: ${problem}`);
    model = hfLayout(model);
  }
  const c = model.config;
  const seqLen = num(a['seq-len'], 'seq-len', true, 2, c.contextLength) ?? Math.min(256, c.contextLength);
  const bos = tokenizer.bosId ?? null;
  const evalTokens = a.eval ? tokenizer.encode(readFileSync(a.eval, 'utf8'), { addBos: true }) : null;
  const ppl = () => (evalTokens ? perplexity(model, evalTokens, { ctx: seqLen, bosId: bos }).ppl : null);
  const before = ppl();
  const windows = method === 'gptq' ? calibrationWindows(tokenizer.encode(readFileSync(a.calib!, 'utf8'), { addBos: true }), samples, seqLen, seed, bos) : [];
  const label = `${method} ${bits}-bit ${groupSize === -1 ? 'per-channel' : `g${groupSize}`}${a['act-order'] ? ' act-order' : ''}${a.sym ? ' sym' : ''}`;
  process.stderr.write(`quantizing ${c.layers} layers x 7 projections: ${label}${method === 'gptq' ? `, ${windows.length} x ${seqLen} calibration tokens` : ''}\n`);
  const t0 = performance.now();
  const q = quantizeModel(model, windows, {
    method, bits: bits as GptqBits, groupSize, sym: !!a.sym, actOrder: !!a['act-order'], dampPercent: damp,
    zeroFormat: ckfmt === 'gptq_v2' ? 'v2' : 'v1',
    onLayer: (r, done, total) => process.stderr.write(`[${done}/${total}] ${describeReport(r)}\n`),
  });
  const secs = (performance.now() - t0) / 1e3;
  const after = ppl();

  mkdirSync(a.out, { recursive: true });
  const qcfg = gptqConfigJson({ bits, groupSize, descAct: !!a['act-order'], sym: !!a.sym, zeroFormat: ckfmt === 'gptq_v2' ? 'v2' : 'v1', damp });
  const json = (f: string, v: unknown, indent = 2) => writeFileSync(path.join(a.out!, f), JSON.stringify(v, null, indent) + '\n');
  process.stderr.write(`writing ${path.join(a.out, 'model.safetensors')}\n`);
  let source: string;
  if (isDir) {
    // Quantised projections as GPTQ tensors, everything else copied from the input.
    const src = openSafetensorsDir(a.model);
    const replaced = new Set<string>();
    const tensors: { name: string; tensor: Tensor }[] = [];
    for (const [key, l] of q.layers) {
      const [layer, role] = key.split('.') as [string, LinearRole];
      const prefix = `model.layers.${layer}.${HF_PROJECTIONS[role]}`;
      replaced.add(prefix + '.weight');
      tensors.push(...gptqTensors(prefix, l));
    }
    for (const [name, e] of src) if (!replaced.has(name)) tensors.push({ name, tensor: loadSafetensor(e) });
    tensors.sort((x, y) => (x.name < y.name ? -1 : 1));
    writeSafetensors(path.join(a.out, 'model.safetensors'), tensors, { format: 'pt' });
    const config = JSON.parse(readFileSync(path.join(a.model, 'config.json'), 'utf8')) as Record<string, unknown>;
    config.quantization_config = qcfg;
    json('config.json', config);
    for (const f of ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'])
      if (existsSync(path.join(a.model, f))) writeFileSync(path.join(a.out, f), readFileSync(path.join(a.model, f)));
    source = 'Hugging Face directory';
  } else {
    // A whole Hugging Face directory: config, tokenizer and the unquantised tensors from the model.
    const tied = model.weights.output === model.weights.tokEmbd;
    const tok = hfTokenizerFiles(loaded.gguf ? { gguf: loaded.gguf } : { llama2c: a.model, vocabSize: c.vocabSize }, c.contextLength);
    const s = tok.spec.special;
    writeSafetensors(path.join(a.out, 'model.safetensors'), hfTensors(model, q.layers, tied), { format: 'pt' });
    json('config.json', hfConfigJson(c, { tied, bos: s.bos, eos: s.eos, pad: s.pad, dtype: model.weights.tokEmbd.dtype, float32Source: loaded.gguf !== null, quantizationConfig: qcfg }));
    json('generation_config.json', hfGenerationConfig(tok));
    writeFileSync(path.join(a.out, 'tokenizer.json'), JSON.stringify(tok['tokenizer.json']) + '\n');
    json('tokenizer_config.json', tok['tokenizer_config.json']);
    json('special_tokens_map.json', tok['special_tokens_map.json']);
    source = `${loaded.gguf ? 'GGUF' : 'llama2.c'} ${loaded.model.config.architecture}${loaded.model.config.ropeStyle === 'interleaved' ? ', Q/K rows un-permuted to Hugging Face\'s RoPE layout' : ''}; ${hfArchitecture(c)}, ${tok.spec.kind === 'spm' ? 'SentencePiece' : 'byte-level BPE'} tokenizer.json`;
  }
  json('quantize_config.json', qcfg);

  const skipped = q.report.filter((r) => r.status === 'skipped');
  const simulated = q.report.filter((r) => r.status === 'simulated');
  if (a.json) {
    process.stdout.write(JSON.stringify({ method, bits, groupSize, actOrder: !!a['act-order'], sym: !!a.sym, seconds: secs, pplBefore: before, pplAfter: after, simulated: simulated.length > 0, layers: q.report }, null, 1) + '\n');
  } else {
    process.stdout.write(`wrote ${a.out} (${label}, checkpoint_format ${ckfmt}; from ${source}) in ${secs.toFixed(1)} s: ` +
      `${q.report.length - skipped.length}/${q.report.length} projections quantised\n`);
    for (const r of skipped) process.stdout.write(`  unquantised: layer ${r.layer} ${r.role} [${r.N}x${r.K}]: ${r.reason}\n`);
    // AutoGPTQ / GPTQModel (and transformers and vLLM through them) size qweight as K // 32 * bits rows
    // and qzeros as N // 32 * bits words, so they refuse a projection whose N or K is not a multiple of 32.
    const odd = q.report.filter((r) => r.status !== 'skipped' && (r.N % 32 !== 0 || r.K % 32 !== 0));
    if (odd.length)
      process.stdout.write(`  ${odd.length} projections have N or K not a multiple of 32 (e.g. [${odd[0]!.N}x${odd[0]!.K}]): tessera reads them, but AutoGPTQ / GPTQModel / transformers / vLLM refuse them\n`);
    if (simulated.length) process.stdout.write(`  ${bits}-bit has no packed kernel: tessera evaluates these layers as dequantised f32 weights (simulated quantisation)\n`);
    if (before !== null && after !== null)
      process.stdout.write(`perplexity on ${path.basename(a.eval!)}: ${before.toFixed(4)} before, ${after.toFixed(4)} after${simulated.length ? ' (simulated)' : ''}\n`);
  }
}

export function describeReport(r: LinearReport): string {
  const what = `layer ${r.layer} ${r.role} [${r.N}x${r.K}]`;
  if (r.status === 'skipped') return `${what}: left unquantised (${r.reason})`;
  const loss = r.loss !== undefined ? ` loss ${r.loss.toExponential(3)}` : '';
  const dead = r.deadColumns ? `, ${r.deadColumns} dead inputs` : '';
  return `${what}:${loss}${dead} ${r.status === 'simulated' ? '(simulated: no packed kernel)' : '(packed)'} ${r.seconds.toFixed(2)} s`;
}

/** A GGUF whose weights are already quantised (Q8_0, Q4_0, ...): GPTQ from them would quantise twice. */
function refuseQuantizedGGUF(file: string): void {
  let magic = 0;
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    if (readSync(fd, b, 0, 4, 0) === 4) magic = b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
  if (magic !== GGUF_MAGIC) return; // llama2.c, or an error the loader names
  const t = readGGUF(file).tensors.find((x) => !['F32', 'F16', 'BF16'].includes(x.type));
  if (t)
    throw new UsageError(`${path.basename(file)} is already quantised (tensor '${t.name}' is ${t.type}): GPTQ / RTN from it would quantise twice; ` +
      'quantise the F32 / F16 / BF16 GGUF (or the Hugging Face original), or requantise it with --format gguf');
}

/** RTN to GGUF Q4_0 / Q8_0 (llama-quantize's pure types): every 2-D projection whose K is a multiple of 32 is requantised; embeddings, norms and all metadata are copied. */
function ggufRtn(input: string, out: string, bits: number): void {
  if (bits !== 4 && bits !== 8) throw new UsageError('--format gguf writes Q4_0 (--bits 4) or Q8_0 (--bits 8)');
  if (existsSync(path.join(input, 'config.json'))) throw new UsageError('--format gguf converts a GGUF input; this is a Hugging Face directory');
  const g = readGGUF(input);
  const type = bits === 4 ? 'Q4_0' : 'Q8_0';
  let requant = 0, done = 0;
  const tensors = g.tensors.map((t) => {
    const K = t.shape[t.shape.length - 1]!;
    const q = t.shape.length === 2 && K % 32 === 0 && t.name !== 'token_embd.weight';
    if (q) requant++;
    return {
      name: t.name, shape: t.shape, type: q ? type : t.type === 'F16' || t.type === 'BF16' ? t.type : 'F32',
      load: () => {
        process.stderr.write(`\r[${++done}/${g.tensors.length}] ${t.name}`.padEnd(60));
        const src = loadTensor(g, t, 'f32');
        return q || src.dtype === 'f32' ? src.toFloat32() : (src.data as Uint16Array);
      },
    } as const;
  });
  writeGGUF(out, ggufMetadataEntries(g, { 'general.file_type': { type: GGUF_VALUE.UINT32, value: bits === 4 ? 2 : 7 } }), tensors);
  process.stderr.write('\n');
  process.stdout.write(`wrote ${out}: ${requant} tensors as ${type} (round to nearest), ${g.tensors.length - requant} copied\n`);
}
