/** `tessera serve`: the OpenAI-compatible HTTP server. */
import { existsSync, readFileSync } from 'node:fs';
import { Engine } from '../engine/engine.js';
import { createServer } from '../server/server.js';
import { backendName, defaultModelPath, inputFile, num, parse } from './common.js';
import { UsageError } from './errors.js';

export const SERVE_HELP = `Usage: tessera serve [-m FILE] [--host H] [--port P] [options]

Serves the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions and
/v1/completions (streaming with "stream": true), GET /v1/models, /health (503 while loading)
and /metrics (Prometheus). Concurrent requests are batched. Without -m, serves the bundled
stories260K. SIGINT/SIGTERM stop accepting requests, let running ones finish for the grace
period, abort the rest and exit 0.

Options:
  -m, --model FILE          GGUF file, Hugging Face directory or llama2.c .bin
      --host H              Address to listen on (default 127.0.0.1)
      --port P              Port (default 8080; 0 picks a free one)
      --api-key KEY         Require "Authorization: Bearer KEY" (or set TESSERA_API_KEY)
      --model-alias NAME    Model id reported to clients (default: the file name)
      --chat-template FILE  Jinja chat template instead of the model's (needed for chat on
                            models without one)
      --max-sequences N     Requests generating at once (default 64)
      --max-batch-tokens N  Tokens per forward step (default 512)
      --max-queue N         Streams in flight before 429 (default 256)
      --kv-cache-bytes B    KV cache budget in bytes (default 256 MiB)
      --no-prefix-cache     Do not reuse KV of shared prompt prefixes
      --draft-model FILE    Speculative decoding with this draft model (same vocabulary)
      --lookup-ngram N      Speculative decoding by prompt lookup (match up to N last tokens)
      --draft-max K         Most draft tokens per step (default 8)
      --grace-ms MS         Shutdown grace period (default 10000)
      --backend B           cpu | js | auto (default auto)
  -t, --threads N           Native threads
  -ngl, --n-gpu-layers N    Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help                Show this help
`;

function readTemplate(file: string): string {
  return readFileSync(inputFile(file, 'chat template file'), 'utf8');
}

export async function serveCommand(argv: string[]): Promise<void> {
  const { values: a } = parse('serve', argv, {
    model: { type: 'string', short: 'm' }, host: { type: 'string' }, port: { type: 'string' }, 'api-key': { type: 'string' },
    'model-alias': { type: 'string' }, 'chat-template': { type: 'string' }, 'max-sequences': { type: 'string' }, 'max-batch-tokens': { type: 'string' }, 'max-queue': { type: 'string' },
    'kv-cache-bytes': { type: 'string' }, 'no-prefix-cache': { type: 'boolean' },
    'draft-model': { type: 'string' }, 'lookup-ngram': { type: 'string' }, 'draft-max': { type: 'string' }, 'grace-ms': { type: 'string' },
    backend: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (a.help) return void process.stdout.write(SERVE_HELP);
  const file = a.model ?? defaultModelPath();
  if (!existsSync(file)) throw new UsageError(`model file not found: ${file}`);
  const port = num(a.port, 'port', true, 0, 65535) ?? 8080;
  const host = a.host ?? '127.0.0.1';
  const graceMs = num(a['grace-ms'], 'grace-ms', true, 0) ?? 10_000;
  const engineP = Engine.load(file, {
    backend: backendName(a.backend),
    threads: num(a.threads, 'threads', true, 1, 1024),
    maxSequences: num(a['max-sequences'], 'max-sequences', true, 1),
    maxBatchTokens: num(a['max-batch-tokens'], 'max-batch-tokens', true, 16),
    kvCacheBytes: num(a['kv-cache-bytes'], 'kv-cache-bytes', true, 1),
    prefixCaching: !a['no-prefix-cache'],
    draftModel: a['draft-model'],
    lookupNgram: num(a['lookup-ngram'], 'lookup-ngram', true, 1, 16),
    draftMax: num(a['draft-max'], 'draft-max', true, 1, 64),
  });
  const app = createServer(engineP, {
    apiKey: a['api-key'] ?? process.env.TESSERA_API_KEY,
    modelAlias: a['model-alias'],
    chatTemplate: a['chat-template'] === undefined ? undefined : readTemplate(a['chat-template']),
    maxQueue: num(a['max-queue'], 'max-queue', true, 1),
  });
  const address = await app.listen({ host, port });
  process.stderr.write(`tessera: listening on ${address} (loading ${file})\n`);
  let engine: Engine;
  try {
    engine = await engineP;
  } catch (err) {
    await app.close();
    throw err;
  }
  process.stderr.write(`tessera: model loaded (${engine.info.backend}); serving\n`);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`tessera: ${sig}: finishing running requests (up to ${graceMs} ms)\n`);
      void app.drain(graceMs).then(() => app.close()).then(() => engine.dispose()).then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  process.stderr.write('tessera: stopped\n');
}
