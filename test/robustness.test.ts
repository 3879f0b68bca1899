// Failure paths: beam search under a full KV cache and abort, CLI argument errors caught before
// any model work, Engine option checks, --threads on the js backend, and shard names in a
// safetensors index that point outside the model directory.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelFileError } from '../src/index.js';
import { Engine } from '../src/engine/engine.js';
import { openSafetensorsDir } from '../src/formats/safetensors.js';
import { nativeAvailable, writeSafetensors } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const bin = path.join(root, 'bin/tessera.js');
const backend = nativeAvailable ? 'cpu' : 'js';
const cli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

describe('beam search in the Engine', () => {
  it('a full KV cache fails the request without leaking sequences; the next request works', async () => {
    // 64 layers*... stories260K: 5 layers x 4 KV heads x 8 dims: one 16-token block is 20480 bytes
    const engine = await Engine.load(STORIES, { backend, kvCacheBytes: 12 * 20480 });
    try {
      await expect(engine.generate('Once upon a time', { beams: 8, maxTokens: 400, ignoreEos: true })).rejects.toThrow(/KV cache full/);
      const r = await engine.generate('Once upon a time', { beams: 2, maxTokens: 8 });
      expect(r.completionTokens).toBeGreaterThan(0);
      const r2 = await engine.generate('Once upon a time', { beams: 2, maxTokens: 8 });
      expect(r2.tokens).toEqual(r.tokens);
    } finally {
      await engine.dispose();
    }
  });

  it('abort stops a long beam search between steps, and stop strings cut the best beam', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      // Aborted once the search is under way (its second stats() sees it running): the request
      // ends as aborted, with nothing emitted, where running on would give 400 tokens.
      const ac = new AbortController();
      const pending = engine.generate('Once upon a time', { beams: 16, maxTokens: 400, ignoreEos: true, signal: ac.signal });
      let settled = false;
      void pending.finally(() => (settled = true)).catch(() => {});
      while (!settled && (await engine.stats()).running === 0);
      ac.abort();
      const r = await pending;
      expect(r.finishReason).toBe('abort');
      expect(r.completionTokens).toBe(0);
      expect(r.tokens).toEqual([]);
      expect((await engine.stats()).running).toBe(0); // its beams are released
      const s = await engine.generate('Once upon a time', { beams: 3, maxTokens: 30, stop: ['Lily'] });
      expect(s.text).not.toContain('Lily');
      expect(s.finishReason).toBe('stop');
    } finally {
      await engine.dispose();
    }
  });

  it('rejects bad load options naming them', async () => {
    await expect(Engine.load(STORIES, { kvCacheBytes: Number.NaN })).rejects.toThrow(/options.kvCacheBytes/);
    await expect(Engine.load(STORIES, { backend: 'gpu' as never })).rejects.toThrow(/options.backend/);
    await expect(Engine.load(STORIES, { threads: 0 })).rejects.toThrow(/options.threads/);
  });
});

describe('CLI argument errors come before any model work', () => {
  it.each([
    [['generate', '--max-tokens=-3'], /--max-tokens expects an integer in \[0, 16777216\] but received '-3'/],
    [['generate', '--top-p', '2'], /--top-p expects a number in \[0, 1\] but received '2'/],
    [['generate', '--threads', '0'], /--threads expects an integer in \[1, 1024\]/],
    [['bench', '/nonexistent.gguf'], /unexpected argument '\/nonexistent.gguf'/],
    [['logits', '--tokens', '1,,2', '--out', '/tmp/x.bin'], /bad entry ''/],
    [['perplexity', '-f', 'package.json', '--ctx', '2'], /--ctx expects an integer in \[3, 16777216\]/],
    [['perplexity', '-f', 'package.json', '--stride', '4'], /--stride applies to --mode sliding only/],
  ])('tessera %j', (args, msg) => {
    const r = cli(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe(''); // nothing printed, not even the prompt
  });

  it('--threads is accepted (and ignored) on the js backend', () => {
    const r = cli(['generate', '-n', '5', '--temperature', '0', '--threads', '2'], { TESSERA_DISABLE_NATIVE: '1' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Once upon a time, there/);
  });
});

describe('safetensors index shard names', () => {
  it('a shard outside the model directory (.., ../x, absolute, .) is a ModelFileError naming the index, never read', () => {
    const base = mkdtempSync(path.join(tmpdir(), 'tessera-shards-'));
    const model = path.join(base, 'model');
    mkdirSync(model);
    // A real shard one level up: the index must not reach it.
    const bytes = new Uint8Array(new Float32Array([1, 2]).buffer);
    writeSafetensors(path.join(base, 'x.safetensors'), [{ name: 'w', dtype: 'F32', shape: [2], bytes }]);
    writeSafetensors(path.join(model, 'ok.safetensors'), [{ name: 'w', dtype: 'F32', shape: [2], bytes }]);
    const index = (shard: string) => writeFileSync(path.join(model, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: shard } }));
    index('ok.safetensors');
    expect([...openSafetensorsDir(model).keys()]).toEqual(['w']); // the well-formed index reads
    for (const shard of ['..', '../x.safetensors', path.join(base, 'x.safetensors'), '.', '']) {
      index(shard);
      let err: unknown;
      try {
        openSafetensorsDir(model);
      } catch (e) {
        err = e;
      }
      expect(err, shard).toBeInstanceOf(ModelFileError);
      expect((err as ModelFileError).file).toBe('model.safetensors.index.json');
      expect((err as Error).message).toContain(`weight_map['w'] is not a shard file name in the model directory (${JSON.stringify(shard)})`);
    }
  });
});
