// Failure paths: beam search under a full KV cache and abort, CLI argument errors caught before
// any model work, Engine option checks, and --threads on the js backend.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { nativeAvailable } from './helpers.js';

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
      const ac = new AbortController();
      const t0 = performance.now();
      setTimeout(() => ac.abort(), 100);
      const r = await engine.generate('Once upon a time', { beams: 16, maxTokens: 400, ignoreEos: true, signal: ac.signal });
      expect(r.finishReason).toBe('abort');
      expect(performance.now() - t0).toBeLessThan(5000);
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
    [['generate', '--max-tokens=-3'], /--max-tokens expects an integer >= 0 but received '-3'/],
    [['generate', '--top-p', '2'], /--top-p expects a number in \[0, 1\] but received '2'/],
    [['generate', '--threads', '0'], /--threads expects an integer in \[1, 1024\]/],
    [['bench', '/nonexistent.gguf'], /unexpected argument '\/nonexistent.gguf'/],
    [['logits', '--tokens', '1,,2', '--out', '/tmp/x.bin'], /bad entry ''/],
    [['perplexity', '-f', 'package.json', '--ctx', '2'], /--ctx expects an integer >= 3/],
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
