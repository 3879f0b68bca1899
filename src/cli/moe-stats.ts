/** `tessera moe-stats`: expert load per layer and the load-balancing loss of a MoE model over a text. */
import { readFileSync } from 'node:fs';
import { moeStats } from '../runtime/moe-stats.js';
import { inputFile, MODEL_OPTIONS, num, openModel, parse, progress } from './common.js';
import { UsageError } from './errors.js';

export const MOE_STATS_HELP = `Usage: tessera moe-stats -m FILE -f TEXTFILE [--ctx N] [--json]

Runs the text through a mixture-of-experts model (Mixtral-style GGUF) and prints, per MoE layer,
how many token assignments each expert received, the mean router probability per expert, and the
load-balancing loss E * sum_e (assignments_e / T) * meanProb_e (Switch Transformers / Mixtral, as
Hugging Face computes it; k for perfectly uniform routing).

Options:
  -m, --model FILE   MoE model
  -f, --file FILE    Text file
  -c, --ctx N        Tokens per forward window (default 512); alias --ctx-size
      --json         Print JSON
      --backend B    cpu | js | auto
  -t, --threads N    Native threads
  -ngl N             Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help         Show this help
`;

export function moeStatsCommand(argv: string[]): void {
  const { values: a } = parse('moe-stats', argv, { ...MODEL_OPTIONS, file: { type: 'string', short: 'f' }, ctx: { type: 'string' }, json: { type: 'boolean' } });
  if (a.help) return void process.stdout.write(MOE_STATS_HELP);
  if (!a.file) throw new UsageError('missing -f TEXTFILE (see tessera moe-stats --help)');
  inputFile(a.file, 'text file');
  const ctx = num(a.ctx, 'ctx', true, 1);
  const { model, tokenizer } = openModel(a, true);
  if (!model.config.experts) throw new UsageError('the model has no mixture-of-experts layers');
  if (ctx !== undefined && ctx > model.config.contextLength) throw new UsageError(`--ctx ${ctx} exceeds the model's context length ${model.config.contextLength}`);
  const tokens = tokenizer.encode(readFileSync(a.file, 'utf8'), { addBos: true });
  const st = moeStats(model, tokens, { ctx, onProgress: progress('moe-stats windows') });
  if (a.json) return void process.stdout.write(JSON.stringify(st) + '\n');
  const out = [`${st.tokens} tokens, ${st.experts} experts, top-${st.k}`];
  for (const L of st.layers) {
    const total = L.counts.reduce((x, y) => x + y, 0);
    out.push(`layer ${String(L.layer).padStart(2)}  balance loss ${L.balanceLoss.toFixed(4)}  load ${L.counts.map((c) => `${((100 * c) / total).toFixed(1)}%`).join(' ')}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}
