// The Llama runtime on stories260K: published greedy text, .gguf vs llama2.c .bin logits,
// perplexity vs llama.cpp under the same convention (its result recorded in
// test/fixtures/llamacpp/runtime.json; live too when the peer is installed), the KV cache's
// bookkeeping, and the Engine's async behaviour (event loop, abort, stop strings, dispose).
// No timings here: bench/event-loop.ts measures how long the event loop stalls.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { Engine } from '../src/engine/engine.js';
import { readLlama2c } from '../src/formats/llama2c.js';
import { readGGUF } from '../src/formats/gguf.js';
import { LlamaModel } from '../src/model/llama.js';
import { llamaFromLlama2c } from '../src/model/load-llama2c.js';
import { loadModelFile } from '../src/model/load.js';
import { KvCacheFullError, PagedKvCache } from '../src/runtime/kv/cache.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { DisposedError } from '../src/tensor/tensor.js';
import { nativeAvailable, relL2 } from './helpers.js';
import { readFileSync } from 'node:fs';
import { forwardTokens } from '../src/runtime/runner.js';
import { LlamaCppReference, needsLlamaCpp, recording, tokensSha256, useLlamaCpp } from './llamacpp-peer.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const FIX = path.join(root, 'test/fixtures/stories260K');
const backend = nativeAvailable ? 'cpu' : 'js';

// llama2.c doc/stories260K.md: greedy continuation of BOS + "Once upon a time".
const PUBLISHED =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

describe('stories260K', () => {
  it('greedy decoding reproduces the published continuation', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const prompt = 'Once upon a time';
      const r = await engine.generate(prompt, { temperature: 0, maxTokens: 60 });
      expect(prompt + r.text).toContain(PUBLISHED);
      expect(r.promptTokens).toBe(5);
    } finally {
      await engine.dispose();
    }
  });

  it('the .gguf and the llama2.c .bin give the same logits', () => {
    const tokens = Int32Array.from([1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368]);
    const run = (m: LlamaModel) => {
      const c = m.config;
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8 });
      cache.add(0);
      return forwardTokens(m, cache, 0, tokens, { allLogits: true }).data;
    };
    const fromGguf = loadModelFile(STORIES, getBackend(backend)).model;
    const { config, weights } = llamaFromLlama2c(readLlama2c(path.join(FIX, 'stories260K.bin')));
    const fromBin = new LlamaModel(config, weights, getBackend(backend));
    expect(relL2(run(fromBin), run(fromGguf))).toBeLessThan(1e-6);
    fromBin.dispose();
    fromBin.dispose(); // safe twice
    expect(() => run(fromBin)).toThrow(/LlamaModel has been disposed/);
  });
});

describe('paged KV cache', () => {
  it('allocates blocks as sequences grow, frees them, and refuses to overflow', () => {
    const c = new PagedKvCache({ layers: 2, kvHeads: 2, headDim: 4, blockSize: 4, numBlocks: 5 });
    c.add(1);
    c.add(2);
    const s1 = c.append(1, 6); // 2 blocks
    expect(s1.length).toBe(6);
    expect(new Set(Array.from(s1, (s) => Math.floor(s / 4))).size).toBe(2);
    expect(c.freeBlocks).toBe(3);
    c.append(2, 9); // 3 blocks
    expect(c.freeBlocks).toBe(0);
    expect(() => c.append(1, 3)).toThrow(KvCacheFullError);
    expect(c.length(1)).toBe(6); // unchanged after the refusal
    const more = c.append(1, 2); // fits in its partly used block
    expect(Array.from(more, (s) => Math.floor(s / 4))).toEqual([Math.floor(s1[5]! / 4), Math.floor(s1[5]! / 4)]);
    c.truncate(2, 4);
    expect(c.freeBlocks).toBe(2);
    c.free(1);
    expect(c.freeBlocks).toBe(4);
    expect(c.blocks.blockTable(2).length).toBe(1);
    expect(() => c.append(7, 1)).toThrow(/Unknown sequence 7/);
    expect(() => c.add(2)).toThrow(/already exists/);
  });

  it('a long generation that outgrows the cache ends with a clear error, not corruption', () => {
    const { model } = loadModelFile(STORIES, getBackend(backend));
    const c = model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, blockSize: 16, numBlocks: 2 });
    cache.add(0);
    expect(() => forwardTokens(model, cache, 0, new Int32Array(40).fill(5))).toThrow(KvCacheFullError);
  });
});

describe('perplexity', () => {
  const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8');

  // llama-perplexity's convention: 128-token chunks starting with BOS, the second half scored.
  const llamaCpp = useLlamaCpp();
  const reference = new LlamaCppReference('runtime');
  const CASE = 'perplexity stories260K tinystories-valid-head ctx 128';
  const ctx = 128;
  let ours: { tokens: number[]; ppl: number; scoredTokens: number } | null = null;
  const oursOnce = () => {
    if (!ours) {
      const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
      const tokens = tokenizer.encode(text, { addBos: true });
      ours = { tokens, ...perplexity(model, tokens, { ctx, bosId: 1 }) };
    }
    return ours;
  };

  // Live first: while recording (npm run peer:fixtures) it writes what the next test reads.
  it('matches llama.cpp (live) under the llama-perplexity convention within 0.5%', async (t) => {
    needsLlamaCpp(t);
    const o = oursOnce();
    const theirs = await llamaCpp.perplexity(STORIES, o.tokens, ctx, 1);
    expect(o.scoredTokens).toBe(theirs.scoredTokens);
    expect(Math.abs(o.ppl - theirs.ppl) / theirs.ppl).toBeLessThan(0.005);
    reference.recordValues(CASE, STORIES, { tokensSha256: tokensSha256(o.tokens), tokens: o.tokens.length, ...theirs });
    if (!recording) expect(Math.abs((reference.values(CASE, STORIES).ppl as number) - theirs.ppl) / theirs.ppl).toBeLessThan(1e-4);
  }, 120_000);

  it('matches llama.cpp (recorded) under the llama-perplexity convention within 0.5%', () => {
    const o = oursOnce();
    const rec = reference.values(CASE, STORIES);
    // The same tokens llama.cpp scored (our tokenizer's output on the text).
    expect(tokensSha256(o.tokens), 'the text tokenizes differently from when llama.cpp scored it').toBe(rec.tokensSha256);
    expect(o.scoredTokens).toBe(rec.scoredTokens);
    expect(Math.abs(o.ppl - (rec.ppl as number)) / (rec.ppl as number)).toBeLessThan(0.005);
  });

  it('sliding-window mode scores every token after the first exactly once', () => {
    const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
    const tokens = tokenizer.encode(text.slice(0, 1500), { addBos: true });
    const r = perplexity(model, tokens, { mode: 'sliding', ctx: 64, stride: 32 });
    expect(r.scoredTokens).toBe(tokens.length - 1);
    expect(r.windows).toBe(slidingReference(model, tokens, 64, 32).windows);
    // With stride = ctx there is no overlap: the same as scoring each window from its start.
    const whole = perplexity(model, tokens.slice(0, 64), { mode: 'sliding', ctx: 64 });
    expect(whole.scoredTokens).toBe(63);
    expect(whole.ppl).toBeGreaterThan(1);
    expect(() => perplexity(model, tokens.slice(0, 10), { ctx: 64 })).toThrow(/at least ctx = 64 tokens/);
  });
});

/**
 * Hugging Face's strided perplexity, naively: windows [begin, begin + ctx) every `stride` tokens,
 * each run from an empty cache (teacher forcing, all logits); a window scores only the targets
 * past the previous window's end, with everything before them in the window as context. Log-softmax
 * in double. `keepContext` false drops the overlap (each window starts at its first target's
 * predecessor): what a strided evaluation that lost its context would compute.
 */
function slidingReference(model: LlamaModel, tokens: number[], ctx: number, stride: number, keepContext = true) {
  const c = model.config, V = c.vocabSize;
  let nll = 0, n = 0, windows = 0, prevEnd = 0;
  for (let begin = 0; begin < tokens.length; begin += stride) {
    const end = Math.min(begin + ctx, tokens.length);
    const from = Math.max(prevEnd, 1); // first target position; token 0 is never one
    const start = keepContext ? begin : from - 1;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(ctx / 16) + 2 });
    cache.add(0);
    const logits = forwardTokens(model, cache, 0, Int32Array.from(tokens.slice(start, end)), { allLogits: true }).data;
    cache.dispose();
    for (let t = from; t < end; t++) {
      const row = logits.subarray((t - 1 - start) * V, (t - start) * V);
      let m = -Infinity;
      for (const x of row) m = Math.max(m, x);
      let z = 0;
      for (const x of row) z += Math.exp(x - m);
      nll -= row[tokens[t]!]! - m - Math.log(z);
      n++;
    }
    windows++;
    prevEnd = end;
    if (end === tokens.length) break;
  }
  return { ppl: Math.exp(nll / n), scoredTokens: n, windows };
}

describe('sliding-window perplexity against a naive strided evaluation', () => {
  it('every window keeps its overlapping context; only the new tail is scored', () => {
    const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
    const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8');
    const tokens = tokenizer.encode(text.slice(0, 1500), { addBos: true });
    for (const [ctx, stride] of [[64, 32], [48, 16], [40, 39]] as const) {
      const ours = perplexity(model, tokens, { mode: 'sliding', ctx, stride });
      const ref = slidingReference(model, tokens, ctx, stride);
      expect(ours.scoredTokens).toBe(ref.scoredTokens);
      expect(Math.abs(ours.ppl - ref.ppl) / ref.ppl, `ctx ${ctx} stride ${stride}`).toBeLessThan(1e-5);
      if (ctx - stride > 1) {
        // The overlap matters here: losing it would move the result far past the tolerance.
        const lost = slidingReference(model, tokens, ctx, stride, false);
        expect(Math.abs(lost.ppl - ref.ppl) / ref.ppl).toBeGreaterThan(1e-3);
      }
    }
    // A window must hold its first target's predecessor: stride = ctx would leave it out.
    expect(() => perplexity(model, tokens, { mode: 'sliding', ctx: 40, stride: 40 })).toThrow(/Expected options.stride in \[1, 39\] but received 40/);
  });
});

describe('Engine', () => {
  it('keeps the event loop ticking while a model loads and generates (the model runs off this thread)', async () => {
    // Behaviour, not a time budget: a timer on this thread fires while the load is pending, and
    // between the first and the last token of a generation a timer fires and a chain of this
    // thread's own async work makes progress. (How long the loop stalls: npm run bench:event-loop.)
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const engine = await Engine.load(STORIES, { backend });
      expect(ticks).toBeGreaterThan(0); // while the load was pending
      try {
        let hops = 0, generating = true;
        const chain = (async () => {
          while (generating) {
            await new Promise((r) => setTimeout(r, 0));
            hops++;
          }
        })();
        const ticksAt: number[] = [], hopsAt: number[] = [];
        const it = engine.stream('Once upon a time', { maxTokens: 200, ignoreEos: true, temperature: 0.8, seed: 1 });
        let r;
        while (!(r = await it.next()).done) {
          if (r.value.token === null) continue;
          ticksAt.push(ticks);
          hopsAt.push(hops);
        }
        generating = false;
        await chain;
        expect(r.value.completionTokens).toBe(200);
        expect(ticksAt[ticksAt.length - 1]! - ticksAt[0]!).toBeGreaterThan(0); // timers fired between tokens
        expect(hopsAt[hopsAt.length - 1]! - hopsAt[0]!).toBeGreaterThan(0); // this thread's work progressed mid-generation
      } finally {
        await engine.dispose();
      }
    } finally {
      clearInterval(timer);
    }
  });

  it('streams deltas that add up to the result, honours stop strings, seeds and abort', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      let text = '';
      const it = engine.stream('Once upon a time', { temperature: 0, maxTokens: 40 });
      let r;
      while (!(r = await it.next()).done) text += r.value.text;
      expect(text).toBe(r.value.text);
      expect(r.value.tokens.length).toBe(r.value.completionTokens);

      const stopped = await engine.generate('Once upon a time', { temperature: 0, maxTokens: 60, stop: ['Lily'] });
      expect(stopped.text).toBe(', there was a little girl named ');
      expect(stopped.finishReason).toBe('stop');

      const a = await engine.generate('One day', { temperature: 1, seed: 42, maxTokens: 30 });
      const b = await engine.generate('One day', { temperature: 1, seed: 42, maxTokens: 30 });
      expect(b.tokens).toEqual(a.tokens);

      const ac = new AbortController();
      let n = 0;
      const s = engine.stream('Once upon a time', { maxTokens: 500, ignoreEos: true, signal: ac.signal });
      let last;
      while (!(last = await s.next()).done) if (++n === 5) ac.abort();
      expect(last.value.finishReason).toBe('abort');
      expect(last.value.completionTokens).toBeLessThan(500);

      await expect(engine.generate('x', { temperature: -1 })).rejects.toThrow(/temperature/);
    } finally {
      await engine.dispose();
      await engine.dispose(); // safe twice
    }
    await expect(engine.generate('x')).rejects.toThrow(DisposedError);
  });

  it('a request aborted while queued behind another finishes as aborted without running', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      // A long first request, running (its first delta has arrived) while the others queue.
      const first = engine.stream('Once upon a time', { maxTokens: 500, ignoreEos: true, temperature: 0 });
      await first.next();
      // Two requests queue behind it (sampling and beam search) and are aborted while waiting.
      const acs = [new AbortController(), new AbortController()];
      const queued = [undefined, 4].map((beams, i) => engine.generate('One day', { maxTokens: 50, beams, signal: acs[i]!.signal }));
      for (const ac of acs) ac.abort();
      for (const [i, q] of queued.entries()) {
        const r = await q;
        expect(r.finishReason).toBe('abort');
        expect(r.completionTokens).toBe(0);
        expect(r.promptTokens, `request ${i}`).toBe(0); // never tokenized or prefilled
        expect(Object.keys(r).sort()).toEqual(['completionTokens', 'finishReason', 'logprobs', 'promptTokens', 'text', 'tokens']);
      }
      let done;
      while (!(done = await first.next()).done);
      expect(done.value.completionTokens).toBe(500);
    } finally {
      await engine.dispose();
    }
  });

  it('rejects a missing or invalid model file with a clear error', async () => {
    await expect(Engine.load(path.join(root, 'nope.gguf'))).rejects.toThrow(/nope.gguf: model file not found/);
    await expect(Engine.load(path.join(root, 'package.json'))).rejects.toThrow(/package.json: not a GGUF file/);
  });
});

describe('GGUF reader on real files', () => {
  it('reads the stories260K metadata', () => {
    const g = readGGUF(STORIES);
    expect(g.metadata.get('general.architecture')).toBe('llama');
    expect(g.tensors.find((t) => t.name === 'token_embd.weight')!.shape).toEqual([512, 64]);
  });
});

describe('other model formats', () => {
  const DRAFT = path.join(root, 'test/fixtures/shakespeare-draft');

  it('a Hugging Face directory (NeoX RoPE, unpermuted) and its GGUF (permuted Q/K) give the same logits', () => {
    const hf = loadModelFile(path.join(DRAFT, 'hf'), getBackend(backend));
    const gg = loadModelFile(path.join(DRAFT, 'shakespeare-draft-F32.gguf'), getBackend(backend));
    const text = 'ROMEO:\nBut soft, what light through yonder window breaks?';
    const ids = hf.tokenizer.encode(text, { addBos: true });
    expect(gg.tokenizer.encode(text, { addBos: true })).toEqual(ids);
    const run = (m: LlamaModel) => {
      const c = m.config;
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8 });
      cache.add(0);
      return forwardTokens(m, cache, 0, Int32Array.from(ids), { allLogits: true }).data;
    };
    expect(hf.model.config.ropeStyle).toBe('neox');
    expect(gg.model.config.ropeStyle).toBe('interleaved');
    expect(relL2(run(hf.model), run(gg.model))).toBeLessThan(1e-5);
  });

  it('llama2.c tokenizer.bin tokenizes like the GGUF vocabulary', () => {
    const bin = loadModelFile(path.join(FIX, 'stories260K.bin'), getBackend(backend));
    const gg = loadModelFile(STORIES, getBackend(backend));
    const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').slice(0, 3000);
    expect(bin.tokenizer.encode(text, { addBos: true })).toEqual(gg.tokenizer.encode(text, { addBos: true }));
  });

  it('bad directories and checkpoints get clear errors', () => {
    expect(() => loadModelFile(path.join(root, 'test'), getBackend('js'))).toThrow(/test: no config.json in the directory/);
    expect(() => loadModelFile(path.join(root, 'package.json'), getBackend('js'))).toThrow(/package.json: not a GGUF file/);
    expect(() => loadModelFile(path.join(root, 'test/fixtures/stories260K/tok512.bin'), getBackend('js'))).toThrow(/tok512.bin: /);
  });
});

describe('Engine chat', () => {
  it('renders messages with a template and rejects malformed prompts', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const tpl = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
      const it = engine.chat([{ role: 'user', content: 'Once upon a time' }], { template: tpl, temperature: 0, maxTokens: 12 });
      let r;
      while (!(r = await it.next()).done);
      const direct = await engine.generate('Once upon a time', { temperature: 0, maxTokens: 12 });
      expect(r.value.text).toBe(direct.text); // "<s>" from the template is BOS itself, not added twice
      expect(r.value.promptTokens).toBe(direct.promptTokens);
      await expect(engine.generate({ messages: [{ role: 'user' }] } as never)).rejects.toThrow(/Expected a string, an array of token ids or \{ messages/);
    } finally {
      await engine.dispose();
    }
    // The bundled GGUF carries a chat template; the F16 fixture is the published file, without one.
    const bare = await Engine.load(path.join(FIX, 'stories260K-F16.gguf'), { backend });
    try {
      await expect(bare.generate({ messages: [{ role: 'user', content: 'hi' }] })).rejects.toThrow(/chat template/);
    } finally {
      await bare.dispose();
    }
  });
});

describe('sliding-window attention from model metadata (Mistral)', () => {
  it('with one layer, the last token under window W sees exactly the last W tokens (RoPE is relative)', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { writeGGUF, loadTensor: lt, GGUF_VALUE } = await import('../src/formats/gguf.js');
    const { llamaGGUFMetadata, spmVocabOf } = await import('../src/formats/llama-gguf.js');
    const { llamaConfigFromGGUF, llamaWeightsFromGGUF } = await import('../src/model/load-gguf.js');
    const src = readGGUF(STORIES);
    const dir = mkdtempSync(path.join((tmpdir as () => string)(), 'tessera-swa-'));
    const W = 6;
    const file = path.join(dir, 'swa.gguf');
    // stories260K's first layer alone, with a sliding window in its metadata
    const meta = llamaGGUFMetadata({ dim: 64, layers: 1, heads: 8, kvHeads: 4, ffn: 172 }, spmVocabOf(src), 'F32', 'swa')
      .concat([{ key: 'llama.attention.sliding_window', type: GGUF_VALUE.UINT32, value: W }]);
    const keep = src.tensors.filter((t) => !t.name.startsWith('blk.') || t.name.startsWith('blk.0.'));
    writeGGUF(file, meta, keep.map((t) => ({ name: t.name, shape: t.shape, type: 'F32' as const, data: lt(src, t).data as Float32Array })));
    const g = readGGUF(file);
    const c = llamaConfigFromGGUF(g);
    expect(c.slidingWindow).toBe(W);
    const weights = llamaWeightsFromGGUF(g, c);
    const m = new LlamaModel(c, weights, getBackend(backend));
    const full = new LlamaModel({ ...c, slidingWindow: 0 }, weights, getBackend(backend));
    const last = (ids: number[], model = m) => {
      const cache = new PagedKvCache({ layers: 1, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8 });
      cache.add(0);
      return forwardTokens(model, cache, 0, Int32Array.from(ids)).data;
    };
    const ids = [1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368, 300, 284];
    const windowed = last(ids);
    expect(relL2(windowed, last(ids.slice(-W)))).toBeLessThan(1e-5);
    expect(relL2(windowed, last(ids.slice(-W - 1)))).toBeLessThan(1e-5); // an older token stays invisible
    expect(relL2(windowed, last(ids, full))).toBeGreaterThan(1e-3); // without the window it would see them
  });
});
