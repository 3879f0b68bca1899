// llama.cpp as the reference the comparison tests share, two ways:
//  - recorded: its outputs on the tests' inputs, committed in test/fixtures/llamacpp/ (<suite>.json,
//    and <suite>.f32 for log-probability rows); these comparisons always run;
//  - live: node-llama-cpp from the peer package (bench/peer, `npm run peer:install`); these run
//    only when it is installed, and then also check that the recorded outputs are still llama.cpp's.
// `npm run peer:fixtures` reruns the comparison tests with TESSERA_RECORD_LLAMACPP=1, which
// rewrites the recorded outputs from the live peer.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, type TestContext } from 'vitest';
import { getLlamaCpp, llamaCppPeerMissing, llamaCppPeerVersion, type LlamaCpp } from '../bench/peer/node-llama-cpp.js';

const FIXTURES = path.resolve(import.meta.dirname, 'fixtures/llamacpp');

/** Why live llama.cpp comparisons are skipped, or null when the peer is installed. */
export const llamaCppMissing = llamaCppPeerMissing();

/** True while `npm run peer:fixtures` rewrites the recorded outputs. */
export const recording = process.env.TESSERA_RECORD_LLAMACPP === '1';
if (recording && llamaCppMissing) throw new Error(`TESSERA_RECORD_LLAMACPP=1 needs llama.cpp: ${llamaCppMissing}`);

/** First line of a live test: skips it, with the reason in the report, when the peer is missing. */
export function needsLlamaCpp(ctx: TestContext): void {
  if (llamaCppMissing) ctx.skip(llamaCppMissing);
}

export interface LlamaCppRunner {
  /** llama.cpp's log-probabilities at every position of `tokens` (F32 KV cache, no flash attention); NaN where it reported none. */
  logProbs(file: string, tokens: number[], vocab: number, contextSize?: number): Promise<Float64Array[]>;
  /**
   * llama-perplexity's convention on consecutive `ctx`-token chunks (first token set to `bosId`,
   * the second half of each chunk scored), llama.cpp's default F16 KV cache.
   */
  perplexity(file: string, tokens: number[], ctx: number, bosId: number): Promise<{ nll: number; scoredTokens: number; ppl: number }>;
}

/** Starts llama.cpp (when the peer is installed) before the file's tests and disposes it after. */
export function useLlamaCpp(): LlamaCppRunner {
  let llama: LlamaCpp | null = null;
  beforeAll(async () => {
    if (llamaCppMissing) console.warn(`live llama.cpp comparisons skipped, recorded outputs only: ${llamaCppMissing}`);
    else llama = await getLlamaCpp();
  }, 120_000);
  afterAll(async () => {
    await llama?.dispose();
  });
  const started = (): LlamaCpp => {
    if (!llama) throw new Error(llamaCppMissing ?? 'llama.cpp is not started');
    return llama;
  };
  return {
    async logProbs(file, tokens, vocab, contextSize = 256) {
      const model = await started().loadModel({ modelPath: file });
      try {
        const ctx = await model.createContext({
          contextSize, flashAttention: false, threads: { ideal: 2, min: 1 }, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
        });
        try {
          const res = await ctx.getSequence().controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]));
          return tokens.map((_, i) => {
            const row = new Float64Array(vocab).fill(Number.NaN);
            for (const [k, p] of res[i]!.next.probabilities!) row[k] = Math.log(p);
            return row;
          });
        } finally {
          await ctx.dispose();
        }
      } finally {
        await model.dispose();
      }
    },
    async perplexity(file, tokens, ctx, bosId) {
      const model = await started().loadModel({ modelPath: file });
      let nll = 0, scoredTokens = 0;
      try {
        for (let i = 0; i < Math.floor(tokens.length / ctx); i++) {
          const chunk = tokens.slice(i * ctx, (i + 1) * ctx);
          chunk[0] = bosId;
          const context = await model.createContext({ contextSize: ctx, flashAttention: false, threads: { ideal: 2, min: 1 } });
          try {
            const res = await context.getSequence().controlledEvaluate(chunk.map((t, j) => (j >= ctx / 2 && j < ctx - 1 ? [t, { generateNext: { probabilities: true } }] : t)));
            for (let j = ctx / 2; j < ctx - 1; j++) {
              nll -= Math.log(res[j]!.next.probabilities!.get(chunk[j + 1]!)!);
              scoredTokens++;
            }
          } finally {
            await context.dispose();
          }
        }
      } finally {
        await model.dispose();
      }
      return { nll, scoredTokens, ppl: Math.exp(nll / scoredTokens) };
    },
  };
}

/** sha256 of a file's bytes: the recorded outputs hold for exactly the file llama.cpp read. */
export function fileSha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** sha256 of a token sequence as little-endian int32. */
export function tokensSha256(tokens: ArrayLike<number>): string {
  return createHash('sha256').update(new Uint8Array(Int32Array.from(tokens).buffer)).digest('hex');
}

/** The positions whose rows are recorded: four, evenly spaced, ending at the last (files stay small). */
export function recordedPositions(n: number): number[] {
  return [...new Set([1, 2, 3, 4].map((k) => Math.round((k * (n - 1)) / 4)))];
}

interface RowsCase { kind: 'logProbs'; sha256: string; vocab: number; tokens: number[]; positions: number[]; offset: number }
interface ValuesCase { kind: 'values'; sha256: string; values: Record<string, number | string> }
type RecordedCase = RowsCase | ValuesCase;

interface SuiteFile {
  about: string;
  nodeLlamaCpp: string;
  regenerate: string;
  cases: Record<string, RecordedCase>;
}

/**
 * llama.cpp's recorded outputs for one test file: test/fixtures/llamacpp/<suite>.json (inputs'
 * hashes, tokens, positions, scalar results) and <suite>.f32 (log-probability rows, little-endian
 * f32, `vocab` values per recorded position, NaN where llama.cpp reported no probability).
 */
export class LlamaCppReference {
  private readonly json: string;
  private readonly bin: string;
  private readonly cases: Record<string, RecordedCase> = {};
  /** Every case's rows, concatenated (while recording, what has been recorded so far). */
  private rows: Float32Array = new Float32Array(0);

  constructor(readonly suite: string) {
    this.json = path.join(FIXTURES, `${suite}.json`);
    this.bin = path.join(FIXTURES, `${suite}.f32`);
    if (recording) {
      afterAll(() => this.save());
      return;
    }
    if (!existsSync(this.json)) return;
    this.cases = (JSON.parse(readFileSync(this.json, 'utf8')) as SuiteFile).cases;
    if (existsSync(this.bin)) {
      const b = readFileSync(this.bin);
      this.rows = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  }

  private get(name: string, file: string): RecordedCase {
    const c = this.cases[name];
    if (!c) throw new Error(`test/fixtures/llamacpp/${this.suite}.json has no case '${name}': record it with \`npm run peer:fixtures\` (needs \`npm run peer:install\`)`);
    const sha = fileSha256(file);
    if (sha !== c.sha256)
      throw new Error(`${path.basename(file)} is not the file llama.cpp's outputs for '${name}' were recorded from (sha256 ${sha}, recorded ${c.sha256}): ` +
        'if the change is intended, record them again with `npm run peer:fixtures`');
    return c;
  }

  /** Recorded log-probability rows at `positions` (see recordedPositions) for `tokens` through `file`. */
  logProbs(name: string, file: string, tokens: number[]): { positions: number[]; rows: Float64Array[] } {
    const c = this.get(name, file);
    if (c.kind !== 'logProbs') throw new Error(`case '${name}' holds values, not log-probabilities`);
    expect(tokens, `tokens of '${name}' differ from the recorded ones: record again with \`npm run peer:fixtures\``).toEqual(c.tokens);
    const rows = c.positions.map((_, i) => Float64Array.from(this.rows.subarray(c.offset + i * c.vocab, c.offset + (i + 1) * c.vocab)));
    return { positions: c.positions, rows };
  }

  /** Recorded scalar results for `file`. */
  values(name: string, file: string): Record<string, number | string> {
    const c = this.get(name, file);
    if (c.kind !== 'values') throw new Error(`case '${name}' holds log-probabilities, not values`);
    return c.values;
  }

  /** While recording: keeps llama.cpp's rows (all positions of `tokens`) at recordedPositions. */
  recordLogProbs(name: string, file: string, tokens: number[], rows: Float64Array[]): void {
    if (!recording) return;
    const vocab = rows[0]!.length;
    const positions = recordedPositions(tokens.length);
    const offset = this.rows.length;
    const grown = new Float32Array(offset + positions.length * vocab);
    grown.set(this.rows);
    positions.forEach((p, i) => grown.set(rows[p]!, offset + i * vocab));
    this.rows = grown;
    this.cases[name] = { kind: 'logProbs', sha256: fileSha256(file), vocab, tokens: [...tokens], positions, offset };
  }

  /** While recording: keeps llama.cpp's scalar results for `file`. */
  recordValues(name: string, file: string, values: Record<string, number | string>): void {
    if (recording) this.cases[name] = { kind: 'values', sha256: fileSha256(file), values };
  }

  private save(): void {
    mkdirSync(FIXTURES, { recursive: true });
    const out: SuiteFile = {
      about: `llama.cpp's outputs (node-llama-cpp ${llamaCppPeerVersion}, prebuilt CPU binaries) on the inputs of test/${this.suite}.test.ts${this.rows.length ? `; log-probability rows in ${this.suite}.f32` : ''}`,
      nodeLlamaCpp: llamaCppPeerVersion,
      regenerate: 'npm run peer:install && npm run peer:fixtures',
      cases: this.cases,
    };
    // One line per case: the file diffs case by case when it is recorded again.
    const cases = Object.entries(out.cases).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n');
    const head = JSON.stringify({ ...out, cases: {} }, null, 1).replace(/"cases": \{\}\n\}$/, '');
    writeFileSync(this.json, `${head}"cases": {\n${cases}\n }\n}\n`);
    if (this.rows.length) writeFileSync(this.bin, new Uint8Array(this.rows.buffer, 0, this.rows.byteLength));
  }
}
