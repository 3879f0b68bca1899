// The `tessera` command line (bin/tessera.js, running dist) on its success paths, each output
// checked against an independent reference: tokenize vs llama.cpp's vocab test vectors, logits vs
// forwardTokens, perplexity vs the perplexity API, inspect vs the GGUF reader, chat vs Engine.chat,
// bench's JSON; llama.cpp's aliases against their long forms, "did you mean" for unknown options and
// commands, plain progress lines off a terminal; and argument errors that must name the range or
// the path (negative numbers, out-of-range counts, group sizes, directories given as files).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { didYouMean, progress } from '../src/cli/common.js';
import { getBackend } from '../src/index.js';
import { Engine } from '../src/engine/engine.js';
import { readGGUF } from '../src/formats/gguf.js';
import { loadModelFile } from '../src/model/load.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { nativeAvailable, relL2, spawnAsync } from './helpers.js';
import { runtimeInfo } from '../src/index.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const VOCAB = path.join(root, 'test/fixtures/vocab');
const backend = nativeAvailable ? 'cpu' : 'js';
const bin = path.join(root, 'bin/tessera.js');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-cli-'));
const cli = (args: string[], input?: string) => spawnAsync(process.execPath, [bin, ...args], { input, timeout: 120_000 });
const ok = async (args: string[], input?: string) => {
  const r = await cli(args, input);
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
  it.each(pick.map(([s, ids], i) => [i, JSON.stringify(s), s, ids] as const))('vector %i %s gives llama.cpp\'s ids', async (i, _label, text, ids) => {
    expect(text.includes('<')).toBe(false); // the CLI parses special tokens; these texts have none
    const file = path.join(dir, `case-${i}.txt`);
    writeFileSync(file, text);
    const m = path.join(VOCAB, 'ggml-vocab-llama-spm.gguf');
    expect(JSON.parse((await ok(['tokenize', '-m', m, '-f', file, '--no-bos', '--json'])).stdout)).toEqual(ids);
    if (i === 1) {
      expect((await ok(['tokenize', '-m', m, '-p', text, '--no-bos'])).stdout).toBe(`${ids.join(' ')}\n`);
      const withBos = (await ok(['tokenize', '-m', m, '-p', text])).stdout.trim().split(' ').map(Number);
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

  it('logits writes raw float32 [n_tokens, vocab] equal to forwardTokens', async () => {
    const ids = [1, 403, 407, 261, 378, 432, 269];
    const out = path.join(dir, 'logits.bin');
    const r = await ok(['logits', '--tokens', ids.join(','), '--out', out, '--backend', backend]);
    expect(r.stderr).toContain(`wrote ${ids.length} x ${V} float32 logits`);
    const buf = readFileSync(out);
    expect(buf.byteLength).toBe(ids.length * V * 4);
    const got = new Float32Array(buf.buffer, buf.byteOffset, ids.length * V);
    expect(relL2(got, apiLogits(ids))).toBeLessThan(1e-6);
    // -p tokenizes with BOS.
    const out2 = path.join(dir, 'logits-p.bin');
    await ok(['logits', '-p', 'Once upon a time', '--out', out2, '--backend', backend]);
    const pIds = tokenizer.encode('Once upon a time', { addBos: true });
    const buf2 = readFileSync(out2);
    expect(relL2(new Float32Array(buf2.buffer, buf2.byteOffset, buf2.byteLength / 4), apiLogits(pIds))).toBeLessThan(1e-6);
  });

  it('perplexity prints what the perplexity API computes (chunks and sliding)', async () => {
    const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').slice(0, 1200);
    const file = path.join(dir, 'text.txt');
    writeFileSync(file, text);
    const tokens = tokenizer.encode(text, { addBos: true });
    const chunks = JSON.parse((await ok(['perplexity', '-f', file, '--ctx', '64', '--json', '--backend', backend])).stdout);
    const want = perplexity(model, tokens, { ctx: 64, bosId: tokenizer.bosId ?? null });
    expect(chunks.scoredTokens).toBe(want.scoredTokens);
    expect(chunks.windows).toBe(want.windows);
    expect(Math.abs(chunks.ppl - want.ppl) / want.ppl).toBeLessThan(1e-9);
    const sliding = JSON.parse((await ok(['perplexity', '-f', file, '--ctx', '64', '--mode', 'sliding', '--stride', '24', '--json', '--backend', backend])).stdout);
    const wantS = perplexity(model, tokens, { ctx: 64, mode: 'sliding', stride: 24 });
    expect(sliding.scoredTokens).toBe(tokens.length - 1);
    expect(Math.abs(sliding.ppl - wantS.ppl) / wantS.ppl).toBeLessThan(1e-9);
    const plain = (await ok(['perplexity', '-f', file, '--ctx', '64', '--backend', backend])).stdout;
    expect(plain).toMatch(new RegExp(`^Final estimate: PPL = ${want.ppl.toFixed(4)} \\+/- ${want.pplError.toFixed(5)}\n\\(chunks, ctx 64, ${want.scoredTokens} tokens scored in ${want.windows} windows`));
  });

  it('perplexity ± is llama-perplexity\'s standard error, checked against per-token NLLs computed by hand', async () => {
    const text = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').slice(0, 1200);
    const file = path.join(dir, 'text-pm.txt');
    writeFileSync(file, text);
    const tokens = tokenizer.encode(text, { addBos: true });
    const ctx = 64;
    // Each chunk (BOS first) scores positions ctx/2 .. ctx-2 predicting the next token; NLL by a
    // float64 log-sum-exp over the logits row.
    const nlls: number[] = [];
    for (let i = 0; (i + 1) * ctx <= tokens.length; i++) {
      const win = tokens.slice(i * ctx, (i + 1) * ctx);
      win[0] = tokenizer.bosId!;
      const logits = apiLogits(win);
      for (let j = ctx >> 1; j < ctx - 1; j++) {
        const row = logits.subarray(j * V, (j + 1) * V);
        let max = -Infinity;
        for (const v of row) max = Math.max(max, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - max);
        nlls.push(max + Math.log(z) - row[win[j + 1]!]!);
      }
    }
    const N = nlls.length;
    const mean = nlls.reduce((a, b) => a + b, 0) / N;
    const sd = Math.sqrt(nlls.reduce((a, x) => a + (x - mean) ** 2, 0) / N / (N - 1)); // two-pass, unlike llama.cpp's one-pass
    const ppl = Math.exp(mean), pplError = ppl * sd;
    expect(sd).toBeGreaterThan(0);
    const api = perplexity(model, tokens, { ctx, bosId: tokenizer.bosId ?? null });
    expect(api.scoredTokens).toBe(N);
    expect(Math.abs(api.nllError - sd) / sd).toBeLessThan(1e-4);
    expect(Math.abs(api.pplError - pplError) / pplError).toBeLessThan(1e-4);
    const j = JSON.parse((await ok(['perplexity', '-f', file, '-c', String(ctx), '--json', '--backend', backend])).stdout);
    expect(Math.abs(j.pplError - pplError) / pplError).toBeLessThan(1e-4);
    const line = (await ok(['perplexity', '-f', file, '--ctx-size', String(ctx), '--backend', backend])).stdout;
    const m = /^Final estimate: PPL = ([\d.]+) \+\/- ([\d.]+)$/m.exec(line);
    expect(m, line).not.toBeNull();
    expect(Math.abs(Number(m![1]) - ppl)).toBeLessThan(1e-4 + 1e-6 * ppl);
    expect(Math.abs(Number(m![2]) - pplError)).toBeLessThan(1e-5 + 1e-4 * pplError);
    // -c and --ctx-size are --ctx: the same numbers
    expect(j.ppl).toBe(JSON.parse((await ok(['perplexity', '-f', file, '--ctx', String(ctx), '--json', '--backend', backend])).stdout).ppl);
  });

  it('inspect reports the tensors and metadata the GGUF reader gives', async () => {
    const g = readGGUF(STORIES);
    const j = JSON.parse((await ok(['inspect', STORIES, '--json'])).stdout);
    expect(j.version).toBe(g.version);
    expect(j.tensors.length).toBe(g.tensors.length);
    expect(j.tensors.map((t: { name: string; type: string; shape: number[]; bytes: number }) => [t.name, t.type, t.shape, t.bytes]))
      .toEqual(g.tensors.map((t) => [t.name, t.type, t.shape, t.byteLength]));
    expect(Object.keys(j.metadata).sort()).toEqual([...g.metadata.keys()].sort());
    expect(j.metadata['general.architecture']).toBe('llama');
    const text = (await ok(['inspect', STORIES])).stdout;
    expect(text.split('\n')[0]).toMatch(new RegExp(`^GGUF v${g.version}, ${g.tensors.length} tensors, ${g.metadata.size} metadata keys`));
    const params = g.tensors.reduce((s, t) => s + t.elements, 0);
    expect(text).toContain(`parameters: ${params}`);
    for (const t of g.tensors) expect(text).toContain(`${t.name.padEnd(32)} ${t.type.padEnd(5)} [${t.shape.join(', ')}]`);
  });

  it('bench: llama-bench rows (pp/tg, mean ± sd over the repetitions, size and params from the model file)', async () => {
    const rows = JSON.parse((await ok(['bench', '-p', '16', '-n', '8', '--json', '--backend', backend])).stdout);
    const g = readGGUF(STORIES);
    const params = g.tensors.reduce((s, t) => s + t.elements, 0);
    const bytes = g.tensors.reduce((s, t) => s + t.byteLength, 0); // stories260K is f32, loaded as stored
    expect(rows.map((r: { test: string }) => r.test)).toEqual(['pp16', 'tg8']);
    for (const r of rows) {
      expect(Object.keys(r).sort()).toEqual(['backend', 'isa', 'model', 'nGen', 'nPrompt', 'params', 'repetitions', 'samplesTokS', 'sizeBytes', 'sizeGiB', 'test', 'threads', 'tokS']);
      expect(r).toMatchObject({ model: 'stories260K (bundled)', backend, params, sizeBytes: bytes, repetitions: 5 });
      expect(r.sizeGiB).toBeCloseTo(bytes / 2 ** 30, 15);
      expect(r.samplesTokS).toHaveLength(5); // llama-bench's default -r 5
      for (const x of r.samplesTokS) expect(x).toBeGreaterThan(0);
      const mean = r.samplesTokS.reduce((a: number, b: number) => a + b, 0) / 5;
      const sd = Math.sqrt(r.samplesTokS.reduce((a: number, x: number) => a + (x - mean) ** 2, 0) / 4);
      expect(r.tokS.sd).toBeGreaterThanOrEqual(0);
      expect(Math.abs(r.tokS.mean - mean)).toBeLessThanOrEqual(1e-9 * mean);
      expect(Math.abs(r.tokS.sd - sd)).toBeLessThanOrEqual(1e-9 * mean);
    }
    expect(rows[0]).toMatchObject({ nPrompt: 16, nGen: 0 });
    expect(rows[1]).toMatchObject({ nPrompt: 0, nGen: 8 });
    const table = await ok(['bench', '-p', '16', '-n', '8', '-r', '2', '--backend', backend]);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]!.split('|').map((c) => c.trim()).filter(Boolean)).toEqual(['model', 'size', 'params', 'backend', 'threads', 'test', 't/s']);
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(new RegExp(`\\| ${(bytes / 2 ** 20).toFixed(2)} MiB \\| +${(params / 1e6).toFixed(2)} M \\|.* pp16 \\| +[\\d.]+ ± [\\d.]+ \\|$`));
    expect(lines[3]).toMatch(/ tg8 \| +[\d.]+ ± [\d.]+ \|$/);
    // progress is plain lines off a terminal: one per run here
    expect(table.stderr.match(/^bench (pp16|tg8) \d\/2 [\d.]+ t\/s$/gm)).toHaveLength(4);
  });

  it('bench: -r, --repetitions and --runs are one option; -p 0 / -n 0 drop a test; -t sets the threads', async () => {
    const reps = async (flag: string) => JSON.parse((await ok(['bench', '-p', '8', '-n', '0', flag, '3', '--json', '--backend', backend])).stdout);
    for (const flag of ['-r', '--repetitions', '--runs']) {
      const rows = await reps(flag);
      expect(rows.map((r: { test: string }) => r.test)).toEqual(['pp8']);
      expect(rows[0].samplesTokS).toHaveLength(3);
    }
    expect(JSON.parse((await ok(['bench', '-p', '0', '-n', '4', '-r', '1', '--json', '--backend', backend])).stdout).map((r: { test: string }) => r.test)).toEqual(['tg4']);
    if (backend === 'cpu') {
      const want = runtimeInfo().threads === 1 ? 2 : 1; // a count unlike the default, so the flag shows
      for (const flag of ['-t', '--threads']) {
        const [r] = JSON.parse((await ok(['bench', '-p', '8', '-n', '0', '-r', '1', flag, String(want), '--json'])).stdout);
        expect(r.threads).toBe(want);
      }
    }
  });
});

describe('tessera chat', () => {
  it('answers piped lines with the template given and ends cleanly on end of input', async () => {
    const tpl = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    const file = path.join(dir, 'tpl.jinja');
    writeFileSync(file, tpl);
    const r = await ok(['chat', '--template', file, '-n', '10', '--temperature', '0', '--backend', backend], 'Once upon a time\n');
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

  it('a model without a chat template and no --template is a usage error', async () => {
    // The bundled model carries a template; the F16 fixture is the published file, without one.
    const r = await cli(['chat', '-m', path.join(root, 'test/fixtures/stories260K/stories260K-F16.gguf'), '--backend', backend], '');
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
    [['bench', '-n', '-3'], /--n-gen expects an integer in \[0, 16777216\] but received '-3'/],
    [['bench', '-r', '1e9'], /--repetitions expects an integer in \[1, 1000\]/],
    [['bench', '-p', '0', '-n', '0'], /-p 0 and -n 0 leave nothing to measure/],
    [['chat', '--temp', '-1'], /--temperature expects a number >= 0 but received '-1'/],
    [['perplexity', '-f', 'package.json', '-c', '-64'], /--ctx expects an integer in \[3, 16777216\] but received '-64'/],
    [['generate', '-ngl', 'x'], /-ngl expects a layer count \(an integer, auto or all\) but received 'x'/],
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
  ])('tessera %j', async (args, msg) => {
    const r = await spawnAsync(process.execPath, [bin, ...args], { cwd: root });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/ambiguous|EISDIR/);
    expect(r.stdout).toBe('');
  });

  it('output paths: a directory or an unwritable place is named, after the model ran', async () => {
    const r = await cli(['logits', '--tokens', '1,2', '--out', dir, '--backend', backend]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`--out is a directory, not a file: ${dir}`);
    const r2 = await cli(['logits', '--tokens', '1,2', '--out', path.join(dir, 'missing', 'x.bin'), '--backend', backend]);
    expect(r2.status).toBe(2);
    expect(r2.stderr).toMatch(/cannot write --out .*missing.*x\.bin: ENOENT/);
    const r3 = await cli(['quantize', '--format', 'gguf', '--bits', '8', '-m', STORIES, '-o', dir]);
    expect(r3.status).toBe(2);
    expect(r3.stderr).toContain(`-o is a directory, not a file (--format gguf writes one file): ${dir}`);
  });

  it('bench: -n past the model\'s context is a usage error', async () => {
    const ctx = readGGUF(STORIES).metadata.get('llama.context_length') as number;
    const r = await cli(['bench', '-n', String(ctx + 1), '-r', '1', '--backend', backend]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`-n ${ctx + 1} exceeds the model's context of ${ctx} tokens`);
  });
});

describe("llama.cpp's spellings do what the long forms do", () => {
  const gen = (args: string[]) => ok(['generate', '-p', 'Once upon a time', '-n', '24', '--backend', backend, ...args]);

  it('--temp is --temperature, -s is --seed, -t is --threads, -ngl is ignored with a note', async () => {
    const greedy = (await gen(['--temperature', '0'])).stdout;
    expect(greedy.length).toBeGreaterThan('Once upon a time'.length);
    expect((await gen(['--temp', '0'])).stdout).toBe(greedy);
    expect((await gen(['--temp=0'])).stdout).toBe(greedy);
    // seeded sampling: the same seed through either spelling gives the same text
    const seeded = (await gen(['--temperature', '1.2', '--seed', '1234'])).stdout;
    expect((await gen(['--temp', '1.2', '-s', '1234'])).stdout).toBe(seeded);
    expect((await gen(['--temperature', '0', '-t', '1'])).stdout).toBe(greedy);
    const ngl = (await gen(['--temp', '0', '-ngl', '99']));
    expect(ngl.stdout).toBe(greedy);
    expect(ngl.stderr).toContain('-ngl 99 ignored — tessera has no per-layer GPU offload; the whole model runs on the --backend chosen');
    expect((await gen(['--temp', '0', '--n-gpu-layers', 'all'])).stdout).toBe(greedy);
  });

  it('every command\'s --help lists the aliases it takes', async () => {
    const help = async (cmd: string) => (await ok([cmd, '--help'])).stdout;
    expect(await help('generate')).toMatch(/--temp\b[\s\S]*-s, --seed[\s\S]*-t, --threads[\s\S]*-ngl, --n-gpu-layers/);
    expect(await help('perplexity')).toMatch(/-c, --ctx N[\s\S]*--ctx-size[\s\S]*-t, --threads[\s\S]*-ngl/);
    expect(await help('bench')).toMatch(/-r, --repetitions N[\s\S]*--runs[\s\S]*-t, --threads[\s\S]*-ngl, --n-gpu-layers/);
    expect(await help('serve')).toMatch(/-t, --threads[\s\S]*-ngl/);
    expect(await help('moe-stats')).toMatch(/-c, --ctx N[\s\S]*--ctx-size[\s\S]*-t, --threads/);
    expect(await help('logits')).toMatch(/-t, --threads[\s\S]*-ngl/);
    expect((await ok(['--help'])).stdout).toMatch(/--temp \(--temperature\) {2}-t \(--threads\) {2}-s \(--seed\) {2}-c, --ctx-size \(--ctx\)/);
  });
});

describe('unknown options and commands: exit 2, the nearest name, no parser text', () => {
  it.each([
    [['genrate'], "unknown command 'genrate'; did you mean generate?"],
    [['perplexty', '-f', 'x'], "unknown command 'perplexty'; did you mean perplexity?"],
    [['generate', '--temprature', '0'], "unknown option '--temprature' for generate; did you mean --temperature?"],
    [['generate', '--max-token', '5'], "unknown option '--max-token' for generate; did you mean --max-tokens?"],
    [['generate', '-temp', '0'], "unknown option '-temp' for generate; did you mean --temp?"],
    [['perplexity', '--ctxsize', '64'], "unknown option '--ctxsize' for perplexity; did you mean --ctx-size?"],
    [['bench', '--repetition', '2'], "unknown option '--repetition' for bench; did you mean --repetitions?"],
    [['chat', '--temprature', '0'], "unknown option '--temprature' for chat; did you mean --temperature?"],
    [['tokenize', '--jsn'], "unknown option '--jsn' for tokenize; did you mean --json?"],
    [['generate', '--zzzzzzzz'], "unknown option '--zzzzzzzz' for generate (see tessera generate --help)"],
    [['frobnicate'], "unknown command 'frobnicate' (see tessera --help)"],
    [['generate', '-p'], '-p needs a value (see tessera generate --help)'],
    [['generate', '-p', '--temp', '0'], "-p needs a value but is followed by the option '--temp' (a value starting with '-' is written --prompt=--temp)"],
    [['tokenize', '--json=yes', '-p', 'x'], "--json takes no value but received 'yes'"],
  ])('tessera %j', async (args, msg) => {
    const r = await spawnAsync(process.execPath, [bin, ...args], { cwd: root });
    expect(r.status).toBe(2);
    expect(r.stderr.startsWith(`tessera: ${msg}`), r.stderr).toBe(true);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/Unknown option|ParseArgs|positional|ambiguous|at .*\.js/);
    expect(r.stdout).toBe('');
  });

  it('didYouMean: near misses within a third of the length, prefixes, nothing for noise', () => {
    expect(didYouMean('--tmeperature', ['--temperature', '--top-k'])).toBe('--temperature'); // a transposition is one edit
    expect(didYouMean('--max', ['--max-tokens', '-m'])).toBe('--max-tokens');
    expect(didYouMean('-P', ['-p', '--prompt'])).toBe('-p');
    expect(didYouMean('-x', ['-m', '-n'])).toBeUndefined();
    expect(didYouMean('--qqqqqq', ['--temperature', '--seed'])).toBeUndefined();
  });
});

describe('progress', () => {
  const capture = (isTTY: boolean) => {
    const out: string[] = [];
    return { stream: { isTTY, write: (s: string) => out.push(s) }, out };
  };

  it('off a terminal: plain lines at the first step, each tenth and the last', () => {
    const { stream, out } = capture(false);
    const p = progress('loading tensors', stream);
    for (let d = 1; d <= 291; d++) p(d, 291);
    const text = out.join('');
    expect(text).not.toContain('\r');
    const lines = text.trim().split('\n');
    expect(lines[0]).toBe('loading tensors 1/291');
    expect(lines[lines.length - 1]).toBe('loading tensors 291/291');
    expect(lines).toHaveLength(11);
    for (const l of lines) expect(l).toMatch(/^loading tensors \d+\/291$/);
  });

  it('on a terminal: one redrawn line with a bar, ended at the last step', () => {
    const { stream, out } = capture(true);
    const p = progress('perplexity chunks', stream);
    for (let d = 1; d <= 4; d++) p(d, 4, `ppl ${d}`);
    expect(out).toHaveLength(4);
    for (const w of out) expect(w.startsWith('\rperplexity chunks [')).toBe(true);
    expect(out[1]).toContain(`[${'#'.repeat(12)}${'.'.repeat(12)}] 2/4 ppl 2`);
    expect(out[3]!.endsWith('\n')).toBe(true);
    expect(out.slice(0, 3).join('')).not.toContain('\n');
  });

  it('the CLI writes plain progress lines when stderr is a pipe', async () => {
    const file = path.join(dir, 'progress.txt');
    writeFileSync(file, readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').slice(0, 1200));
    const r = await ok(['perplexity', '-f', file, '-c', '64', '--backend', backend]);
    expect(r.stderr).not.toContain('\r');
    const lines = r.stderr.trim().split('\n');
    expect(lines.some((l) => /^loading tensors \d+\/\d+$/.test(l))).toBe(true);
    const chunks = lines.filter((l) => l.startsWith('perplexity chunks'));
    expect(chunks.length).toBeGreaterThan(1);
    for (const l of chunks) expect(l).toMatch(/^perplexity chunks \d+\/\d+ ppl [\d.]+$/);
    const [, done, total] = /(\d+)\/(\d+)/.exec(chunks[chunks.length - 1]!)!;
    expect(done).toBe(total);
  });
});

describe.skipIf(!nativeAvailable)('kernel bench --filter', () => {
  const kernels = (args: string[]) =>
    spawnAsync(process.execPath, ['--import', 'tsx', path.join(root, 'bench/kernels.ts'), ...args], { cwd: root, timeout: 120_000 });

  it('says so and exits 1 when no kernel matches, listing the kernels', async () => {
    const r = await kernels(['--filter', 'no-such-kernel']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("bench: no kernel matched --filter 'no-such-kernel' (case-insensitive");
    expect(r.stderr).toMatch(/^ {2}moeRoute top-2 T=512 E=8$/m);
    expect(r.stdout).not.toMatch(/peaks:/); // nothing measured
  });

  it('matches regardless of case', async () => {
    const r = await kernels(['--filter', 'MOEROUTE', '--time', '5']);
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => / ms .* of peak$/.test(l));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatch(/^moeRoute top-2 T=512 E=8 /);
  }, 120_000);
});
