/** `tessera eval`: corpus BLEU and ROUGE-L of generated (or given) hypotheses against references. */
import { existsSync, readFileSync } from 'node:fs';
import { Engine } from '../engine/engine.js';
import { corpusBleu, type BleuScore } from '../eval/bleu.js';
import { corpusRougeL } from '../eval/rouge.js';
import { UsageError } from './errors.js';
import { backendName, defaultModelPath, inputFile, MAX_TOKENS, num, parse } from './common.js';

export const EVAL_HELP = `Usage: tessera eval [-m FILE] --refs FILE (--prompts FILE | --hyp FILE) [options]

Generates a hypothesis for each line of --prompts (batched; greedy unless --temperature) or reads
them from --hyp (then no model is loaded), and scores them against the references, line by line:
  BLEU     corpus BLEU as sacreBLEU computes it (13a tokenisation, 4-grams, brevity penalty,
           'exp' smoothing; the signature is printed)
  ROUGE-L  mean F-measure (and precision, recall) of the longest common subsequence, as Google's
           rouge-score with its default tokenizer (lowercase, non-alphanumerics are spaces),
           without and with Porter stemming (use_stemmer=True, NLTK's stemmer); with several
           --refs, the best reference per line counts

Files hold one segment per line (UTF-8; a final newline is optional). A generated hypothesis is
the generated text alone (not the prompt), its newlines turned into spaces. Every file must have
the same number of lines.

Options:
  -m, --model FILE          Model for --prompts (default: the bundled stories260K)
      --refs FILE           References (repeat for several reference streams)
      --prompts FILE        Prompts to generate hypotheses from
      --hyp FILE            Or the hypotheses themselves
  -n, --max-tokens N        Tokens to generate per prompt (default 64)
      --temperature T       0 = greedy (default 0)
  -s, --seed S              RNG seed when sampling
      --stop STR            Stop generating before STR (repeatable)
      --lowercase           Lowercased BLEU (sacreBLEU -lc)
      --json                Print scores (and generated hypotheses) as JSON
      --backend B           cpu | js | auto (default auto)
  -t, --threads N           Native threads
  -ngl N                    Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help                Show this help
`;

/** A file's lines (one segment each): CRLF or LF, a final newline does not add an empty line. */
export function readLines(file: string, what: string): string[] {
  const text = readFileSync(inputFile(file, what), 'utf8');
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** sacreBLEU's one-line summary. */
export function formatBleu(b: BleuScore): string {
  const f = (x: number, d: number) => x.toFixed(d);
  return `BLEU = ${f(b.score, 2)} ${b.precisions.map((p) => f(p, 1)).join('/')} (BP = ${f(b.bp, 3)} ratio = ${f(b.ratio, 3)} hyp_len = ${b.sysLen} ref_len = ${b.refLen})`;
}

export async function evalCommand(argv: string[]): Promise<void> {
  const a = parse('eval', argv, {
    model: { type: 'string', short: 'm' },
    refs: { type: 'string', multiple: true },
    prompts: { type: 'string' },
    hyp: { type: 'string' },
    'max-tokens': { type: 'string', short: 'n' },
    temperature: { type: 'string' },
    seed: { type: 'string' },
    stop: { type: 'string', multiple: true },
    lowercase: { type: 'boolean' },
    json: { type: 'boolean' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  }).values;
  if (a.help) return void process.stdout.write(EVAL_HELP);
  if (!a.refs?.length) throw new UsageError('missing --refs FILE (see tessera eval --help)');
  if ((a.prompts === undefined) === (a.hyp === undefined)) throw new UsageError('give exactly one of --prompts FILE (generate) or --hyp FILE (see tessera eval --help)');
  const generating = a.prompts !== undefined;
  for (const [flag, set] of [['-m', a.model], ['-n', a['max-tokens']], ['--temperature', a.temperature], ['--seed', a.seed], ['--stop', a.stop], ['--backend', a.backend], ['-t', a.threads]] as const)
    if (!generating && set !== undefined) throw new UsageError(`${flag} applies to --prompts (generation); with --hyp nothing is generated`);
  const maxTokens = num(a['max-tokens'], 'max-tokens', true, 1, MAX_TOKENS) ?? 64;
  const temperature = num(a.temperature, 'temperature', false, 0) ?? 0;
  const seed = num(a.seed, 'seed', true, 0, 2 ** 32 - 1);
  const threads = num(a.threads, 'threads', true, 1, 1024);
  const refs = a.refs.map((f) => readLines(f, '--refs file'));
  const source = generating ? readLines(a.prompts!, '--prompts file') : readLines(a.hyp!, '--hyp file');
  const sourceFlag = generating ? `--prompts ${a.prompts}` : `--hyp ${a.hyp}`;
  if (source.length === 0) throw new UsageError(`${sourceFlag} has no lines`);
  refs.forEach((r, i) => {
    if (r.length !== source.length) throw new UsageError(`--refs ${a.refs![i]} has ${r.length} lines but ${sourceFlag} has ${source.length}; they must pair line by line`);
  });
  let hyps = source;
  if (generating) {
    const model = a.model ?? defaultModelPath();
    if (!existsSync(model)) throw new UsageError(`model file not found: ${model}`);
    const engine = await Engine.load(model, { backend: backendName(a.backend), threads });
    try {
      // All at once: the engine's scheduler batches them.
      const results = await Promise.all(source.map((p, i) => engine.generate(p, { maxTokens, temperature, seed: seed === undefined ? undefined : seed + i, stop: a.stop })));
      hyps = results.map((r) => r.text.replace(/\r?\n/g, ' ').trim());
    } finally {
      await engine.dispose();
    }
  }
  const bleu = corpusBleu(hyps, refs, { lowercase: a.lowercase });
  const targets = refs.length === 1 ? refs[0]! : hyps.map((_, i) => refs.map((r) => r[i]!));
  const mean = (stem: boolean) => {
    const { precision, recall, fmeasure } = corpusRougeL(targets, hyps, { stem });
    return { precision, recall, fmeasure };
  };
  const rouge = mean(false), stemmed = mean(true);
  if (a.json)
    return void process.stdout.write(JSON.stringify({ segments: hyps.length, bleu, rougeL: rouge, rougeLStemmed: stemmed, ...(generating ? { hypotheses: hyps } : {}) }, null, 2) + '\n');
  const line = (r: typeof rouge) => `F = ${(100 * r.fmeasure).toFixed(2)} (P = ${(100 * r.precision).toFixed(2)} R = ${(100 * r.recall).toFixed(2)})`;
  process.stdout.write([
    `${hyps.length} segments, ${refs.length} reference stream${refs.length > 1 ? 's' : ''}`,
    formatBleu(bleu),
    `  signature: ${bleu.signature}`,
    `ROUGE-L ${line(rouge)}  rouge-score default tokenizer`,
    `ROUGE-L ${line(stemmed)}  with Porter stemming`,
  ].join('\n') + '\n');
}
