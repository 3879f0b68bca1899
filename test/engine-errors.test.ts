// Errors that must name what went wrong: non-finite logits (a model whose weights hold NaN or Inf,
// written here from stories260K) end sampling, speculative verification, beam search and
// perplexity with NonFiniteLogitsError at the right token position; and the project's error
// classes keep their class and fields across the Engine's worker boundary.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackendUnavailableError, DisposedError, getBackend, GptqFormatError, KvCacheFullError, ModelFileError } from '../src/index.js';
import { CudaUnavailableError } from '../src/backend/cuda/device.js';
import { Engine } from '../src/engine/engine.js';
import { reviveError, serializeError } from '../src/engine/errors.js';
import { ggufMetadataEntries, loadTensor, readGGUF, writeGGUF } from '../src/formats/gguf.js';
import { loadModelFile } from '../src/model/load.js';
import { beamSearch } from '../src/runtime/beam.js';
import { NonFiniteLogitsError } from '../src/runtime/errors.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { ChatTemplateError } from '../src/tokenizer/chat-template.js';
import { greedyAlone, nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const backend = nativeAvailable ? 'cpu' : 'js';
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-nonfinite-'));

let written = 0;
/** stories260K with one tensor changed by `corrupt` (the rest copied exactly), in a new file each time. */
function writeCorrupted(name: string, tensor: string, corrupt: (data: Float32Array, shape: readonly number[]) => void): string {
  const src = readGGUF(STORIES);
  const file = path.join(dir, `${written++}-${name}`);
  expect(src.tensors.some((t) => t.name === tensor)).toBe(true);
  writeGGUF(file, ggufMetadataEntries(src), src.tensors.map((t) => {
    const data = (loadTensor(src, t, 'f32').data as Float32Array).slice();
    if (t.name === tensor) corrupt(data, t.shape);
    return { name: t.name, shape: t.shape, type: 'F32' as const, data };
  }));
  return file;
}

/** Every logit NaN: the final norm's weights are NaN. */
const allNaN = () => writeCorrupted('all-nan.gguf', 'output_norm.weight', (d) => d.fill(Number.NaN));
/** Token t's embedding row is NaN: logits stay finite up to the first position holding t, and are NaN from there on. */
const nanEmbedding = (t: number) => writeCorrupted(`embd-${t}.gguf`, 'token_embd.weight', (d, shape) => d.fill(Number.NaN, t * shape[1]!, (t + 1) * shape[1]!));

const stories = loadModelFile(STORIES, getBackend(backend));
const PROMPT = 'Once upon a time';
const promptIds = stories.tokenizer.encode(PROMPT, { addBos: true });
// The healthy model's greedy continuation: the reference for which position goes bad.
const greedy = greedyAlone(stories.model, promptIds, 12, new Set(stories.tokenizer.eogIds));
// A token first generated at step j >= 2 that the prompt and earlier steps lack.
const j = greedy.findIndex((t, i) => i >= 2 && !promptIds.includes(t) && !greedy.slice(0, i).includes(t));

describe('non-finite logits end the request with NonFiniteLogitsError', () => {
  it('sampling: the error names the position of the first token whose logits are NaN, after the tokens before it', async () => {
    expect(j).toBeGreaterThan(0);
    const engine = await Engine.load(nanEmbedding(greedy[j]!), { backend });
    try {
      const seen: number[] = [];
      let caught: unknown;
      try {
        for await (const d of engine.stream(PROMPT, { temperature: 0, maxTokens: 12 })) if (d.token !== null) seen.push(d.token);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(NonFiniteLogitsError);
      const e = caught as NonFiniteLogitsError;
      // Token greedy[j] sits at position prompt + j; its own logits are the first NaN ones.
      expect(e.position).toBe(promptIds.length + j);
      expect(Number.isNaN(e.value)).toBe(true);
      expect(e.message).toMatch(new RegExp(`non-finite logits \\(NaN\\) at token position ${promptIds.length + j}`));
      expect(seen).toEqual(greedy.slice(0, j + 1));
      // The engine keeps serving: an all-finite request on it completes.
      const ok = await engine.generate([1, 403], { temperature: 0, maxTokens: 1 });
      expect(ok.completionTokens).toBe(1);
    } finally {
      await engine.dispose();
    }
  }, 60_000);

  it('speculative verification: a NaN row among the verified drafts stops at the same position', async () => {
    // The healthy model drafts the greedy continuation, the bad token included, and the tokens
    // after it: the target's NaN row is then one of the rows it verifies in one forward.
    const engine = await Engine.load(nanEmbedding(greedy[j]!), { backend, draftModel: STORIES, draftMax: 8 });
    try {
      const seen: number[] = [];
      const err = await (async () => {
        for await (const d of engine.stream(PROMPT, { temperature: 0, maxTokens: 12 })) if (d.token !== null) seen.push(d.token);
      })().then(() => null, (x: unknown) => x);
      expect(err).toBeInstanceOf(NonFiniteLogitsError);
      expect((err as NonFiniteLogitsError).position).toBe(promptIds.length + j);
      expect(seen).toEqual(greedy.slice(0, j + 1));
    } finally {
      await engine.dispose();
    }
  }, 60_000);

  it('a draft model with NaN logits only costs speed: the output is plain greedy decoding', async () => {
    const engine = await Engine.load(STORIES, { backend, draftModel: allNaN(), draftMax: 4 });
    try {
      const r = await engine.generate(PROMPT, { temperature: 0, maxTokens: 12 });
      expect(r.tokens).toEqual(greedy);
    } finally {
      await engine.dispose();
    }
  }, 60_000);

  it('beam search: every beam is checked', async () => {
    const engine = await Engine.load(allNaN(), { backend });
    try {
      const err = await engine.generate(PROMPT, { beams: 3, maxTokens: 8 }).then(() => null, (x: unknown) => x);
      expect(err).toBeInstanceOf(NonFiniteLogitsError);
      expect((err as NonFiniteLogitsError).position).toBe(promptIds.length - 1);
    } finally {
      await engine.dispose();
    }
    // And beamSearch itself, in this thread.
    const { model } = loadModelFile(allNaN(), getBackend(backend));
    const c = model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 32 });
    cache.add(0);
    expect(() => beamSearch(model, cache, 0, promptIds, { beams: 2, maxTokens: 4 })).toThrow(NonFiniteLogitsError);
    cache.free(0);
    expect(cache.freeBlocks).toBe(32); // nothing leaked by the failed search
  }, 60_000);

  it('perplexity: NaN is an error naming the first scored position whose logits are NaN, not a NaN result', () => {
    const text = stories.tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.', { addBos: true });
    // The first occurrence of a token past the first chunk's scored start (ctx 16: rows 8..14 scored).
    const p = text.findIndex((t, i) => i >= 10 && i < 15 && text.indexOf(t) === i);
    expect(p).toBeGreaterThan(0);
    const file = nanEmbedding(text[p]!);
    const healthy = perplexity(stories.model, text, { ctx: 16, bosId: 1 });
    expect(Number.isFinite(healthy.ppl)).toBe(true);
    const positionOf = (be: 'js' | 'cpu', o: Parameters<typeof perplexity>[2]) => {
      const { model } = loadModelFile(file, getBackend(be));
      try {
        perplexity(model, text, o);
      } catch (err) {
        expect(err).toBeInstanceOf(NonFiniteLogitsError);
        return (err as NonFiniteLogitsError).position;
      }
      throw new Error('perplexity returned on a model with NaN weights');
    };
    // js, the reference backend, is exactly causal: rows before p stay finite.
    expect(positionOf('js', { ctx: 16, bosId: 1 })).toBe(p);
    expect(positionOf('js', { ctx: 16, mode: 'sliding', stride: 8 })).toBe(p);
    // The native prefill attention multiplies hidden (future) keys' V by a zero weight inside a
    // tile, so a NaN V at p can reach the rows just before it: the error then names a row in
    // [first scored row, p].
    if (nativeAvailable) {
      const q = positionOf('cpu', { ctx: 16, bosId: 1 });
      expect(q).toBeGreaterThanOrEqual(8);
      expect(q).toBeLessThanOrEqual(p);
    }
  }, 60_000);
});

describe('errors keep their class and fields across the worker boundary', () => {
  it('ModelFileError from a load in the worker: instanceof and .file', async () => {
    const err = await Engine.load(path.join(root, 'nope.gguf'), { backend }).then(() => null, (x: unknown) => x);
    expect(err).toBeInstanceOf(ModelFileError);
    expect((err as ModelFileError).file).toBe('nope.gguf');
    expect((err as Error).name).toBe('ModelFileError');
    expect((err as Error).message).toMatch(/^nope.gguf: model file not found/); // not prefixed twice
    const notGguf = await Engine.load(path.join(root, 'package.json'), { backend }).then(() => null, (x: unknown) => x);
    expect(notGguf).toBeInstanceOf(ModelFileError);
    expect((notGguf as ModelFileError).file).toBe('package.json');
  });

  it('KvCacheFullError, RangeError and ChatTemplateError from requests', async () => {
    // stories260K: one 16-token block is 5 layers x 4 KV heads x 8 dims x 16 x 2 x 4 bytes = 20480 bytes.
    const engine = await Engine.load(STORIES, { backend, kvCacheBytes: 4 * 20480 });
    try {
      const full = await engine.generate(PROMPT, { beams: 8, maxTokens: 200, ignoreEos: true }).then(() => null, (x: unknown) => x);
      expect(full).toBeInstanceOf(KvCacheFullError);
      expect((full as Error).message).toMatch(/KV cache full/);
      const range = await engine.generate(PROMPT, { temperature: -1 }).then(() => null, (x: unknown) => x);
      expect(range).toBeInstanceOf(RangeError);
      expect((range as Error).message).toMatch(/temperature/);
      const tpl = await engine.generate({ messages: [{ role: 'user', content: 'hi' }], template: '{% for m in messages %}{{ m.content }' }).then(() => null, (x: unknown) => x);
      expect(tpl).toBeInstanceOf(ChatTemplateError);
      expect((tpl as ChatTemplateError).reason).toBe('syntax');
    } finally {
      await engine.dispose();
    }
  }, 60_000);

  it('every project error class survives a structured clone with its own fields; unknown names stay Errors', () => {
    const nf = new NonFiniteLogitsError(17, Number.POSITIVE_INFINITY);
    const cases: [Error, new (...a: never[]) => Error, Record<string, unknown>][] = [
      [new ModelFileError('weights.gguf', 'tensor x is short'), ModelFileError, { file: 'weights.gguf' }],
      [new KvCacheFullError('KV cache full: 3 blocks'), KvCacheFullError, {}],
      [nf, NonFiniteLogitsError, { position: 17, value: Number.POSITIVE_INFINITY }],
      [new ChatTemplateError('steps', 'more than 100000 interpreter steps'), ChatTemplateError, { reason: 'steps' }],
      [new DisposedError('LlamaModel'), DisposedError, {}],
      [new GptqFormatError('bad g_idx'), GptqFormatError, {}],
      [new BackendUnavailableError('no cpu'), BackendUnavailableError, {}],
      [new CudaUnavailableError('no device'), CudaUnavailableError, {}],
      [new RangeError('Expected maxTokens >= 0'), RangeError, {}],
      [new TypeError('Expected a string'), TypeError, {}],
    ];
    for (const [original, cls, fields] of cases) {
      const back = reviveError(structuredClone(serializeError(original)));
      expect(back, original.name).toBeInstanceOf(cls);
      expect(back.name).toBe(original.name);
      expect(back.message).toBe(original.message);
      for (const [k, v] of Object.entries(fields)) expect((back as unknown as Record<string, unknown>)[k], `${original.name}.${k}`).toBe(v);
      expect(back.stack).toContain(original.name);
    }
    // A class the main thread does not know: an Error that keeps the name and plain fields.
    class ShardError extends Error {
      readonly shard = 3;
      readonly nested = { a: 1 }; // not plain: dropped
      constructor() {
        super('shard 3 is missing');
        this.name = 'ShardError';
      }
    }
    const back = reviveError(structuredClone(serializeError(new ShardError())));
    expect(back).toBeInstanceOf(Error);
    expect(back.name).toBe('ShardError');
    expect(back.message).toBe('shard 3 is missing');
    expect((back as unknown as { shard: number }).shard).toBe(3);
    expect('nested' in back).toBe(false);
    // Thrown non-errors become Errors with their text.
    expect(reviveError(serializeError('boom'))).toMatchObject({ name: 'Error', message: 'boom' });
  });
});

describe('a prompt with an id outside the vocabulary', () => {
  it('fails its own request only, not the requests batched with it', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const v = stories.model.config.vocabSize;
      const good = [engine.generate(promptIds, { temperature: 0, maxTokens: 12 }), engine.generate(promptIds, { temperature: 0, maxTokens: 12 })];
      await new Promise((r) => setTimeout(r, 20));
      // Settled into values at once: each rejection is handled when it happens.
      const bad = await Promise.all([[1, v], [1, -4], [1, 2.5]].map((p) => engine.generate(p, { maxTokens: 4 }).then(() => null, (e: Error) => e)));
      for (const [e, id] of [[bad[0], v], [bad[1], -4]] as const) {
        expect(e).toBeInstanceOf(RangeError);
        expect(e!.message).toBe(`Expected token ids in [0, ${v}) in the prompt but received ${id} at index 1`);
      }
      expect(bad[2]).toBeInstanceOf(TypeError);
      expect(bad[2]!.message).toMatch(/Expected a string, an array of token ids/);
      for (const r of await Promise.all(good)) expect(r.tokens).toEqual(greedy.slice(0, r.tokens.length));
    } finally {
      await engine.dispose();
    }
  });
});
