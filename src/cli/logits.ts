/** `tessera logits`: write every position's logits as raw little-endian f32 [n_tokens, vocab]. */
import { PagedKvCache } from '../runtime/kv/cache.js';
import { MODEL_OPTIONS, openModel, parse, writeOutput } from './common.js';
import { UsageError } from './errors.js';
import { forwardTokens } from '../runtime/runner.js';

export const LOGITS_HELP = `Usage: tessera logits [-m FILE] (--tokens 1,2,3 | -p TEXT) --out FILE

Runs the tokens through the model and writes all positions' logits as raw little-endian float32,
shape [n_tokens, vocab], row-major.

Options:
  -m, --model FILE   GGUF model (default: the bundled stories260K)
      --tokens IDS   Comma-separated token ids
  -p, --prompt TEXT  Or a text (tokenized with BOS)
      --out FILE     Output file
      --backend B    cpu | js | auto
  -t, --threads N    Native threads
  -ngl N             Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help         Show this help
`;

export function logitsCommand(argv: string[]): void {
  const { values: a } = parse('logits', argv, { ...MODEL_OPTIONS, tokens: { type: 'string' }, prompt: { type: 'string', short: 'p' }, out: { type: 'string' } });
  if (a.help) return void process.stdout.write(LOGITS_HELP);
  if (!a.out) throw new UsageError('missing --out FILE (see tessera logits --help)');
  if ((a.tokens === undefined) === (a.prompt === undefined)) throw new UsageError('give exactly one of --tokens or -p (see tessera logits --help)');
  const { model, tokenizer } = openModel(a);
  let ids: number[];
  if (a.tokens !== undefined) {
    const parts = a.tokens.split(',').map((s) => s.trim());
    ids = parts.map(Number);
    const bad = parts.findIndex((s, i) => !/^\d+$/.test(s) || ids[i]! >= model.config.vocabSize);
    if (bad >= 0) throw new UsageError(`--tokens must be comma-separated ids in [0, ${model.config.vocabSize}); bad entry '${parts[bad]}'`);
  } else ids = tokenizer.encode(a.prompt!, { addBos: true });
  const c = model.config;
  if (ids.length > c.contextLength) throw new UsageError(`${ids.length} tokens exceed the model's context length ${c.contextLength}`);
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(ids.length / 16) + 1 });
  cache.add(0);
  const logits = forwardTokens(model, cache, 0, Int32Array.from(ids), { allLogits: true }).data as Float32Array;
  writeOutput(a.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
  process.stderr.write(`wrote ${ids.length} x ${c.vocabSize} float32 logits to ${a.out}\n`);
}
