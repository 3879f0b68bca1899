// The Engine's API surface: the bundled model without a path, option names checked at run time
// (unknown ones named, with "did you mean"), one abort behaviour across every entry point,
// detokenize against the tokenizer, and loadModelFile's default backend.
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bundledModelPath, Engine, forwardTokens, getBackend, loadModelFile, PagedKvCache, readGGUF, runtimeInfo, Tokenizer,
  type Delta, type GenerateResult,
} from '../src/index.js';
import { closestName } from '../src/engine/options.js';
import { rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const backend = runtimeInfo().native ? 'cpu' : 'js';

describe('the bundled model', () => {
  it('Engine.load() with no path (or only options) loads it; the package exports its files', async () => {
    expect(bundledModelPath).toBe(path.join(root, 'models/stories260K/stories260K.gguf'));
    expect(createRequire(path.join(root, 'package.json')).resolve('tessera/models/stories260K/stories260K.gguf')).toBe(bundledModelPath);
    const a = await Engine.load({ backend: 'js' });
    const b = await Engine.load();
    try {
      expect(a.info.path).toBe(bundledModelPath);
      expect(a.info.backend).toBe('js');
      expect(b.info.path).toBe(bundledModelPath);
      expect(a.info.chatTemplate).toContain('Assistant:');
      const o = { temperature: 0, maxTokens: 8 };
      expect((await a.generate('Once upon a time', o)).text).toBe((await b.generate('Once upon a time', o)).text);
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
    await expect(Engine.load(42 as never)).rejects.toThrow(/Expected a model file path \(or nothing, for the bundled model\) for path/);
  });
});

describe('option names', () => {
  it('closestName: case and snake_case, then small edits', () => {
    const known = ['maxTokens', 'temperature', 'topK', 'topP', 'stop'];
    expect(closestName('max_tokens', known)).toBe('maxTokens');
    expect(closestName('MAXTOKENS', known)).toBe('maxTokens');
    expect(closestName('temprature', known)).toBe('temperature');
    expect(closestName('top_k', known)).toBe('topK');
    expect(closestName('frobnicate', known)).toBeUndefined();
  });

  it('unknown options are rejected at every entry point, naming the option', async () => {
    await expect(Engine.load({ backnd: 'js' } as never)).rejects.toThrow(/Unknown option 'backnd' in the Engine.load options; did you mean 'backend'\?/);
    await expect(Engine.load(bundledModelPath, { gpuLayers: 10 } as never)).rejects.toThrow(/Unsupported option 'gpuLayers' in the Engine.load options: the Engine runs on the CPU backends/);
    await expect(Engine.load({ onProgress: 1 } as never)).rejects.toThrow(/Expected a function for options.onProgress/);
    const engine = await Engine.load({ backend });
    try {
      await expect(engine.generate('Hi', { max_tokens: 4 } as never)).rejects.toThrow(/Unknown option 'max_tokens' in the generate options; did you mean 'maxTokens'\?/);
      await expect(engine.generate('Hi', { grammar: 'root ::= "a"' } as never)).rejects.toThrow(/Unsupported option 'grammar' in the generate options: constrained sampling \(grammar, JSON schema\) is not supported yet/);
      await expect(engine.generate('Hi', { jsonSchema: {} } as never)).rejects.toThrow(/Unsupported option 'jsonSchema'/);
      await expect(engine.generate('Hi', { template: 'x' } as never)).rejects.toThrow(/Unknown option 'template' in the generate options/);
      const stream = engine.stream('Hi', { temprature: 0 } as never);
      await expect(stream.next()).rejects.toThrow(/Unknown option 'temprature' in the generate options; did you mean 'temperature'\?/);
      const chat = engine.chat([{ role: 'user', content: 'Hi' }], { tools: [] } as never);
      await expect(chat.next()).rejects.toThrow(/Unsupported option 'tools' in the chat options: tool calling is not supported yet/);
      await expect(engine.generate({ messages: [{ role: 'user', content: 'Hi' }], tempate: 'x' } as never)).rejects.toThrow(/Unknown option 'tempate' in the prompt; did you mean 'template'\?/);
      await expect(engine.tokenize('Hi', { add_bos: false } as never)).rejects.toThrow(/Unknown option 'add_bos' in the tokenize options; did you mean 'addBos'\?/);
      await expect(engine.detokenize([1], { skipSpecials: true } as never)).rejects.toThrow(/did you mean 'skipSpecial'\?/);
      // A key set to undefined asks for nothing and passes; the known ones still work.
      const r = await engine.generate('Once upon a time', { maxTokens: 4, temperature: 0, foo: undefined } as never);
      expect(r.completionTokens).toBe(4);
      const c = engine.chat([{ role: 'user', content: 'Hi' }], { maxTokens: 2, template: undefined });
      let x;
      while (!(x = await c.next()).done);
      expect(x.value.completionTokens).toBeLessThanOrEqual(2);
    } finally {
      await engine.dispose();
    }
  });
});

/** Every way to ask for text: each returns the request's result, reading the stream to its end. */
type EntryPoint = (engine: Engine, signal: AbortSignal, onDelta: () => void) => Promise<GenerateResult>;

async function streamed(it: AsyncGenerator<Delta, GenerateResult>, onDelta: () => void): Promise<GenerateResult> {
  let r;
  while (!(r = await it.next()).done) onDelta();
  return r.value;
}

const LONG = { maxTokens: 400, ignoreEos: true };
const ENTRY_POINTS: [string, EntryPoint][] = [
  ['generate', (e, signal) => e.generate('Once upon a time', { ...LONG, signal })],
  ['stream', (e, signal, d) => streamed(e.stream('Once upon a time', { ...LONG, signal }), d)],
  ['chat', (e, signal, d) => streamed(e.chat([{ role: 'user', content: 'Tell me a story.' }], { ...LONG, signal }), d)],
  ['beam search', (e, signal) => e.generate('Once upon a time', { ...LONG, beams: 4, signal })],
  ['speculative (n-gram)', (e, signal, d) => streamed(e.stream('Once upon a time', { ...LONG, temperature: 0, signal }), d)],
  ['ChatSession.prompt', (e, signal) => e.createChatSession().prompt('Tell me a story.', { ...LONG, signal })],
  ['ChatSession.promptStream', (e, signal, d) => streamed(e.createChatSession().promptStream('Tell me a story.', { ...LONG, signal }), d)],
];

describe('abort: one behaviour everywhere', () => {
  it.each(ENTRY_POINTS)('%s: a signal aborted before the call and one aborted mid-generation both end with finishReason abort', async (name, call) => {
    const engine = await Engine.load({ backend, ...(name.startsWith('speculative') ? { lookupNgram: 2 } : {}) });
    try {
      const early = new AbortController();
      early.abort();
      const before = await call(engine, early.signal, () => {});
      expect(before).toMatchObject({ text: '', tokens: [], logprobs: [], finishReason: 'abort', promptTokens: 0, completionTokens: 0 });

      // Mid-generation: after the first delta where there are deltas, else once the scheduler runs it.
      const ac = new AbortController();
      let settled = false;
      const pending = call(engine, ac.signal, () => ac.abort());
      void pending.finally(() => (settled = true)).catch(() => {});
      while (!settled && !ac.signal.aborted && (await engine.stats()).running === 0);
      ac.abort();
      const during = await pending;
      expect(during.finishReason).toBe('abort');
      expect(during.completionTokens).toBeLessThan(LONG.maxTokens);
      expect(during.promptTokens).toBeGreaterThan(0); // it had started
      expect(during.tokens).toHaveLength(during.completionTokens);
      for (const k of Object.keys(before)) expect(during, k).toHaveProperty(k);
      const s = await engine.stats();
      expect(s.running + s.waiting).toBe(0);
    } finally {
      await engine.dispose();
    }
  }, 60_000);
});

describe('tokenize / detokenize', () => {
  const tok = Tokenizer.fromGGUF(readGGUF(bundledModelPath));

  it('detokenize is the tokenizer\'s decode, byte for byte (byte tokens, control tokens, broken UTF-8)', async () => {
    const engine = await Engine.load({ backend });
    try {
      const r = rng(17);
      const V = engine.info.config.vocabSize;
      const cases = [[], [1], [1, 2], ...Array.from({ length: 40 }, () => Array.from({ length: 1 + Math.floor(r() * 30) }, () => Math.floor(r() * V)))];
      // Byte-fallback tokens <0xE2> <0x82> <0xAC> make a euro sign; one missing leaves invalid UTF-8.
      const byte = (b: number) => tok.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
      cases.push([byte(0xe2), byte(0x82), byte(0xac)], [byte(0xe2), byte(0x82)], [byte(0x41), 1, byte(0xe2)]);
      for (const ids of cases) {
        expect(await engine.detokenize(ids)).toBe(tok.decode(ids));
        expect(await engine.detokenize(ids, { skipSpecial: true })).toBe(tok.decode(ids, { skipSpecial: true }));
      }
      expect(await engine.detokenize([byte(0xe2), byte(0x82), byte(0xac)])).toBe('€');
      const text = 'Once upon a time, Lily saw a big dog.';
      expect(await engine.detokenize(await engine.tokenize(text, { addBos: false }))).toBe(text);
      expect(await engine.tokenize(text)).toEqual(tok.encode(text, { addBos: true, parseSpecial: true }));
      await expect(engine.detokenize([V])).rejects.toThrow(new RegExp(`Expected token ids in \\[0, ${V}\\) but received ${V} at index 0`));
      await expect(engine.detokenize([0.5])).rejects.toThrow(/received 0.5 at index 0/);
      await expect(engine.detokenize('1 2' as never)).rejects.toThrow(/Expected an array of token ids for ids/);
    } finally {
      await engine.dispose();
    }
  });
});

describe('loadModelFile', () => {
  it('without a backend runs on getBackend() (the same logits as passing it)', () => {
    const a = loadModelFile(bundledModelPath);
    const b = loadModelFile(bundledModelPath, getBackend());
    expect(a.model.backend).toBe(getBackend());
    const c = a.model.config;
    const tokens = [1, 403, 407, 261, 378];
    const logits = [a, b].map((m) => {
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 4 });
      cache.add(0);
      const l = forwardTokens(m.model, cache, 0, tokens).data.slice();
      cache.dispose();
      return l;
    });
    expect(logits[0]).toEqual(logits[1]);
    expect(() => loadModelFile(bundledModelPath, 'js' as never)).toThrow(/Expected a Backend \(from getBackend\(\)\) or nothing for backend but received string/);
    a.model.dispose();
    b.model.dispose();
  });
});

describe('the Engine from a script piped to `node --input-type=module`', () => {
  it('starts its worker (the parent\'s --input-type is not passed on) and generates what the API generates in-process', async () => {
    const { spawnSync } = await import('node:child_process');
    const script = `import { Engine } from 'tessera';
const e = await Engine.load({ backend: 'js' });
const r = await e.generate('Once upon a time', { temperature: 0, maxTokens: 8 });
await e.dispose();
process.stdout.write(JSON.stringify(r.text));`;
    // Runs dist/ (what `import 'tessera'` resolves to inside the package), built by `npm test` before vitest.
    const out = spawnSync(process.execPath, ['--input-type=module'], { cwd: root, input: script, encoding: 'utf8', timeout: 60_000 });
    expect(out.stderr).not.toContain('--input-type can only be used');
    expect(out.status).toBe(0);
    const e = await Engine.load({ backend: 'js' });
    const want = await e.generate('Once upon a time', { temperature: 0, maxTokens: 8 }).finally(() => e.dispose());
    expect(JSON.parse(out.stdout)).toBe(want.text);
  });
});
