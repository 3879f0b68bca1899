/**
 * The fuzz targets, parent side: how each one mutates an input (a bundle of files) and generates
 * fresh valid-but-hostile ones. What a target does with an input is in exec.ts (child side).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { mutateModel, parseGguf, writeGguf } from './formats/gguf.js';
import { llama2cFields, llama2cTokenizerFields } from './formats/llama2c.js';
import { HEADER_LENGTH_FIELD, mutateIndex, mutateSt, parseSafetensors, writeSafetensorsRaw } from './formats/safetensors.js';
import { hostileText, mutateBytes, mutateIntField, mutateJson } from './mutate.js';
import type { Rng } from './rng.js';
import { CHATML, LLAMA2_TEMPLATE, ggufSeed, hfSeed, hfTokenizer, json, llama2cSeed, type Bundle, type HfTokKind, type WType } from './seeds.js';

export interface Target {
  name: string;
  what: string;
  /** One to a few stacked mutations of a corpus input. */
  mutate(b: Bundle, rng: Rng, corpus: Bundle[]): [Bundle, string];
  /** A fresh structurally valid but hostile input. */
  generate(rng: Rng): [Bundle, string];
  /** What the child must load before the input's time limit starts (default: the backend). */
  needs?(b: Bundle): string[];
}

/** The vocabulary an input.json names. */
const vocabNeed = (b: Bundle): string[] => {
  const inp = parseJson(b['input.json']) as { vocab?: unknown } | undefined;
  return [`vocab:${String(inp?.vocab ?? '')}`];
};

const enc = new TextEncoder();
const dec = new TextDecoder();
const parseJson = (b: Uint8Array | undefined): unknown => {
  try {
    return b ? JSON.parse(dec.decode(b)) : undefined;
  } catch {
    return undefined;
  }
};

/** Applies `once` 1-3 times (more rarely up to 6), joining the notes. */
function stacked(b: Bundle, rng: Rng, once: (b: Bundle) => string): [Bundle, string] {
  const out: Bundle = { ...b };
  const n = rng.weighted([[6, 1], [3, 2], [2, 3], [1, 6]] as const);
  const notes: string[] = [];
  for (let i = 0; i < n; i++) notes.push(once(out));
  return [out, notes.join('; ')];
}

function otherFiles(corpus: Bundle[], name: string): Uint8Array[] {
  return corpus.map((c) => c[name] ?? Object.values(c)[0]!).filter(Boolean);
}

// ---- per-file mutators -------------------------------------------------------------------------

function mutateGgufFile(b: Uint8Array, rng: Rng, others: Uint8Array[]): [Uint8Array, string] {
  const p = parseGguf(b);
  const op = rng.weighted<string>([[5, 'model'], [3, 'field'], [2, 'bytes']]);
  if (op === 'model' && p.model) {
    const what = mutateModel(p.model, rng);
    return [writeGguf(p.model), what];
  }
  if (op !== 'bytes' && p.fields.length) {
    const out = new Uint8Array(b);
    return [out, mutateIntField(out, rng.pick(p.fields), rng)];
  }
  return mutateBytes(b, rng, others, [0, p.dataStart]);
}

const REQUIRED_HF = ['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight', 'model.layers.0.self_attn.q_proj.weight',
  'model.layers.0.self_attn.q_proj.qweight', 'model.layers.0.self_attn.q_proj.qzeros', 'model.layers.0.self_attn.q_proj.scales',
  'model.layers.0.self_attn.q_proj.g_idx', 'model.layers.0.self_attn.q_proj.bias', 'model.layers.0.mlp.down_proj.g_idx'];

function mutateStFile(b: Uint8Array, rng: Rng, others: Uint8Array[]): [Uint8Array, string] {
  const m = parseSafetensors(b);
  const op = rng.weighted<string>([[6, 'struct'], [1, 'length'], [2, 'bytes']]);
  if (op === 'struct' && m) {
    const what = mutateSt(m, rng, REQUIRED_HF);
    return [writeSafetensorsRaw(m), what];
  }
  if (op === 'length') {
    const out = new Uint8Array(b);
    return [out, mutateIntField(out, HEADER_LENGTH_FIELD, rng)];
  }
  return mutateBytes(b, rng, others);
}

function mutateJsonFile(b: Uint8Array, rng: Rng, focus?: RegExp): [Uint8Array, string] {
  const j = parseJson(b);
  if (j === undefined || rng.chance(0.08)) return mutateBytes(b, rng);
  const [out, what] = mutateJson(j, rng, focus ? (s) => focus.test(String(s.key)) : undefined);
  return [enc.encode(JSON.stringify(out)), what];
}

const CONFIG_KEYS = /^(architectures|hidden_size|intermediate_size|num_attention_heads|num_key_value_heads|num_hidden_layers|vocab_size|max_position_embeddings|rms_norm_eps|rope_theta|rope_scaling|head_dim|sliding_window|use_sliding_window|tie_word_embeddings|num_local_experts|num_experts_per_tok|quantization_config|bits|group_size|desc_act|sym|checkpoint_format|quant_method)$/;
const TOKENIZER_KEYS = /^(model|vocab|merges|added_tokens|normalizer|pre_tokenizer|decoder|post_processor|type|pattern|Regex|String|content|id|special|byte_fallback|unk_token|ignore_merges|fuse_unk|replacement|prepend_scheme|behavior|single|special_tokens|ids|lstrip|rstrip|normalizers|pretokenizers|decoders|bos_token|eos_token|add_bos_token|add_eos_token|chat_template)$/;

const HOSTILE_REGEX = ['(a+)+$', '(\\s*)*x', '[', '(?<n>a)\\k<n>', '\\p{Foo}', '', '.*', '(?=a)*', '(.*){1,32000}', '\\', 'a{99999999}'];

/** A file of an HF-style directory, mutated by its kind. */
function mutateHfFile(out: Bundle, rng: Rng, corpus: Bundle[], preferred: string[]): string {
  const names = Object.keys(out);
  const pref = names.filter((n) => preferred.some((p) => n.includes(p)));
  const name = rng.chance(0.7) && pref.length ? rng.pick(pref) : rng.pick(names);
  const b = out[name]!;
  let r: [Uint8Array, string];
  if (name.endsWith('.safetensors')) r = mutateStFile(b, rng, otherFiles(corpus, name));
  else if (name === 'model.safetensors.index.json') {
    const j = parseJson(b) as Record<string, unknown> | undefined;
    if (j && typeof j === 'object' && rng.chance(0.8)) r = [json(j), mutateIndex(j, rng, names.filter((n) => n.endsWith('.safetensors')))];
    else r = mutateJsonFile(b, rng);
  } else if (name === 'tokenizer.json' && rng.chance(0.15)) {
    const j = parseJson(b) as Record<string, unknown> | undefined;
    if (j) j.pre_tokenizer = { type: 'Split', pattern: { Regex: rng.pick(HOSTILE_REGEX) }, behavior: rng.pick(['Isolated', 'Removed', 'MergedWithNext', 'Contiguous', 'Bogus']), invert: rng.chance(0.2) };
    r = [json(j ?? {}), 'hostile Split regex'];
  } else r = mutateJsonFile(b, rng, name.startsWith('tokenizer') ? TOKENIZER_KEYS : CONFIG_KEYS);
  if (rng.chance(0.03)) {
    delete out[name];
    return `remove ${name}`;
  }
  out[name] = r[0];
  return `${name}: ${r[1]}`;
}

// ---- templates and messages ---------------------------------------------------------------------

function qwen3Template(): string {
  try {
    const cfg = JSON.parse(readFileSync(path.resolve(import.meta.dirname, '..', 'test', 'fixtures', 'vocab', 'qwen3-tokenizer_config.json'), 'utf8'));
    return typeof cfg.chat_template === 'string' ? cfg.chat_template : CHATML;
  } catch {
    return CHATML;
  }
}

function hostileTemplate(rng: Rng): string {
  const N = () => rng.pick([3, 10, 1000, 100000, 10000000, 1000000000]);
  const frags: (() => string)[] = [
    () => `{% for i in range(${N()}) %}{{ i }}{% endfor %}`,
    () => { const n = N(); return `{% for a in range(${n}) %}{% for b in range(${n}) %}{% for c in range(${n}) %}x{% endfor %}{% endfor %}{% endfor %}`; },
    () => `{{ 'x' * ${N()} }}`,
    () => `{% set s = namespace(v='ab') %}{% for i in range(${rng.pick([8, 30, 64])}) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v|length }}`,
    () => '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
    () => { const n = rng.pick([10, 1000, 20000]); return `{{ ${'('.repeat(n)}1${')'.repeat(n)} }}`; },
    () => { const n = rng.pick([10, 1000, 20000]); return '{% if true %}'.repeat(n) + 'x' + '{% endif %}'.repeat(n); },
    () => `{{ messages * ${N()} }}`,
    () => `{{ range(${N()}) | join(',') }}`,
    () => `{{ (messages|tojson) * ${N()} }}`,
    () => '{% for m in messages %}{% for m2 in messages %}{% for m3 in messages %}{{ m.content ~ m2.content ~ m3.content }}{% endfor %}{% endfor %}{% endfor %}',
    () => "{{ raise_exception('no') }}",
    () => "{{ messages[0]['content'][::-1] }}{{ messages[-1].role|upper }}",
    () => '{{ undefined_var.attr.attr }}{{ messages[999].content }}',
    () => '{{ 1 / 0 }}{{ 10 % 0 }}',
    () => `{{ "${'%s'.repeat(10)}" % messages }}`,
    () => '{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}',
    () => '{% set x = [] %}{% for i in range(100) %}{% set x = x + x + [i] %}{% endfor %}{{ x|length }}',
    () => `{{ messages|map(attribute='content')|join('${'-'.repeat(rng.pick([1, 1000]))}') }}`,
    () => '{%- if messages[0].role == "system" %}{{ messages[0].content|trim }}{% endif -%}',
    () => '{{ bos_token }}{{ eos_token * 3 }}{{ add_generation_prompt }}{{ tools|tojson }}',
    () => '{% for',
    () => '{{',
    () => '{% endfor %}',
    () => '{{ "\\u0000\\ud800" }}',
    () => CHATML,
    () => LLAMA2_TEMPLATE,
    () => qwen3Template(),
  ];
  let t = '';
  const n = rng.range(1, 3);
  for (let i = 0; i < n; i++) t += rng.pick(frags)();
  return t;
}

function hostileMessages(rng: Rng): unknown {
  const one = (): unknown => rng.weighted<() => unknown>([
    [8, () => ({ role: rng.pick(['user', 'assistant', 'system', 'tool', '', 'USER', '<|im_end|>']), content: hostileText(rng) })],
    [1, () => ({ role: 'user', content: 'x'.repeat(rng.pick([1000, 50000])) })],
    [1, () => ({ role: 'user', content: rng.pick([null, 1, ['a'], { a: 1 }]) })],
    [1, () => ({ content: 'no role' })],
    [1, () => rng.pick([null, 'text', 1, []])],
    [1, () => ({ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] })],
  ])();
  return rng.weighted<() => unknown>([
    [8, () => Array.from({ length: rng.range(0, 6) }, one)],
    [1, () => Array.from({ length: rng.pick([100, 3000]) }, () => ({ role: rng.pick(['user', 'assistant']), content: 'hi' }))],
    [1, () => rng.pick([null, 'messages', {}, 7])],
  ])();
}

// ---- targets -------------------------------------------------------------------------------------

const TYPES: WType[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'];

export const TARGETS: Target[] = [
  {
    name: 'gguf',
    what: 'GGUF model files: readGGUF, the GGUF tokenizer, loadModelFile, a forward pass',
    mutate: (b, rng, corpus) => stacked(b, rng, (out) => {
      const [m, what] = mutateGgufFile(out['model.gguf']!, rng, otherFiles(corpus, 'model.gguf'));
      out['model.gguf'] = m;
      return what;
    }),
    generate: (rng) => {
      const experts = rng.chance(0.2) ? rng.pick([2, 4]) : 0;
      const o = {
        type: rng.pick(TYPES), arch: rng.pick(['llama', 'qwen2', 'mistral'] as const), tokenizer: rng.pick(['spm', 'spm-bytes', 'gpt2'] as const),
        shape: { layers: rng.pick([1, 2]), heads: rng.pick([1, 2, 4]), kvHeads: 1, ctx: rng.pick([1, 2, 8, 64]), ...(experts ? { experts, expertsUsed: rng.range(1, experts) } : {}) },
        template: rng.chance(0.3) ? hostileTemplate(rng) : rng.chance(0.5) ? CHATML : undefined, tiedOutput: rng.chance(0.3), alignment: rng.pick([32, 32, 64, 1, 8]),
      };
      const b = ggufSeed(rng, o);
      // and one valid-but-hostile metadata or tensor edit
      const p = parseGguf(b['model.gguf']!);
      const what = rng.chance(0.6) && p.model ? mutateModel(p.model, rng) : 'none';
      if (p.model && what !== 'none') b['model.gguf'] = writeGguf(p.model);
      return [b, `generated ${JSON.stringify({ ...o, template: o.template?.slice(0, 60) })} + ${what}`];
    },
  },
  {
    name: 'safetensors',
    what: 'Hugging Face directories: safetensors (single and sharded with index json), config.json, tokenizer.json; loadModelFile, a forward pass',
    mutate: (b, rng, corpus) => stacked(b, rng, (out) => mutateHfFile(out, rng, corpus, ['.safetensors', 'index.json', 'config.json'])),
    generate: (rng) => {
      const o = { arch: rng.pick(['LlamaForCausalLM', 'Qwen2ForCausalLM', 'MistralForCausalLM'] as const), dtype: rng.pick(['f32', 'f16', 'bf16'] as const),
        tokenizer: rng.pick(['spm-bytefallback', 'bytelevel', 'metaspace', 'split-regex'] as HfTokKind[]), shards: rng.pick([1, 1, 2, 3]), tied: rng.chance(0.4) };
      const b = hfSeed(rng, o);
      const cfg = parseJson(b['config.json']) as Record<string, unknown>;
      const key = rng.pick(['head_dim', 'num_key_value_heads', 'max_position_embeddings', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'sliding_window', 'vocab_size', 'num_hidden_layers', 'intermediate_size']);
      cfg[key] = rng.pick([0, 1, 3, -1, 1e308, 2 ** 31, 0.5, null, { type: 'linear', factor: rng.pick([0, -1, 1e308, 2]) }, { rope_type: 'yarn', factor: 4 }, 'x']);
      b['config.json'] = json(cfg);
      return [b, `generated ${JSON.stringify(o)} + config ${key}=${JSON.stringify(cfg[key])}`];
    },
  },
  {
    name: 'gptq',
    what: 'GPTQ checkpoints (quantization_config / quantize_config.json + qweight/qzeros/scales/g_idx): loadModelFile, a forward pass',
    mutate: (b, rng, corpus) => stacked(b, rng, (out) => mutateHfFile(out, rng, corpus, ['.safetensors', 'config.json'])),
    generate: (rng) => {
      const gptq = { bits: rng.pick([2, 3, 4, 4, 8] as const), groupSize: rng.pick([-1, 8, 16, 32]), sym: rng.chance(0.5), v2: rng.chance(0.3), configFile: rng.chance(0.3) };
      const b = hfSeed(rng, { gptq, tied: rng.chance(0.5), dtype: 'f16' });
      return [b, `generated gptq ${JSON.stringify(gptq)}`];
    },
  },
  {
    name: 'llama2c',
    what: 'llama2.c checkpoints + tokenizer.bin: readLlama2c, loadModelFile, a forward pass',
    mutate: (b, rng, corpus) => stacked(b, rng, (out) => {
      const name = rng.chance(0.7) ? 'model.bin' : 'tokenizer.bin';
      const f = out[name];
      if (!f) return 'nothing';
      const fields = name === 'model.bin' ? llama2cFields(f) : llama2cTokenizerFields(f);
      if (fields.length && rng.chance(0.6)) {
        const c = new Uint8Array(f);
        out[name] = c;
        return `${name}: ${mutateIntField(c, rng.pick(fields), rng)}`;
      }
      if (name === 'model.bin' && rng.chance(0.3) && f.length > 64) {
        const c = new Uint8Array(f);
        const dv = new DataView(c.buffer);
        const at = 28 + 4 * rng.int((c.length - 28) / 4);
        dv.setFloat32(at, rng.pick([NaN, Infinity, -Infinity, 3e38]), true);
        out[name] = c;
        return `model.bin: non-finite weight at ${at}`;
      }
      const [m, what] = mutateBytes(f, rng, otherFiles(corpus, name), [0, 64]);
      out[name] = m;
      return `${name}: ${what}`;
    }),
    generate: (rng) => {
      const b = llama2cSeed(rng, { sharedClassifier: rng.chance(0.5) });
      const c = b['model.bin']!;
      const i = rng.int(7);
      new DataView(c.buffer, c.byteOffset).setInt32(i * 4, rng.pick([0, 1, -1, 3, 2 ** 20, 2 ** 20 + 1, 2 ** 31 - 1, -(2 ** 31), 7]), true);
      return [b, `generated, header field ${i} changed`];
    },
  },
  {
    name: 'tokenizer-json',
    what: 'Hugging Face tokenizer.json (+ tokenizer_config.json): Tokenizer.fromHuggingFaceJSON, encode/decode/stream decode, chat template',
    mutate: (b, rng, corpus) => stacked(b, rng, (out) => mutateHfFile(out, rng, corpus, ['tokenizer.json'])),
    generate: (rng) => {
      const kind = rng.pick(['spm-bytefallback', 'bytelevel', 'metaspace', 'split-regex'] as HfTokKind[]);
      const b = hfTokenizer(kind, rng.chance(0.5) ? hostileTemplate(rng) : undefined);
      const [m, what] = mutateJsonFile(b['tokenizer.json']!, rng, TOKENIZER_KEYS);
      b['tokenizer.json'] = m;
      return [b, `generated ${kind} + ${what}`];
    },
  },
  {
    name: 'tokenize',
    what: 'text to encode (and ids to decode) with the test vocabularies (SPM, BPE, WordPiece; GGUF, tokenizer.json, llama2.c)',
    mutate: (b, rng) => {
      const inp = (parseJson(b['input.json']) ?? {}) as Record<string, unknown>;
      const text = String(inp.text ?? '');
      const op = rng.weighted<string>([[4, 'text'], [1, 'vocab'], [1, 'flags'], [1, 'ids']]);
      if (op === 'text') {
        const i = rng.int(text.length + 1), j = Math.min(text.length, i + rng.int(16));
        inp.text = rng.weighted<() => string>([
          [3, () => text.slice(0, i) + hostileText(rng) + text.slice(j)],
          [1, () => text.slice(0, i) + text.slice(j)],
          [1, () => text + text],
          [1, () => text.slice(0, i) + String.fromCharCode(rng.int(0x10000)) + text.slice(i)],
        ])();
      } else if (op === 'vocab') inp.vocab = rng.pick(VOCAB_NAMES);
      else if (op === 'flags') Object.assign(inp, { parseSpecial: rng.chance(0.5), addBos: rng.pick([true, false, undefined]), addEos: rng.pick([true, false, undefined]) });
      else inp.ids = Array.from({ length: rng.range(0, 40) }, () => rng.chance(0.3) ? rng.int(300) : rng.int(160000));
      return [{ 'input.json': json(inp) }, op];
    },
    generate: (rng) => {
      const inp = { vocab: rng.pick(VOCAB_NAMES), text: hostileText(rng), parseSpecial: rng.chance(0.5), addBos: rng.pick([true, false, undefined]), addEos: rng.pick([false, undefined, true]),
        ids: rng.chance(0.3) ? Array.from({ length: rng.range(1, 30) }, () => rng.int(rng.pick([300, 1000, 160000]))) : undefined, skipSpecial: rng.chance(0.3) };
      return [{ 'input.json': json(inp) }, 'generated'];
    },
    needs: vocabNeed,
  },
  {
    name: 'template',
    what: 'chat templates rendered through Tokenizer.applyChatTemplate (hostile templates: huge range(), nested loops, recursion) and the result encoded',
    mutate: (b, rng) => {
      const inp = (parseJson(b['input.json']) ?? {}) as Record<string, unknown>;
      const op = rng.weighted<string>([[3, 'template'], [2, 'messages'], [1, 'splice'], [1, 'variables']]);
      if (op === 'template') inp.template = hostileTemplate(rng);
      else if (op === 'messages') inp.messages = hostileMessages(rng);
      else if (op === 'splice') {
        const t = String(inp.template ?? '');
        const i = rng.int(t.length + 1);
        inp.template = t.slice(0, i) + hostileTemplate(rng) + t.slice(i + rng.int(20));
      } else inp.variables = rng.pick([{ tools: [{ type: 'function', function: { name: 'f' } }] }, { enable_thinking: false }, { messages: 'override' }, { range: 1 }, null]);
      return [{ 'input.json': json(inp) }, op];
    },
    generate: (rng) => {
      const inp = { vocab: rng.pick(TEMPLATE_VOCABS), template: hostileTemplate(rng), messages: hostileMessages(rng), addGenerationPrompt: rng.chance(0.5) };
      return [{ 'input.json': json(inp) }, `generated ${inp.template.slice(0, 80)}`];
    },
    needs: vocabNeed,
  },
];

// Small vocabularies only: the template target restarts its child after every hang, and qwen3's
// 150k-token vocabulary takes seconds to build.
const TEMPLATE_VOCABS = ['llama-spm', 'phi-3', 'shakespeare'];
const VOCAB_NAMES = ['llama-spm', 'phi-3', 'gpt-2', 'deepseek-coder', 'mpt', 'starcoder', 'bert-bge', 'qwen3', 'shakespeare', 'tok512'];

