// engine.score (teacher-forced log-probabilities) and generate's topLogprobs against an independent
// float64 log-softmax over the model's own teacher-forced logits (forwardTokens over the whole
// text, all rows), on cpu and js; batched scoring (one call with many items, concurrent calls,
// chunked long texts, shared prefixes from the prefix cache) equals each item scored alone. The
// `tessera score` and `tessera eval` commands, run in this process.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { corpusBleu, corpusRougeL, Engine, forwardTokens, getBackend, PagedKvCache, runBatch, type ScoreResult } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const backends = nativeAvailable ? (['cpu', 'js'] as const) : (['js'] as const);

/** log-softmax of one row in float64. */
function logSoftmax(row: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let z = 0;
  for (const v of row) z += Math.exp(v - m);
  const lz = m + Math.log(z);
  return Float64Array.from(row, (v) => v - lz);
}

describe.each(backends)('engine.score on %s', (backend) => {
  const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
  const V = model.config.vocabSize;

  /** Every row's float64 log-softmax of the teacher-forced logits of `tokens`. */
  function reference(tokens: number[]): Float64Array[] {
    const c = model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(tokens.length / 16) + 1 });
    try {
      cache.add(0);
      const l = forwardTokens(model, cache, 0, Int32Array.from(tokens), { allLogits: true }).data as Float32Array;
      return Array.from({ length: tokens.length }, (_, i) => logSoftmax(l.subarray(i * V, (i + 1) * V)));
    } finally {
      cache.dispose();
    }
  }

  /** The top-k ids of a float64 row, best first (ties to the lower id). */
  const topIds = (row: Float64Array, k: number) => Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, k);

  const pairs = [
    ['Once upon a time, there was a little girl named Lily.', ' She loved to play outside in the sun.'],
    ['The cat', ' sat on the mat.'],
    ['Tom had a red ball. He', ' threw it to his friend Sam, who caught it and laughed. They played all day until the sun went down and their mothers called them home.'],
  ] as const;

  it('log-probabilities, sum, tokens, pieces and top alternatives match a float64 log-softmax of the forward logits', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      for (const [prompt, completion] of pairs) {
        const r = await engine.score(prompt, completion, { topLogprobs: 3, promptLogprobs: true });
        const p = tokenizer.encode(prompt, { addBos: true });
        const whole = tokenizer.encode(prompt + completion, { addBos: true });
        expect(whole.slice(0, p.length)).toEqual(p); // these texts split cleanly at the prompt's end
        expect(r.promptTokens).toBe(p.length);
        expect(r.tokens).toEqual(whole.slice(p.length));
        expect(r.pieces.join('')).toBe(completion);
        const ref = reference(whole);
        r.tokens.forEach((t, i) => {
          const row = ref[p.length + i - 1]!;
          expect(Math.abs(r.logprobs[i]! - row[t]!)).toBeLessThan(1e-4);
          expect(r.topLogprobs![i]!.map((x) => x.token)).toEqual(topIds(row, 3));
          r.topLogprobs![i]!.forEach((x) => expect(Math.abs(x.logprob - row[x.token]!)).toBeLessThan(1e-4));
          expect(r.topLogprobs![i]!.map((x) => x.text)).toEqual(r.topLogprobs![i]!.map((x) => tokenizer.tokenText(x.token)));
        });
        expect(Math.abs(r.sum - r.logprobs.reduce((a, b) => a + b, 0))).toBeLessThan(1e-9);
        // promptLogprobs: the prompt's tokens after BOS, each given the ones before it
        expect(r.prompt!.tokens).toEqual(p.slice(1));
        r.prompt!.tokens.forEach((t, i) => expect(Math.abs(r.prompt!.logprobs[i]! - ref[i]![t]!)).toBeLessThan(1e-4));
        // without the extras: the same numbers
        const plain = await engine.score(prompt, completion);
        expect(plain.logprobs).toEqual(r.logprobs);
        expect(plain.topLogprobs).toBeUndefined();
        expect(plain.prompt).toBeUndefined();
      }
      // token ids are used as they are
      const ids = tokenizer.encode('The dog ran to the park', { addBos: true });
      const r = await engine.score(ids.slice(0, 3), ids.slice(3));
      const ref = reference(ids);
      expect(r.tokens).toEqual(ids.slice(3));
      r.tokens.forEach((t, i) => expect(Math.abs(r.logprobs[i]! - ref[2 + i]![t]!)).toBeLessThan(1e-4));
    } finally {
      await engine.dispose();
    }
  });

  it('batched, concurrent, chunked and prefix-cached scoring equals each item scored alone', async () => {
    const story = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she saw a big red ball in the park. ';
    const long = story.repeat(3);
    const items = [
      ...pairs.map(([prompt, completion]) => ({ prompt, completion })),
      { prompt: long, completion: 'The end.' }, // longer than maxBatchTokens: several steps, or a start on cached blocks
      { prompt: long, completion: 'She was happy.' }, // same prompt
      { prompt: 'A', completion: long }, // long scored part across chunks
    ];
    const alone: ScoreResult[] = [];
    {
      const engine = await Engine.load(STORIES, { backend, maxBatchTokens: 64, prefixCaching: false });
      try {
        for (const it of items) alone.push(await engine.score(it.prompt, it.completion, { topLogprobs: 2 }));
      } finally {
        await engine.dispose();
      }
    }
    const engine = await Engine.load(STORIES, { backend, maxBatchTokens: 64 });
    try {
      await engine.score(long, ' And then?'); // the long prompt's blocks are now in the prefix cache
      const gen = engine.generate('The cat', { maxTokens: 30, temperature: 0 }); // decoding alongside
      const batched = await engine.score(items, { topLogprobs: 2 });
      const concurrent = await Promise.all(items.map((it) => engine.score(it.prompt, it.completion, { topLogprobs: 2 })));
      await gen;
      expect(batched).toEqual(alone);
      expect(concurrent).toEqual(alone);
      const s = await engine.stats();
      expect(s.kvBlocksUsed).toBe(0);
      expect(s.prefixHitRate).toBeGreaterThan(0);
      // promptLogprobs needs every row: no start on cached blocks, same numbers
      const withPrompt = await engine.score(items.slice(3), { topLogprobs: 2, promptLogprobs: true });
      withPrompt.forEach((r, i) => expect({ ...r, prompt: undefined }).toEqual({ ...alone[3 + i]!, prompt: undefined }));
      expect(withPrompt[0]!.prompt!.tokens).toEqual(tokenizer.encode(long, { addBos: true }).slice(1));
      // and the long item against the reference
      const ref = reference([...tokenizer.encode(long, { addBos: true }), ...batched[3]!.tokens]);
      const P = batched[3]!.promptTokens;
      batched[3]!.tokens.forEach((t, i) => expect(Math.abs(batched[3]!.logprobs[i]! - ref[P + i - 1]![t]!)).toBeLessThan(1e-4));
    } finally {
      await engine.dispose();
    }
  });

  it("a text's rows do not depend on where the scheduler cuts it into prompt chunks (attention's last row block included)", () => {
    // Every cut into two long segments (>= 16 tokens, as the scheduler makes them) gives the same
    // logits as one segment, bit for bit: the cut moves the rows that fall into a segment's last,
    // partly filled row block of the attention kernel.
    const ids = tokenizer.encode('Tom had a red ball. He threw it to his friend Sam, who caught it and laughed. They played all day until the sun went down', { addBos: true });
    const c = model.config;
    const run = (cuts: number[]) => {
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
      try {
        cache.add(0);
        const out = new Float32Array(ids.length * V);
        let at = 0;
        for (const end of [...cuts, ids.length]) {
          out.set(runBatch(model, cache, [{ seq: 0, tokens: ids.slice(at, end), logits: 'all' }])[0]!, at * V);
          at = end;
        }
        return out;
      } finally {
        cache.dispose();
      }
    };
    const whole = run([]);
    for (let cut = 16; cut <= ids.length - 16; cut++) expect(run([cut]), `cut at ${cut}`).toEqual(whole);
  });

  it('generate with topLogprobs: per token the chosen logprob and the top alternatives of the unmodified distribution', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const prompt = tokenizer.encode('Lily and Ben', { addBos: true });
      const r = await engine.generate(prompt, { maxTokens: 12, temperature: 0.8, seed: 3, topLogprobs: 4, ignoreEos: true });
      expect(r.topLogprobs).toHaveLength(r.tokens.length);
      const ref = reference([...prompt, ...r.tokens]);
      r.tokens.forEach((t, i) => {
        const row = ref[prompt.length + i - 1]!;
        expect(Math.abs(r.logprobs[i]! - row[t]!)).toBeLessThan(1e-4);
        expect(r.topLogprobs![i]!.map((x) => x.token)).toEqual(topIds(row, 4));
        r.topLogprobs![i]!.forEach((x) => expect(Math.abs(x.logprob - row[x.token]!)).toBeLessThan(1e-4));
      });
      // scoring the generated text gives the same log-probabilities
      const s = await engine.score(prompt, r.tokens);
      s.logprobs.forEach((l, i) => expect(Math.abs(l - r.logprobs[i]!)).toBeLessThan(1e-4));
      expect((await engine.generate(prompt, { maxTokens: 3 })).topLogprobs).toBeUndefined();
    } finally {
      await engine.dispose();
    }
  });
});

describe('engine.score input and aborts', () => {
  it('refuses bad input by name and settles aborted calls', async () => {
    const engine = await Engine.load(STORIES, { backend: backends[0] });
    try {
      const V = engine.info.config.vocabSize;
      await expect(engine.score('a', 'b', { topLogprob: 2 } as object)).rejects.toThrow(/Unknown option 'topLogprob' in the score options; did you mean 'topLogprobs'\?/);
      await expect(engine.score('a', 'b', { maxTokens: 2 } as object)).rejects.toThrow(/Unknown option 'maxTokens'/);
      await expect(engine.score('a', 'b', { topLogprobs: 21 })).rejects.toThrow(/options.topLogprobs/);
      await expect(engine.score('The cat', '')).rejects.toThrow(/Expected a non-empty completion \(at least one token\) in item 0/);
      await expect(engine.score([1, 2], [V])).rejects.toThrow(new RegExp(`Expected token ids in \\[0, ${V}\\) for completion but received ${V} at index 0`));
      await expect(engine.score('', 'x', { addBos: false })).rejects.toThrow(/non-empty prompt/);
      await expect(engine.score(3 as unknown as string, 'x')).rejects.toThrow(/Expected a string or an array of token ids for prompt/);
      await expect(engine.score([{ prompt: 'a', completion: 'b', extra: 1 }] as never)).rejects.toThrow(/Unknown option 'extra' in score item 0/);
      await expect(engine.score([])).rejects.toThrow(/at least one/);
      const ctx = engine.info.config.contextLength;
      await expect(engine.score([1, 2], new Array<number>(ctx).fill(5))).rejects.toThrow(new RegExp(`Expected prompt and completion of at most the model's context length ${ctx} tokens together but received ${ctx + 2}`));
      const long = 'Once upon a time there was a dog. '.repeat(40);
      const ac = new AbortController();
      ac.abort();
      await expect(engine.score('x', long, { signal: ac.signal })).rejects.toThrow(/abort/i);
      const ac2 = new AbortController();
      const p = engine.score([{ prompt: 'x', completion: long }, { prompt: 'y', completion: long }], { signal: ac2.signal });
      const settled = p.then(() => 'resolved', (e: Error) => e.name);
      ac2.abort();
      expect(await settled).toBe('AbortError');
      // the engine still works and nothing stays allocated
      expect((await engine.score('The cat', ' sat')).tokens.length).toBeGreaterThan(0);
      expect((await engine.stats()).kvBlocksUsed).toBe(0);
    } finally {
      await engine.dispose();
    }
  });
});

describe('tessera score and tessera eval', () => {
  /** Runs the CLI in this process; returns stdout, stderr and the exit code it set. */
  async function cli(args: string[]): Promise<{ out: string; err: string; code: number }> {
    const out: string[] = [], err: string[] = [];
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => (err.push(String(s)), true));
    const before = process.exitCode;
    try {
      await main(args);
      return { out: out.join(''), err: err.join(''), code: Number(process.exitCode ?? 0) };
    } finally {
      o.mockRestore();
      e.mockRestore();
      process.exitCode = before;
    }
  }
  const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/reference.json', import.meta.url), 'utf8')) as {
    bleu: { name: string; hypotheses: string[]; references: string[][]; score: number }[];
    rougeL: { fmeasure: number; stemmed: { fmeasure: number } }[];
  };
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-eval-'));
  const write = (name: string, lines: readonly string[]) => {
    const f = path.join(dir, name);
    writeFileSync(f, lines.join('\n') + '\n');
    return f;
  };
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('score --json is engine.score; the table ends with the sum', async () => {
    const args = ['score', '-m', STORIES, '--backend', backends[0], '-p', 'The cat', '-c', ' sat on the mat.'];
    const json = JSON.parse((await cli([...args, '--json', '--top-logprobs', '2'])).out) as ScoreResult;
    const engine = await Engine.load(STORIES, { backend: backends[0] });
    try {
      expect(json).toEqual(await engine.score('The cat', ' sat on the mat.', { topLogprobs: 2 }));
    } finally {
      await engine.dispose();
    }
    const text = (await cli(args)).out;
    expect(text).toContain(`sum logprob = ${json.sum.toFixed(4)}`);
    expect(text.split('\n').filter((l) => /^\s+\d+\s+-?\d+\.\d{4}\s+"/.test(l))).toHaveLength(json.tokens.length);
    expect(await cli(['score', '-p', 'x'])).toMatchObject({ code: 2, err: expect.stringContaining('missing -c COMPLETION') });
  });

  it("eval --hyp prints sacreBLEU's and rouge-score's numbers for the fixture sentences", async () => {
    const one = ref.bleu.find((c) => c.name === 'one-ref')!, two = ref.bleu.find((c) => c.name === 'two-refs')!;
    const hyp = write('hyp.txt', one.hypotheses), refA = write('a.txt', one.references[0]!), refB = write('b.txt', two.references[1]!);
    const r1 = JSON.parse((await cli(['eval', '--refs', refA, '--hyp', hyp, '--json'])).out) as { bleu: { score: number }; rougeL: { fmeasure: number }; rougeLStemmed: { fmeasure: number }; segments: number };
    expect(r1.segments).toBe(one.hypotheses.length);
    expect(Math.abs(r1.bleu.score - one.score)).toBeLessThan(1e-9);
    const pairs = ref.rougeL.slice(0, one.hypotheses.length);
    const rougeMean = pairs.reduce((s, x) => s + x.fmeasure, 0) / pairs.length;
    expect(Math.abs(r1.rougeL.fmeasure - rougeMean)).toBeLessThan(1e-12);
    expect(Math.abs(r1.rougeLStemmed.fmeasure - pairs.reduce((s, x) => s + x.stemmed.fmeasure, 0) / pairs.length)).toBeLessThan(1e-12);
    const r2 = JSON.parse((await cli(['eval', '--refs', refA, '--refs', refB, '--hyp', hyp, '--json'])).out) as { bleu: { score: number } };
    expect(Math.abs(r2.bleu.score - two.score)).toBeLessThan(1e-9);
    const text = (await cli(['eval', '--refs', refA, '--hyp', hyp])).out;
    expect(text).toContain(`BLEU = ${one.score.toFixed(2)} `);
    expect(text).toContain(`ROUGE-L F = ${(100 * rougeMean).toFixed(2)} `);
    // mismatched files and options that need generation are usage errors naming what was wrong
    const short = write('short.txt', ['only one line']);
    expect(await cli(['eval', '--refs', short, '--hyp', hyp])).toMatchObject({ code: 2, err: expect.stringContaining(`--refs ${short} has 1 lines but --hyp ${hyp} has ${one.hypotheses.length}`) });
    expect(await cli(['eval', '--refs', refA, '--hyp', hyp, '-n', '5'])).toMatchObject({ code: 2, err: expect.stringContaining('-n applies to --prompts') });
    expect(await cli(['eval', '--hyp', hyp])).toMatchObject({ code: 2, err: expect.stringContaining('missing --refs') });
  });

  it('eval --prompts generates greedily (batched) and scores what it generated', async () => {
    const prompts = ['Once upon a time', 'The cat', 'Tom had a red ball.'];
    const refs = ['Once upon a time, there was a little girl named Lily.', 'The cat sat on the mat.', 'He threw it to his friend.'];
    const r = JSON.parse((await cli(['eval', '-m', STORIES, '--backend', backends[0], '--prompts', write('p.txt', prompts), '--refs', write('r.txt', refs), '-n', '12', '--json'])).out) as {
      hypotheses: string[]; bleu: { score: number }; rougeL: { fmeasure: number };
    };
    const engine = await Engine.load(STORIES, { backend: backends[0] });
    try {
      const alone = await Promise.all(prompts.map((p) => engine.generate(p, { maxTokens: 12, temperature: 0 })));
      expect(r.hypotheses).toEqual(alone.map((g) => g.text.replace(/\r?\n/g, ' ').trim()));
    } finally {
      await engine.dispose();
    }
    expect(r.bleu.score).toBe(corpusBleu(r.hypotheses, [refs]).score);
    expect(r.rougeL.fmeasure).toBe(corpusRougeL(refs, r.hypotheses).fmeasure);
  });
});
