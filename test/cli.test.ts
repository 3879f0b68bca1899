// The `tessera` command line (bin/tessera.js, running dist) on its success paths, each output
// checked against an independent reference: tokenize vs llama.cpp's vocab test vectors, logits vs
// forwardTokens, perplexity vs the perplexity API, inspect vs the GGUF reader, chat vs Engine.chat,
// bench's JSON; and argument errors that must name the range or the path (negative numbers,
// out-of-range counts, group sizes, directories given as files).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { Engine } from '../src/engine/engine.js';
import { readGGUF } from '../src/formats/gguf.js';
import { loadModelFile } from '../src/model/load.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { nativeAvailable, relL2 } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const VOCAB = path.join(root, 'test/fixtures/vocab');
const backend = nativeAvailable ? 'cpu' : 'js';
const bin = path.join(root, 'bin/tessera.js');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-cli-'));
const cli = (args: string[], input?: string) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', input, timeout: 60_000 });
const ok = (args: string[], input?: string) => {
  const r = cli(args, input);
  expect(r.status, r.stderr).toBe(0);
  return r;
};

/** llama.cpp's vocab test vectors (as test/tokenizer.test.ts reads them). */
function vectors(name: string): [string, number[]][] {
  const inp = readFileSync(path.join(VOCAB, `ggml-vocab-${name}.gguf.inp`), 'utf8').split('\n__ggml_vocab_test__\n');
  if (inp[inp.length - 1] === '') inp.pop();
  const out = readFileSync(path.join(VOCAB, `ggml-vocab-${name}.gguf.out`), 'utf8').split('\n');
  if (out[out.length - 1] === '') out.pop();
  expect(out.length).toBe(inp.length);
  return inp.map((s, i) => [s, out[i]!.trim() ? out[i]!.trim().split(/\s+/).map(Number) : []]);
}

describe('tessera tokenize', () => {
  const cases = vectors('llama-spm');
  // A few kinds: whitespace only, leading space, non-Latin script, emoji with digits.
  const pick = [
    cases.find(([s]) => s.length > 1 && s.trim() === '')!,
    cases.find(([s]) => s.startsWith(' Hello'))!,
    cases.find(([s]) => /[\u0400-\u04ff]/.test(s))!,
    cases.find(([s]) => s.includes('🦙') && /\d/.test(s))!,
  ];
  it.each(pick.map(([s, ids], i) => [i, JSON.stringify(s), s, ids] as const))('vector %i %s gives llama.cpp\'s ids', (i, _label, text, ids) => {
    expect(text.includes('<')).toBe(false); // the CLI parses special tokens; these texts have none
    const file = path.join(dir, `case-${i}.txt`);
    writeFileSync(file, text);
    const m = path.join(VOCAB, 'ggml-vocab-llama-spm.gguf');
    expect(JSON.parse(ok(['tokenize', '-m', m, '-f', file, '--no-bos', '--json']).stdout)).toEqual(ids);
    if (i === 1) {
      expect(ok(['tokenize', '-m', m, '-p', text, '--no-bos']).stdout).toBe(`${ids.join(' ')}\n`);
      const withBos = ok(['tokenize', '-m', m, '-p', text]).stdout.trim().split(' ').map(Number);
      expect(withBos).toEqual([1, ...ids]); // llama-spm's BOS is 1
    }
  });
});

describe('tessera logits, perplexity, inspect, bench', () => {
  const loaded = loadModelFile(STORIES, getBackend(backend));
  const { model, tokenizer } = loaded;
  const V = model.config.vocabSize;
  const apiLogits = (ids: number[]) => {
    const c = model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
    cache.add(0);
    return forwardTokens(model, cache, 0, Int32Array.from(ids), { allLogits: true }).data;
  };

  it('logits writes raw float32 [n_tokens, vocab] equal to forwardTokens', () => {
    const ids = [1, 403, 407, 261, 378, 432, 269];
    const out = path.join(dir, 'logits.bin');
    const r = ok(['logits', '--tokens', ids.join(','), '--out', out, '--backend', backend]);
    expect(r.stderr).toContain(`wrote ${ids.length} x ${V} float32 logits`);
    const buf = readFileSync(out);
    expect(buf.byteLength).toBe(ids.length * V * 4);
    const got = new Float32Array(buf.buffer, buf.byteOffset, ids.length * V);
    expect(relL2(got, apiLogits(ids))).toBeLessThan(1e-6);
    // -p tokenizes with BOS.
    const out2 = path.join(dir, 'logits-p.bin');
    ok(['logits', '-p', 'Once upon a time', '--out', out2, '--backend', backend]);
    const pIds = tokenizer.encode('Once upon a time', { addBos: true });
    const buf2 = readFileSync(out2);
    expect(relL2(new Float32Array(buf2.buffer, buf2.byteOffset, buf2.byteLength / 4), apiLogits(pIds))).toBeLessThan(1e-6);
  });

  it('perplexity prints what the perplexity API computes (chunks and sliding)', () => {
    const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').slice(0, 1200);
    const file = path.join(dir, 'text.txt');
    writeFileSync(file, text);
    const tokens = tokenizer.encode(text, { addBos: true });
    const chunks = JSON.parse(ok(['perplexity', '-f', file, '--ctx', '64', '--json', '--backend', backend]).stdout);
    const want = perplexity(model, tokens, { ctx: 64, bosId: tokenizer.bosId ?? null });
    expect(chunks.scoredTokens).toBe(want.scoredTokens);
    expect(chunks.windows).toBe(want.windows);
    expect(Math.abs(chunks.ppl - want.ppl) / want.ppl).toBeLessThan(1e-9);
    const sliding = JSON.parse(ok(['perplexity', '-f', file, '--ctx', '64', '--mode', 'sliding', '--stride', '24', '--json', '--backend', backend]).stdout);
    const wantS = perplexity(model, tokens, { ctx: 64, mode: 'sliding', stride: 24 });
    expect(sliding.scoredTokens).toBe(tokens.length - 1);
    expect(Math.abs(sliding.ppl - wantS.ppl) / wantS.ppl).toBeLessThan(1e-9);
    const plain = ok(['perplexity', '-f', file, '--ctx', '64', '--backend', backend]).stdout;
    expect(plain).toMatch(new RegExp(`^perplexity ${want.ppl.toFixed(4)} \\(chunks, ctx 64, ${want.scoredTokens} tokens scored in ${want.windows} windows`));
  });

  it('inspect reports the tensors and metadata the GGUF reader gives', () => {
    const g = readGGUF(STORIES);
    const j = JSON.parse(ok(['inspect', STORIES, '--json']).stdout);
    expect(j.version).toBe(g.version);
    expect(j.tensors.length).toBe(g.tensors.length);
    expect(j.tensors.map((t: { name: string; type: string; shape: number[]; bytes: number }) => [t.name, t.type, t.shape, t.bytes]))
      .toEqual(g.tensors.map((t) => [t.name, t.type, t.shape, t.byteLength]));
    expect(Object.keys(j.metadata).sort()).toEqual([...g.metadata.keys()].sort());
    expect(j.metadata['general.architecture']).toBe('llama');
    const text = ok(['inspect', STORIES]).stdout;
    expect(text.split('\n')[0]).toMatch(new RegExp(`^GGUF v${g.version}, ${g.tensors.length} tensors, ${g.metadata.size} metadata keys`));
    const params = g.tensors.reduce((s, t) => s + t.elements, 0);
    expect(text).toContain(`parameters: ${params}`);
    for (const t of g.tensors) expect(text).toContain(`${t.name.padEnd(32)} ${t.type.padEnd(5)} [${t.shape.join(', ')}]`);
  });

  it('bench prints positive prefill and decode speeds for the sizes asked', () => {
    const j = JSON.parse(ok(['bench', '-p', '16', '-n', '8', '-r', '1', '--json', '--backend', backend]).stdout);
    expect(j).toMatchObject({ backend, promptTokens: 16, genTokens: 8 });
    expect(j.prefillTokS).toBeGreaterThan(0);
    expect(j.decodeTokS).toBeGreaterThan(0);
    const line = ok(['bench', '-p', '16', '-n', '8', '-r', '2', '--backend', backend]);
    expect(line.stdout).toMatch(/^prefill [\d.]+ tok\/s \(16 tokens\) {3}decode [\d.]+ tok\/s \(8 tokens\)/);
    expect(line.stderr.match(/^run \d\/2: prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s$/gm)?.length).toBe(2);
  });
});

describe('tessera chat', () => {
  it('answers piped lines with the template given and ends cleanly on end of input', async () => {
    const tpl = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    const file = path.join(dir, 'tpl.jinja');
    writeFileSync(file, tpl);
    const r = ok(['chat', '--template', file, '-n', '10', '--temperature', '0', '--backend', backend], 'Once upon a time\n');
    const engine = await Engine.load(STORIES, { backend });
    let want: string;
    try {
      want = (await engine.generate({ messages: [{ role: 'user', content: 'Once upon a time' }], template: tpl }, { temperature: 0, maxTokens: 10 })).text;
    } finally {
      await engine.dispose();
    }
    expect(want.length).toBeGreaterThan(0);
    expect(r.stdout).toContain(`${want}\n`);
    expect(r.stderr).not.toMatch(/Error/);
  }, 60_000);

  it('a model without a chat template and no --template is a usage error', () => {
    // The bundled model carries a template; the F16 fixture is the published file, without one.
    const r = cli(['chat', '-m', path.join(root, 'test/fixtures/stories260K/stories260K-F16.gguf'), '--backend', backend], '');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/has no chat template; pass one with --template FILE/);
  });
});

describe('argument errors name the range or the path', () => {
  it.each([
    [['generate', '-n', '-5'], /--max-tokens expects an integer in \[0, 16777216\] but received '-5'/],
    [['generate', '--temperature', '-1'], /--temperature expects a number >= 0 but received '-1'/],
    [['generate', '--top-p', '-.5'], /--top-p expects a number in \[0, 1\] but received '-.5'/],
    [['generate', '-n', '1e12'], /--max-tokens expects an integer in \[0, 16777216\] but received '1e12'/],
    [['chat', '--temperature', '-1'], /--temperature expects a number >= 0 but received '-1'/],
    [['chat', '-n', '0'], /--max-tokens expects an integer in \[1, 16777216\]/],
    [['bench', '-n', '-3'], /--gen expects an integer in \[1, 16777216\] but received '-3'/],
    [['bench', '-r', '1e9'], /--runs expects an integer in \[1, 1000\]/],
    [['perplexity', '-f', 'package.json', '--ctx', '-64'], /--ctx expects an integer in \[3, 16777216\] but received '-64'/],
    [['quantize', '--group-size', '7', '-m', 'x', '-o', 'y'], /--group-size expects -1 \(per output channel\) or a positive multiple of 32/],
    [['quantize', '--group-size', '-2', '-m', 'x', '-o', 'y'], /--group-size expects an integer in \[-1, 16777216\] but received '-2'/],
    [['quantize', '--group-size', '48', '-m', 'x', '-o', 'y'], /--group-size expects -1 \(per output channel\) or a positive multiple of 32/],
    [['perplexity', '-f', 'src'], /text file is a directory, not a file: src/],
    [['tokenize', '-f', 'test'], /text file is a directory, not a file: test/],
    [['moe-stats', '-f', 'src'], /text file is a directory, not a file: src/],
    [['inspect', 'models'], /file is a directory, not a file: models/],
    [['chat', '--template', 'src'], /template file is a directory, not a file: src/],
    [['perplexity', '-f', 'no-such.txt'], /text file not found: no-such.txt/],
  ])('tessera %j', (args, msg) => {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: root });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/ambiguous|EISDIR/);
    expect(r.stdout).toBe('');
  });

  it('output paths: a directory or an unwritable place is named, after the model ran', () => {
    const r = cli(['logits', '--tokens', '1,2', '--out', dir, '--backend', backend]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`--out is a directory, not a file: ${dir}`);
    const r2 = cli(['logits', '--tokens', '1,2', '--out', path.join(dir, 'missing', 'x.bin'), '--backend', backend]);
    expect(r2.status).toBe(2);
    expect(r2.stderr).toMatch(/cannot write --out .*missing.*x\.bin: ENOENT/);
    const r3 = cli(['quantize', '--format', 'gguf', '--bits', '8', '-m', STORIES, '-o', dir]);
    expect(r3.status).toBe(2);
    expect(r3.stderr).toContain(`-o is a directory, not a file (--format gguf writes one file): ${dir}`);
  });

  it('bench: -n that leaves no room for a prompt in the context is a usage error', () => {
    const ctx = readGGUF(STORIES).metadata.get('llama.context_length') as number;
    const r = cli(['bench', '-n', String(ctx), '-r', '1', '--backend', backend]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`-n ${ctx} leaves no room for a prompt in the model's context of ${ctx} tokens`);
  });
});
