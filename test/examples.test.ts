// The examples under examples/ run as documented (each in its own Node process, importing
// 'tessera' as an application does, so dist/ must be built as for the CLI tests):
//  - server-sse: the SSE stream of a greedy request equals Engine.generate on the same prompt; a
//    bad body is a 400 naming the field; a client that disconnects mid-stream ends its generation
//    in the Engine (finishReason 'abort', far fewer tokens than asked, nothing left running, no KV
//    block in use);
//  - kernel-bench: the table has both backends, cpu agrees with the js reference, speedups are
//    the ratio of the two times;
//  - quantize-walkthrough: the SVG parses as XML, has one bar per quantised projection (counted
//    from the GGUF's tensor shapes) and method, bar heights proportional to the values in its JSON,
//    and GPTQ's total error is below RTN's.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundledModelPath, Engine } from '../src/index.js';
import { readGGUF } from '../src/formats/gguf.js';
import { nativeAvailable, spawnAsync } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-examples-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs an example with tsx's loader, in the repository, as `npx tsx examples/...` does. */
const example = (name: string, args: string[]) =>
  spawnAsync(process.execPath, ['--import', 'tsx', path.join(root, 'examples', name), ...args], { cwd: root, timeout: 120_000 });

describe('examples/server-sse.ts', () => {
  let child: ChildProcess;
  let base = '';
  let reference: Engine;

  beforeAll(async () => {
    // js: the slower backend leaves the disconnect test plenty of tokens to cut short.
    child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'examples/server-sse.ts'), '--port', '0', '--backend', 'js'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    reference = await Engine.load(bundledModelPath, { backend: 'js' });
    base = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`server-sse did not start in 90 s: ${stderr}`)), 90_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server-sse exited with ${code}: ${stderr}`));
      });
    });
  }, 120_000);

  afterAll(async () => {
    child?.kill('SIGTERM');
    await reference?.dispose();
  });

  const post = (body: unknown, signal?: AbortSignal) =>
    fetch(`${base}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });

  /** Server-sent events of a complete response: [event name or null, parsed data]. */
  const events = (text: string) =>
    text.split('\n\n').filter((e) => e.trim()).map((e) => {
      const ev = /^event: (.*)$/m.exec(e)?.[1] ?? null;
      return [ev, JSON.parse(/^data: (.*)$/m.exec(e)![1]!)] as [string | null, Record<string, unknown>];
    });

  it('streams a greedy completion that equals Engine.generate on the same prompt', async () => {
    const r = await post({ prompt: 'Once upon a time', maxTokens: 24, temperature: 0 });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const ev = events(await r.text());
    const want = await reference.generate('Once upon a time', { maxTokens: 24, temperature: 0 });
    expect(ev.filter(([e]) => e === null).map(([, d]) => d.text).join('')).toBe(want.text);
    expect(ev[ev.length - 1]).toEqual(['done', { finishReason: want.finishReason, promptTokens: want.promptTokens, completionTokens: want.completionTokens }]);
  });

  it('refuses a bad body with a 400 naming the field', async () => {
    const r = await post({ prompt: 5 });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { message: string }).message).toMatch(/prompt.*string/);
    const r2 = await post({ prompt: 'x', maxTokens: 0 });
    expect(r2.status).toBe(400);
    expect(((await r2.json()) as { message: string }).message).toMatch(/maxTokens/);
  });

  it('a client that disconnects mid-stream aborts its generation in the Engine', async () => {
    const maxTokens = 480;
    const ac = new AbortController();
    const r = await post({ prompt: 'Once upon a time', maxTokens, ignoreEos: true, temperature: 0.8, seed: 7 }, ac.signal);
    const reader = r.body!.getReader();
    let got = '';
    while (!got.includes('data: ')) {
      const { value, done } = await reader.read();
      if (done) break;
      got += Buffer.from(value).toString();
    }
    expect(got).toMatch(/^data: \{"text":/); // streaming had begun
    ac.abort(); // the client goes away
    await reader.cancel().catch(() => {});
    type Stats = { engine: { running: number; waiting: number; kvBlocksUsed: number }; requests: { finishReason: string; completionTokens: number; maxTokens: number; clientGone: boolean }[] };
    let s: Stats;
    for (let t = 0; ; t++) {
      s = (await (await fetch(`${base}/stats`)).json()) as Stats;
      if (s.requests.some((q) => q.maxTokens === maxTokens) || t > 200) break;
      await new Promise((res) => setTimeout(res, 25));
    }
    const outcome = s.requests.find((q) => q.maxTokens === maxTokens);
    expect(outcome).toMatchObject({ finishReason: 'abort', clientGone: true });
    expect(outcome!.completionTokens).toBeLessThan(maxTokens);
    expect(s.engine).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
  });
});

describe('examples/kernel-bench.ts', () => {
  it.runIf(nativeAvailable)('prints js and cpu side by side for each kernel, cpu agreeing with js', async () => {
    const json = path.join(dir, 'bench.json');
    const r = (await example('kernel-bench.ts', ['--size', 'tiny', '--time', '5', '--json', json]));
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('|'));
    const header = lines[0]!.split('|').map((c) => c.trim());
    expect(header).toContain('js');
    expect(header.some((c) => /^cpu \(/.test(c))).toBe(true);
    expect(header).toContain('speedup');
    const { rows } = JSON.parse(readFileSync(json, 'utf8')) as { rows: { kernel: string; jsMs: number; cpuMs: number; speedup: number; relErr: number }[] };
    expect(lines.length - 2).toBe(rows.length); // header, separator, one line per row
    for (const k of ['linear f32', 'linear q4_0', 'rmsNorm', 'rope', 'flashAttention', 'swiglu', 'softmax']) expect(rows.some((x) => x.kernel.startsWith(k))).toBe(true);
    for (const x of rows) {
      expect(x.jsMs).toBeGreaterThan(0);
      expect(x.cpuMs).toBeGreaterThan(0);
      expect(x.speedup).toBeCloseTo(x.jsMs / x.cpuMs, 6);
      expect(x.relErr).toBeLessThan(1e-5);
      const cells = lines.find((l) => l.startsWith(`| ${x.kernel} `))!.split('|').map((c) => c.trim());
      expect(cells[5]).toBe(`${x.speedup.toFixed(1)}x`);
    }
  }, 120_000);

  it.runIf(!nativeAvailable)('says the native addon is missing', async () => {
    const r = (await example('kernel-bench.ts', ['--size', 'tiny']));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/native addon is not available/);
  });
});

describe('examples/quantize-walkthrough.ts', () => {
  it('charts one bar per quantised projection and method, and GPTQ beats RTN in total', async () => {
    const svg = path.join(dir, 'q.svg'), json = path.join(dir, 'q.json');
    const r = (await example('quantize-walkthrough.ts', ['--samples', '4', '--seq-len', '64', '--eval-tokens', '128', '-o', svg, '--json', json]));
    expect(r.status, r.stderr).toBe(0);
    const text = readFileSync(svg, 'utf8');
    expect(XMLValidator.validate(text)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (n) => ['g', 'rect', 'text', 'line'].includes(n) }).parse(text) as {
      svg: { g: { id: string; rect?: Record<string, string>[] }[] };
    };
    const bars = doc.svg.g.find((g) => g.id === 'bars')!.rect!;
    // The projections a 4-bit GPTQ layout can pack: K (the input width, shape [N, K]) a multiple of 8, read from the GGUF itself.
    const g = readGGUF(bundledModelPath);
    const proj = /^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$/;
    const packable = g.tensors.filter((t) => proj.test(t.name) && t.shape[1]! % 8 === 0).length;
    expect(g.tensors.filter((t) => proj.test(t.name)).length).toBe(35);
    expect(packable).toBe(30); // ffn_down's K = 172 cannot be packed
    const by = (m: string) => bars.filter((b) => b['data-method'] === m);
    expect(by('gptq').length).toBe(packable);
    expect(by('rtn').length).toBe(packable);
    expect(new Set(by('gptq').map((b) => b['data-projection']))).toEqual(new Set(by('rtn').map((b) => b['data-projection'])));
    // The bars draw the JSON's numbers: heights proportional to the values, on one baseline.
    const out = JSON.parse(readFileSync(json, 'utf8')) as { results: { method: string; errors: Record<string, number> }[] };
    const ratio = Number(bars[0]!.height) / Number(bars[0]!['data-value']);
    const baseline = Number(bars[0]!.y) + Number(bars[0]!.height);
    for (const b of bars) {
      const v = out.results.find((x) => x.method === b['data-method'])!.errors[b['data-projection']!]!;
      expect(Number(b['data-value'])).toBe(v);
      expect(Number(b.height) / v).toBeCloseTo(ratio, 0);
      expect(Number(b.y) + Number(b.height)).toBeCloseTo(baseline, 1);
    }
    const total = (m: string) => by(m).reduce((a, b) => a + Number(b['data-value']), 0);
    expect(total('gptq')).toBeLessThanOrEqual(total('rtn'));
  }, 120_000);
});
