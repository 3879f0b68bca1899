/** `tessera score`: teacher-forced log-probabilities of a completion after a prompt. */
import { existsSync } from 'node:fs';
import { Engine } from '../engine/engine.js';
import { UsageError } from './errors.js';
import { backendName, defaultModelPath, num, parse } from './common.js';

export const SCORE_HELP = `Usage: tessera score [-m FILE] -p PROMPT -c COMPLETION [options]

Prints the log-probability of each token of COMPLETION given PROMPT and the tokens before it
(teacher forcing: the model reads the given text, nothing is sampled), their sum, and the
completion's perplexity exp(-sum / tokens). The text is tokenized as PROMPT + COMPLETION (BOS
first) and split where PROMPT's own tokens end.

Options:
  -m, --model FILE          Model (default: the bundled stories260K)
  -p, --prompt TEXT         Prompt (the condition; not scored)
  -c, --completion TEXT     Completion to score
      --top-logprobs N      Also the N most likely tokens at each position (0-20)
      --prompt-logprobs     Also score the prompt's tokens after the first
      --no-bos              Do not prepend the BOS token
      --json                Print the result as JSON (engine.score's result)
      --backend B           cpu | js | auto (default auto)
  -t, --threads N           Native threads
  -ngl N                    Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help                Show this help
`;

export async function scoreCommand(argv: string[]): Promise<void> {
  const a = parse('score', argv, {
    model: { type: 'string', short: 'm' },
    prompt: { type: 'string', short: 'p' },
    completion: { type: 'string', short: 'c' },
    'top-logprobs': { type: 'string' },
    'prompt-logprobs': { type: 'boolean' },
    'no-bos': { type: 'boolean' },
    json: { type: 'boolean' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  }).values;
  if (a.help) return void process.stdout.write(SCORE_HELP);
  if (a.prompt === undefined) throw new UsageError('missing -p PROMPT (see tessera score --help)');
  if (a.completion === undefined) throw new UsageError('missing -c COMPLETION (see tessera score --help)');
  if (a.completion === '') throw new UsageError('-c COMPLETION is empty: there is nothing to score');
  const model = a.model ?? defaultModelPath();
  if (!existsSync(model)) throw new UsageError(`model file not found: ${model}`);
  const topLogprobs = num(a['top-logprobs'], 'top-logprobs', true, 0, 20);
  const threads = num(a.threads, 'threads', true, 1, 1024);
  const engine = await Engine.load(model, { backend: backendName(a.backend), threads });
  try {
    const r = await engine.score(a.prompt, a.completion, { topLogprobs, promptLogprobs: a['prompt-logprobs'], addBos: !a['no-bos'] });
    if (a.json) return void process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    const lines: string[] = [];
    const table = (title: string, s: { tokens: number[]; pieces: string[]; logprobs: number[]; topLogprobs?: { token: number; logprob: number; text: string }[][] }) => {
      lines.push(title, `${'token'.padStart(8)}  ${'logprob'.padStart(10)}  text${s.topLogprobs ? '  (top alternatives)' : ''}`);
      s.tokens.forEach((t, i) => {
        const top = s.topLogprobs ? '  ' + s.topLogprobs[i]!.map((x) => `${JSON.stringify(x.text)} ${x.logprob.toFixed(4)}`).join(', ') : '';
        lines.push(`${String(t).padStart(8)}  ${s.logprobs[i]!.toFixed(4).padStart(10)}  ${JSON.stringify(s.pieces[i])}${top}`);
      });
    };
    if (r.prompt) table(`prompt (${r.prompt.tokens.length} tokens after the first):`, r.prompt);
    table(`completion (${r.tokens.length} tokens after ${r.promptTokens} prompt tokens):`, r);
    lines.push(`sum logprob = ${r.sum.toFixed(4)}  mean = ${(r.sum / r.tokens.length).toFixed(4)}  ppl = ${Math.exp(-r.sum / r.tokens.length).toFixed(4)}`);
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await engine.dispose();
  }
}
