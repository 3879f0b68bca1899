/**
 * What each fuzz target does with one input (runs in the child process, fuzz/child.ts). An input
 * is a directory of files. Bad input must end in a thrown Error with a message ('error'); what
 * counts as a failure here: a JavaScript engine error that shows a field was trusted unchecked
 * ('internal': "Cannot read properties of undefined", "Invalid typed array length", Node's
 * ERR_OUT_OF_RANGE, ...), a model that loads and generates although its forward gives NaN/Inf
 * logits instead of failing the request ('nonfinite'), and broken
 * tokenizer invariants ('invariant'). Crashes, hangs and OOM are caught by the parent.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { getBackend, runtimeInfo, setThreads, type Backend } from '../src/backend/index.js';
import { readGGUF } from '../src/formats/gguf.js';
import { readGptqConfig } from '../src/formats/gptq-checkpoint.js';
import { loadSafetensor, openSafetensorsDir, readSafetensorsHeader } from '../src/formats/safetensors.js';
import { readLlama2c, readLlama2cHeader } from '../src/formats/llama2c.js';
import { loadModelFile, type LoadedModel } from '../src/model/load.js';
import { createGenerateJob } from '../src/runtime/generate.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { Scheduler } from '../src/runtime/scheduler.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { Tokenizer } from '../src/tokenizer/index.js';

export type Status = 'ok' | 'error' | 'internal' | 'nonfinite' | 'invariant';
export interface Outcome {
  status: Status;
  message: string;
  stack?: string;
}

class Finding extends Error {
  constructor(readonly status: 'nonfinite' | 'invariant', message: string) {
    super(message);
  }
}

const root = path.resolve(import.meta.dirname, '..');
const FIX = path.join(root, 'test', 'fixtures');

let backend: Backend | null = null;
function theBackend(): Backend {
  if (!backend) {
    const info = runtimeInfo();
    if (process.env.TESSERA_REQUIRE_NATIVE === '1' && !info.native) throw new Error(`TESSERA_REQUIRE_NATIVE=1 but ${info.nativeError}`);
    const want = process.env.TESSERA_FUZZ_BACKEND ?? (info.native ? 'cpu' : 'js');
    backend = getBackend(want as 'cpu' | 'js');
    if (backend.name === 'cpu') setThreads(1); // many children share few cores
  }
  return backend;
}

const INTERNAL = /Cannot (read|set) propert|is not a function|is not iterable|is not a constructor|is not defined|Invalid (typed )?array length|Array buffer allocation failed|Invalid string length|Invalid count value|Maximum call stack size|outside the bounds|Cannot mix BigInt|Cannot convert .* to a BigInt|Invalid atomic access|Invalid DataView/;

/** Clean (an Error with a message the user can act on) or internal (the code trusted a field). */
export function classify(err: unknown, internalIsClean = false): Outcome {
  if (err instanceof Finding) return { status: err.status, message: err.message };
  if (!(err instanceof Error)) return { status: 'internal', message: `threw a non-Error: ${String(err).slice(0, 200)}` };
  const code = (err as { code?: unknown }).code;
  // tessera's own error classes (ModelFileError, ChatTemplateError, ...) are deliberate, whatever they wrap.
  const builtin = ['Error', 'TypeError', 'RangeError', 'ReferenceError', 'SyntaxError'].includes(err.name);
  const internal = !err.message || err instanceof ReferenceError || (builtin && INTERNAL.test(err.message)) ||
    (typeof code === 'string' && code.startsWith('ERR_') && code !== 'ERR_ASSERTION' && !/ENOENT|EISDIR/.test(err.message));
  if (internal && !internalIsClean) return { status: 'internal', message: `${err.name}: ${err.message}`, stack: err.stack };
  return { status: 'error', message: `${err.name}: ${err.message}` };
}

function checkIds(ids: readonly number[], size: number, what: string): void {
  for (const id of ids)
    if (!Number.isInteger(id) || id < 0 || id >= size) throw new Finding('invariant', `${what}: token id ${id} outside the vocabulary [0, ${size})`);
}

/** Encode/decode/stream-decode a few texts; the stream's concatenated output must equal decode(). */
function exerciseTokenizer(tok: Tokenizer, texts: string[], what: string, opts: { parseSpecial?: boolean; addBos?: boolean; addEos?: boolean } = {}): number[] {
  let last: number[] = [];
  for (const text of texts) {
    const ids = tok.encode(text, opts);
    checkIds(ids, tok.vocabSize, `${what} encode`);
    const whole = tok.decode(ids);
    const sd = tok.createStreamDecoder();
    let streamed = '';
    for (const id of ids) streamed += sd.push(id);
    streamed += sd.flush();
    if (streamed !== whole) throw new Finding('invariant', `${what}: stream decoder gave ${JSON.stringify(streamed.slice(0, 80))} but decode() ${JSON.stringify(whole.slice(0, 80))}`);
    for (const id of ids.slice(0, 16)) tok.tokenText(id, { runStart: true });
    last = ids;
  }
  return last;
}

/**
 * A loaded model runs the way the Engine runs it: a short greedy generation through the scheduler.
 * Non-finite logits must end the request with an error (the runtime's NonFiniteLogitsError); a
 * generation that finishes although the raw forward gave NaN/Inf is a 'nonfinite' failure.
 */
function runModel(m: LoadedModel, what: string): void {
  const { model, tokenizer } = m;
  const c = model.config;
  const caches: PagedKvCache[] = [];
  const newCache = () => {
    const kv = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 4, prefixCaching: false });
    caches.push(kv);
    return kv;
  };
  try {
    const prompt = tokenizer.encode('Once upon a time', { addBos: tokenizer.bosId !== undefined }).slice(0, Math.max(1, Math.min(8, c.contextLength - 1)));
    if (!prompt.length) prompt.push(0);
    checkIds(prompt, tokenizer.vocabSize, `${what} prompt`);
    // the raw forward: prefill, then one decode step
    const raw = newCache();
    raw.add(0);
    const l = forwardTokens(model, raw, 0, prompt).data;
    if (l.length !== c.vocabSize) throw new Finding('invariant', `${what}: ${l.length} logits for a vocabulary of ${c.vocabSize}`);
    let bad = firstNonFinite(l);
    if (bad === null && prompt.length < c.contextLength) {
      let t = 0;
      for (let i = 1; i < l.length; i++) if (l[i]! > l[t]!) t = i;
      bad = firstNonFinite(forwardTokens(model, raw, 0, [t]).data);
    }
    // the same through the scheduler, as Engine requests run
    const sched = new Scheduler(model, newCache(), {});
    let failure: Error | null = null;
    const job = createGenerateJob(sched, tokenizer, prompt, { maxTokens: 2, temperature: 0, ignoreEos: true }, {
      onDelta: () => {},
      onDone: () => {},
      onError: (err) => {
        failure = err;
      },
    });
    if (!job.done) sched.submit(job);
    for (let i = 0; sched.pending && i < 16; i++) sched.step();
    if (failure) throw failure;
    if (bad !== null)
      throw new Finding('nonfinite', `${what}: the forward gave non-finite logits (${bad}) but generation finished without an error`);
    if (m.chatTemplate !== null) tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
  } finally {
    for (const kv of caches) kv.dispose();
    model.dispose();
  }
}

function firstNonFinite(a: ArrayLike<number>): number | null {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return a[i]!;
  return null;
}

/** Runs steps in order; an internal error or finding stops at once, clean errors are collected. */
function steps(fns: (() => void)[]): Outcome {
  let clean: Outcome | null = null;
  for (const fn of fns) {
    try {
      fn();
    } catch (err) {
      const o = classify(err);
      if (o.status !== 'error') return o;
      clean ??= o;
    }
  }
  return clean ?? { status: 'ok', message: '' };
}

const TEXTS = ['Once upon a time, there was a little girl.', '', ' ', 'héllo 🙂 <s> <|im_end|>\n\n  x'];

function modelTarget(target: string, file: string, pre: (() => void)[]): Outcome {
  let loaded: LoadedModel | null = null;
  return steps([
    ...pre,
    () => {
      loaded = loadModelFile(file, theBackend());
    },
    () => {
      if (!loaded) return;
      exerciseTokenizer(loaded.tokenizer, TEXTS, 'tokenizer');
      const l = loaded;
      loaded = null;
      runModel(l, target);
    },
  ]);
}

// ---- vocabularies for the tokenize and template targets -----------------------------------------

export const VOCABS = ['llama-spm', 'phi-3', 'gpt-2', 'deepseek-coder', 'mpt', 'starcoder', 'bert-bge', 'qwen3', 'shakespeare', 'tok512'] as const;
const vocabCache = new Map<string, Tokenizer>();

function vocab(name: string): Tokenizer {
  let t = vocabCache.get(name);
  if (t) return t;
  const V = path.join(FIX, 'vocab');
  if (name === 'qwen3') {
    const j = JSON.parse(gunzipSync(readFileSync(path.join(V, 'qwen3-tokenizer.json.gz'))).toString('utf8'));
    t = Tokenizer.fromHuggingFaceJSON(j, JSON.parse(readFileSync(path.join(V, 'qwen3-tokenizer_config.json'), 'utf8')));
  } else if (name === 'shakespeare') t = Tokenizer.fromHuggingFaceJSON(path.join(V, 'shakespeare-tokenizer.json'));
  else if (name === 'tok512') t = Tokenizer.fromLlama2c(path.join(FIX, 'stories260K', 'tok512.bin'), 512);
  else if ((VOCABS as readonly string[]).includes(name)) t = Tokenizer.fromGGUF(readGGUF(path.join(V, `ggml-vocab-${name}.gguf`)));
  else throw new Error(`fuzz input names an unknown vocabulary '${name}'`);
  vocabCache.set(name, t);
  return t;
}

function readInput(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(dir, 'input.json'), 'utf8')) as Record<string, unknown>;
}

// ---- targets ------------------------------------------------------------------------------------

export function execute(target: string, dir: string): Outcome {
  switch (target) {
    case 'gguf': {
      const file = path.join(dir, 'model.gguf');
      return modelTarget(target, file, [
        () => {
          const g = readGGUF(file);
          exerciseTokenizer(Tokenizer.fromGGUF(g), TEXTS, 'tokenizer', { parseSpecial: true });
        },
      ]);
    }
    case 'safetensors':
    case 'gptq':
      return modelTarget(target, dir, [
        () => {
          for (const e of openSafetensorsDir(dir).values()) if (e.byteLength <= 1 << 22) loadSafetensor(e);
        },
        () => {
          const single = path.join(dir, 'model.safetensors');
          if (existsSync(single)) readSafetensorsHeader(single);
        },
        () => void readGptqConfig(dir),
      ]);
    case 'llama2c': {
      const file = path.join(dir, 'model.bin');
      return modelTarget(target, file, [() => void readLlama2c(file), () => void Tokenizer.fromLlama2c(path.join(dir, 'tokenizer.bin'), Math.min(1 << 16, Math.abs(readLlama2cHeader(file).vocabSize)))]);
    }
    case 'tokenizer-json':
      return steps([
        () => {
          const tok = Tokenizer.fromHuggingFaceJSON(path.join(dir, 'tokenizer.json'));
          exerciseTokenizer(tok, TEXTS, 'tokenizer', { parseSpecial: true });
          exerciseTokenizer(tok, TEXTS.slice(0, 1), 'tokenizer', { parseSpecial: false, addBos: false });
          if (tok.chatTemplate !== undefined) tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
        },
      ]);
    case 'tokenize': {
      const inp = readInput(dir);
      return steps([
        () => {
          const tok = vocab(String(inp.vocab));
          exerciseTokenizer(tok, [String(inp.text ?? '')], `tokenize[${String(inp.vocab)}]`, {
            parseSpecial: inp.parseSpecial === true, addBos: inp.addBos as boolean | undefined, addEos: inp.addEos as boolean | undefined,
          });
          if (Array.isArray(inp.ids)) {
            const ids = (inp.ids as number[]).filter((i) => Number.isInteger(i) && i >= 0 && i < tok.vocabSize);
            const whole = tok.decode(ids, { skipSpecial: inp.skipSpecial === true });
            const sd = tok.createStreamDecoder({ skipSpecial: inp.skipSpecial === true });
            let s = '';
            for (const id of ids) s += sd.push(id);
            s += sd.flush();
            if (s !== whole) throw new Finding('invariant', `tokenize[${String(inp.vocab)}]: stream decoder ${JSON.stringify(s.slice(0, 80))} != decode ${JSON.stringify(whole.slice(0, 80))} for ids [${ids.slice(0, 20).join(',')}]`);
          }
        },
      ]);
    }
    case 'template': {
      const inp = readInput(dir);
      // A template that fails to parse or render is the template's fault: every Error is clean here.
      // What the template target looks for is what the parent catches: hangs, OOM, crashes.
      try {
        const tok = vocab(String(inp.vocab ?? 'qwen3'));
        const text = tok.applyChatTemplate(inp.messages as never, {
          template: inp.template as string, addGenerationPrompt: inp.addGenerationPrompt === true, variables: inp.variables as Record<string, unknown>,
        });
        // As the Engine does: text that cannot fit a context (here 4096 tokens) is refused unencoded.
        if (text.length > 4 * 4096 * tok.maxPieceBytes) return { status: 'error', message: `RangeError: ${text.length} characters cannot fit 4096 tokens` };
        const ids = tok.encode(text, { parseSpecial: true });
        checkIds(ids, tok.vocabSize, 'template encode');
        return { status: 'ok', message: '' };
      } catch (err) {
        return classify(err, true);
      }
    }
  }
  throw new Error(`unknown fuzz target '${target}'`);
}

/**
 * Loads what an input needs before its time limit starts: the backend, or `vocab:NAME` (the large
 * vocabularies take seconds to build; an unknown name is left for the input itself to fail on).
 */
export function warm(key: string): void {
  theBackend();
  if (key.startsWith('vocab:') && (VOCABS as readonly string[]).includes(key.slice(6))) vocab(key.slice(6));
}
