/**
 * Writes the seed corpus fuzz/corpus/<target>/<seed>/ (committed; regenerate with
 * `npx tsx fuzz/make-corpus.ts` after changing seeds.ts). Deterministic: fixed PRNG seeds.
 * Kept small (a few hundred KB in all): tiny models written by tessera's own writers.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Rng } from './rng.js';
import { CHATML, LLAMA2_TEMPLATE, ggufSeed, hfSeed, hfTokenizer, json, llama2cSeed, type Bundle } from './seeds.js';

const root = path.resolve(import.meta.dirname, 'corpus');
const rng = new Rng(20261202);

const corpus: Record<string, Record<string, Bundle>> = {
  gguf: {
    'llama-f32-spm-chatml': ggufSeed(rng, { type: 'F32', template: CHATML, tiedOutput: true }),
    'llama-f16-2layers': ggufSeed(rng, { type: 'F16', shape: { layers: 2 }, tiedOutput: true }),
    'llama-q8_0-bytes': ggufSeed(rng, { type: 'Q8_0', tokenizer: 'spm-bytes', tiedOutput: true }),
    'llama-q4_0': ggufSeed(rng, { type: 'Q4_0', tiedOutput: true }),
    'qwen2-bf16-gpt2': ggufSeed(rng, { type: 'BF16', arch: 'qwen2', tokenizer: 'gpt2', template: CHATML, tiedOutput: true }),
    'mixtral-moe-q8_0': ggufSeed(rng, { type: 'Q8_0', shape: { experts: 2, expertsUsed: 2 }, tiedOutput: true }),
    'mistral-align64': ggufSeed(rng, { type: 'F16', arch: 'mistral', alignment: 64, shape: { ctx: 4, heads: 2, kvHeads: 1 }, tiedOutput: true }),
  },
  safetensors: {
    'llama-f32-single': hfSeed(rng, { dtype: 'f32', tied: true }),
    'llama-f16-sharded': hfSeed(rng, { dtype: 'f16', shards: 2, tied: true, tokenizer: 'spm-bytefallback' }),
    'qwen2-bf16-bytelevel': hfSeed(rng, { arch: 'Qwen2ForCausalLM', dtype: 'bf16', tokenizer: 'bytelevel', tied: true }),
  },
  gptq: {
    'gptq-4bit-g16-v1': hfSeed(rng, { dtype: 'f16', tied: true, gptq: { bits: 4, groupSize: 16, sym: false, v2: false } }),
    'gptq-8bit-perchannel-v2': hfSeed(rng, { dtype: 'f16', tied: true, gptq: { bits: 8, groupSize: -1, sym: true, v2: true, configFile: true } }),
    'gptq-3bit-g32': hfSeed(rng, { dtype: 'f16', tied: true, gptq: { bits: 3, groupSize: 32, sym: false, v2: false } }),
  },
  llama2c: {
    'shared-classifier': llama2cSeed(rng, { sharedClassifier: true }),
    'separate-classifier': llama2cSeed(rng, { sharedClassifier: false }),
  },
  'tokenizer-json': {
    'spm-bytefallback': hfTokenizer('spm-bytefallback', LLAMA2_TEMPLATE),
    bytelevel: hfTokenizer('bytelevel', CHATML),
    metaspace: hfTokenizer('metaspace'),
    'split-regex': hfTokenizer('split-regex', CHATML),
  },
  tokenize: {},
  template: {},
};

// tokenize: the llama.cpp test strings (test/fixtures/vocab/*.inp), a few per vocabulary
const VOCAB = path.resolve(import.meta.dirname, '..', 'test', 'fixtures', 'vocab');
const inp = readFileSync(path.join(VOCAB, 'ggml-vocab-llama-spm.gguf.inp'), 'utf8').split('\n__ggml_vocab_test__\n');
const vocabs = ['llama-spm', 'phi-3', 'gpt-2', 'deepseek-coder', 'mpt', 'starcoder', 'bert-bge', 'qwen3', 'shakespeare', 'tok512'];
vocabs.forEach((v, i) => {
  const texts = [inp[(i * 7) % inp.length]!, inp[(i * 7 + 3) % inp.length]!];
  texts.forEach((text, k) => {
    corpus.tokenize![`${v}-${k}`] = { 'input.json': json({ vocab: v, text, parseSpecial: k === 1, ids: k === 1 ? [1, 2, 3, 100, 250] : undefined }) };
  });
});
corpus.tokenize!['qwen3-special'] = { 'input.json': json({ vocab: 'qwen3', text: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n', parseSpecial: true }) };

// template: real templates with ordinary messages, and the hostile shapes the generator builds on
const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }, { role: 'assistant', content: 'Hi.' }, { role: 'user', content: 'Tell me a story.' }];
const qwen3Template = (JSON.parse(readFileSync(path.join(VOCAB, 'qwen3-tokenizer_config.json'), 'utf8')) as { chat_template: string }).chat_template;
Object.assign(corpus.template!, {
  chatml: { 'input.json': json({ vocab: 'phi-3', template: CHATML, messages: msgs, addGenerationPrompt: true }) },
  llama2: { 'input.json': json({ vocab: 'llama-spm', template: LLAMA2_TEMPLATE, messages: msgs.slice(1), addGenerationPrompt: false }) },
  qwen3: { 'input.json': json({ vocab: 'shakespeare', template: qwen3Template, messages: msgs, addGenerationPrompt: true, variables: { enable_thinking: false } }) },
  'range-loop': { 'input.json': json({ vocab: 'llama-spm', template: '{% for i in range(3) %}{{ messages[0].content }}{% endfor %}', messages: msgs }) },
  'nested-loops': { 'input.json': json({ vocab: 'llama-spm', template: '{% for a in messages %}{% for b in messages %}{{ a.role }}{{ b.role }}{% endfor %}{% endfor %}', messages: msgs }) },
});

rmSync(root, { recursive: true, force: true });
let total = 0;
for (const [target, seeds] of Object.entries(corpus))
  for (const [name, bundle] of Object.entries(seeds)) {
    const dir = path.join(root, target, name);
    mkdirSync(dir, { recursive: true });
    for (const [f, data] of Object.entries(bundle)) {
      writeFileSync(path.join(dir, f), data);
      total += data.length;
    }
  }
const count = (d: string): number => readdirSync(d).reduce((n, f) => n + (statSync(path.join(d, f)).isDirectory() ? count(path.join(d, f)) : 1), 0);
console.log(`fuzz corpus: ${count(root)} files, ${(total / 1024).toFixed(0)} KiB in ${path.relative(process.cwd(), root)}`);
