/** `tessera perplexity`: perplexity of a text file. */
import { readFileSync } from 'node:fs';
import { perplexity } from '../runtime/perplexity.js';
import { inputFile, MAX_TOKENS, MODEL_OPTIONS, num, openModel, parse, progress } from './common.js';
import { UsageError } from './errors.js';

export const PERPLEXITY_HELP = `Usage: tessera perplexity [-m FILE] -f TEXTFILE [-c N] [--mode chunks|sliding] [--stride S]

Prints the perplexity of the text under the model (default model: the bundled stories260K) as
llama-perplexity does: "Final estimate: PPL = X +/- Y", where Y is the standard error of the mean
per-token negative log-likelihood, sqrt((mean(nll^2) - mean(nll)^2) / (N - 1)), times X.

Modes:
  chunks   (default) llama.cpp's llama-perplexity convention: the tokenized text (BOS first) is
           cut into non-overlapping chunks of --ctx tokens, each chunk starts with BOS, and the
           second half of each chunk is scored. Leftover tokens are dropped.
  sliding  Windows of --ctx tokens every --stride tokens (default ctx/2); every token after the
           first is scored once, with up to ctx - stride tokens of context.

Options:
  -m, --model FILE   GGUF model
  -f, --file FILE    Text file
  -c, --ctx N        Context length (default 512, at most the model's); alias --ctx-size
      --mode M       chunks | sliding
      --stride S     Sliding-window step, below --ctx (default ctx/2)
      --json         Print the result as JSON (ppl, pplError, nll, nllError, scoredTokens, ...)
      --backend B    cpu | js | auto
  -t, --threads N    Native threads
  -ngl N             Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help         Show this help
`;

export function perplexityCommand(argv: string[]): void {
  const { values: a } = parse('perplexity', argv, {
    ...MODEL_OPTIONS,
    file: { type: 'string', short: 'f' },
    ctx: { type: 'string' },
    mode: { type: 'string' },
    stride: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (a.help) return void process.stdout.write(PERPLEXITY_HELP);
  if (!a.file) throw new UsageError('missing -f TEXTFILE (see tessera perplexity --help)');
  inputFile(a.file, 'text file');
  const mode = a.mode ?? 'chunks';
  if (mode !== 'chunks' && mode !== 'sliding') throw new UsageError(`--mode expects chunks or sliding but received '${mode}'`);
  if (a.stride !== undefined && mode !== 'sliding') throw new UsageError('--stride applies to --mode sliding only');
  const ctxOption = num(a.ctx, 'ctx', true, mode === 'chunks' ? 3 : 2, MAX_TOKENS);
  const stride = num(a.stride, 'stride', true, 1, ctxOption === undefined ? MAX_TOKENS : ctxOption - 1);
  const { model, tokenizer } = openModel(a, true);
  const tokens = tokenizer.encode(readFileSync(a.file, 'utf8'), { addBos: true });
  const ctx = ctxOption ?? Math.min(512, model.config.contextLength);
  if (ctx > model.config.contextLength) throw new UsageError(`--ctx ${ctx} exceeds the model's context length ${model.config.contextLength}`);
  if (stride !== undefined && stride >= ctx) throw new UsageError(`--stride ${stride} must be below --ctx ${ctx} (windows overlap by at least one token)`);
  const t0 = performance.now();
  const report = progress(`perplexity ${mode === 'chunks' ? 'chunks' : 'windows'}`);
  const r = perplexity(model, tokens, {
    ctx,
    mode,
    stride,
    bosId: tokenizer.bosId ?? null,
    onProgress: (d, t, ppl) => report(d, t, `ppl ${ppl.toFixed(4)}`),
  });
  const secs = (performance.now() - t0) / 1e3;
  if (a.json) process.stdout.write(JSON.stringify({ ...r, ctx, mode, tokens: tokens.length, seconds: secs }) + '\n');
  else {
    // llama-perplexity's line (it prints none when the spread cannot be estimated, below 2 tokens)
    const estimate = Number.isFinite(r.pplError) ? ` +/- ${r.pplError.toFixed(5)}` : '';
    process.stdout.write(`Final estimate: PPL = ${r.ppl.toFixed(4)}${estimate}\n` +
      `(${mode}, ctx ${ctx}, ${r.scoredTokens} tokens scored in ${r.windows} windows, ${secs.toFixed(1)} s)\n`);
  }
}
