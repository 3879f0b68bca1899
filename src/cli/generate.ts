/** `tessera generate`: stream a completion of a prompt to stdout. */
import { existsSync } from 'node:fs';
import { Engine } from '../engine/engine.js';
import { UsageError } from './errors.js';
import { backendName, defaultModelPath, MAX_TOKENS, num, parse, progress } from './common.js';

export const GENERATE_HELP = `Usage: tessera generate [-m FILE] [-p TEXT] [options]

Streams a completion of the prompt to stdout. Without -m, uses the small model shipped with
tessera (stories260K, a 260K-parameter Llama trained on TinyStories; MIT).

Options:
  -m, --model FILE          GGUF file (llama/Mixtral, mistral, qwen2), Hugging Face directory
                            (config.json + safetensors + tokenizer.json) or llama2.c .bin
  -p, --prompt TEXT         Prompt text (default: "Once upon a time")
  -n, --max-tokens N        Tokens to generate (default 128)
      --temperature T       0 = greedy (default 0.8); alias --temp
      --top-k K             Keep the K most likely tokens, 0 = off (default 40)
      --top-p P             Nucleus sampling threshold, 1 = off (default 0.95)
      --min-p P             Drop tokens below P x the top probability (default 0.05)
      --repeat-penalty R    Repetition penalty over the last 64 tokens (default 1 = off)
      --presence-penalty X  (default 0)
      --frequency-penalty X (default 0)
  -s, --seed S              RNG seed for reproducible sampling (default random)
      --beams B             Beam search with B beams (deterministic; sampling options ignored;
                            the best beam is printed when the search ends)
      --length-penalty X    Beam search length normalisation exponent (default 1)
      --draft-model FILE    Speculative decoding with this draft model (same vocabulary)
      --lookup-ngram N      Speculative decoding by prompt lookup (match up to N last tokens)
      --draft-max K         Most draft tokens per step (default 8; k adapts within 1..K)
      --stop STR            Stop before STR (repeatable)
      --ignore-eos          Keep generating past end-of-sequence
      --no-bos              Do not prepend the BOS token
      --backend B           cpu | js | auto (default auto)
  -t, --threads N           Native threads (default: available cores)
  -ngl, --n-gpu-layers N    Accepted for llama.cpp habits and ignored (no per-layer offload)
  -v, --verbose             Print load progress and timing to stderr
  -h, --help                Show this help
`;


export async function generateCommand(argv: string[]): Promise<void> {
  const a = parse('generate', argv, {
        model: { type: 'string', short: 'm' },
        prompt: { type: 'string', short: 'p' },
        'max-tokens': { type: 'string', short: 'n' },
        temperature: { type: 'string' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        'min-p': { type: 'string' },
        'repeat-penalty': { type: 'string' },
        'presence-penalty': { type: 'string' },
        'frequency-penalty': { type: 'string' },
        seed: { type: 'string' },
        beams: { type: 'string' },
        'length-penalty': { type: 'string' },
        stop: { type: 'string', multiple: true },
        'draft-model': { type: 'string' },
        'lookup-ngram': { type: 'string' },
        'draft-max': { type: 'string' },
        'ignore-eos': { type: 'boolean' },
        'no-bos': { type: 'boolean' },
        backend: { type: 'string' },
        threads: { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
  }).values;
  if (a.help) return void process.stdout.write(GENERATE_HELP);
  const model = a.model ?? defaultModelPath();
  if (!existsSync(model)) throw new UsageError(`model file not found: ${model}`);
  const backend = backendName(a.backend);
  const prompt = a.prompt ?? 'Once upon a time';
  const verbose = a.verbose ?? false;
  // Every number is checked before the model loads, with the option's name in the message.
  const sampling = {
    maxTokens: num(a['max-tokens'], 'max-tokens', true, 0, MAX_TOKENS) ?? 128,
    temperature: num(a.temperature, 'temperature', false, 0),
    topK: num(a['top-k'], 'top-k', true, 0),
    topP: num(a['top-p'], 'top-p', false, 0, 1),
    minP: num(a['min-p'], 'min-p', false, 0, 1),
    repetitionPenalty: num(a['repeat-penalty'], 'repeat-penalty', false, Number.MIN_VALUE),
    presencePenalty: num(a['presence-penalty'], 'presence-penalty'),
    frequencyPenalty: num(a['frequency-penalty'], 'frequency-penalty'),
    seed: num(a.seed, 'seed', true, 0, 2 ** 32 - 1),
    beams: num(a.beams, 'beams', true, 1, 64),
    lengthPenalty: num(a['length-penalty'], 'length-penalty'),
  };
  const threads = num(a.threads, 'threads', true, 1, 1024);
  const draftMax = num(a['draft-max'], 'draft-max', true, 1, 64);
  const lookupNgram = num(a['lookup-ngram'], 'lookup-ngram', true, 1, 16);
  if (a['draft-model'] !== undefined && !existsSync(a['draft-model'])) throw new UsageError(`draft model file not found: ${a['draft-model']}`);
  if (draftMax !== undefined && a['draft-model'] === undefined && lookupNgram === undefined)
    throw new UsageError('--draft-max needs --draft-model or --lookup-ngram');
  const t0 = performance.now();
  const engine = await Engine.load(model, {
    backend,
    threads,
    draftModel: a['draft-model'],
    lookupNgram,
    draftMax,
    onProgress: verbose ? progress('loading tensors') : undefined,
  });
  if (verbose) process.stderr.write(`loaded ${model} (${engine.info.config.architecture}, ${engine.info.backend} backend) in ${((performance.now() - t0) / 1e3).toFixed(2)} s\n`);
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    process.stdout.write(prompt);
    const t1 = performance.now();
    const it = engine.stream(prompt, {
      ...sampling,
      stop: a.stop,
      ignoreEos: a['ignore-eos'],
      addBos: !a['no-bos'],
      signal: ac.signal,
    });
    let r;
    while (!(r = await it.next()).done) process.stdout.write(r.value.text);
    process.stdout.write('\n');
    if (verbose) {
      const s = (performance.now() - t1) / 1e3;
      process.stderr.write(`${r.value.completionTokens} tokens in ${s.toFixed(2)} s (${(r.value.completionTokens / s).toFixed(1)} tok/s incl. prompt), finish: ${r.value.finishReason}\n`);
      const sp = r.value.speculation;
      if (sp) process.stderr.write(`speculative: ${sp.accepted} of ${sp.proposed} draft tokens accepted (${sp.proposed ? ((100 * sp.accepted) / sp.proposed).toFixed(1) : '0'}%)\n`);
    }
  } finally {
    process.off('SIGINT', onSigint);
    await engine.dispose();
  }
}
