/**
 * A service of your own around the Engine: a Fastify app whose POST /generate streams the
 * completion as Server-Sent Events (one `data:` event per text delta, then an `event: done` with
 * the result). A client that disconnects mid-stream aborts its generation at once: the request's
 * AbortSignal reaches the Engine, which stops sampling and frees the request's KV blocks.
 * GET /stats shows that: the Engine's scheduler stats (running, kvBlocksUsed, ...) and how the
 * last requests ended (finishReason 'abort', and how few tokens a disconnected one cost).
 *
 *   npx tsx examples/server-sse.ts [-m MODEL] [--port 8080] [--backend cpu|js]
 *   curl -N localhost:8080/generate -H 'content-type: application/json' -d '{"prompt": "Once upon a time"}'
 *
 * Without -m it serves the model bundled with tessera (stories260K).
 */
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { bundledModelPath, Engine } from 'tessera';

interface GenerateBody {
  prompt: string;
  maxTokens?: number;
  temperature?: number;
  seed?: number;
  ignoreEos?: boolean;
}

/** How a request ended, kept for GET /stats. */
interface Outcome {
  id: number;
  finishReason: string;
  completionTokens: number;
  maxTokens: number;
  /** The client had gone before the generation ended. */
  clientGone: boolean;
  ms: number;
}

// The body is checked by Fastify (400 naming the field) before any work is queued.
const generateSchema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    prompt: { type: 'string', minLength: 1, maxLength: 100_000 },
    maxTokens: { type: 'integer', minimum: 1, maximum: 4096 },
    temperature: { type: 'number', minimum: 0, maximum: 10 },
    seed: { type: 'integer', minimum: 0, maximum: 2 ** 32 - 1 },
    ignoreEos: { type: 'boolean' },
  },
} as const;

export function buildApp(engine: Engine): FastifyInstance {
  // Fastify's default coerces types ({"prompt": 5} would become "5"): refuse them instead.
  const app = Fastify({ ajv: { customOptions: { coerceTypes: false, removeAdditional: false } } });
  const outcomes: Outcome[] = [];
  let nextId = 1;

  app.post<{ Body: GenerateBody }>('/generate', { schema: { body: generateSchema } }, async (req, reply) => {
    const { prompt, maxTokens = 128, temperature = 0.8, seed, ignoreEos } = req.body;
    const id = nextId++;
    const t0 = performance.now();
    // The client's disconnect is the abort: 'close' before the response finished means it left.
    const ac = new AbortController();
    const res = reply.raw;
    const onClose = () => {
      if (!res.writableFinished) ac.abort();
    };
    res.on('close', onClose);
    reply.hijack(); // this handler writes the stream itself
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = async (event: string | null, data: unknown) => {
      if (res.destroyed) return;
      // Slow clients: wait for the socket to drain rather than buffer without bound.
      if (!res.write(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`))
        await new Promise<void>((resolve) => {
          res.once('drain', resolve);
          res.once('close', resolve);
        });
    };
    try {
      const it = engine.stream(prompt, { maxTokens, temperature, seed, ignoreEos, signal: ac.signal });
      let r = await it.next();
      for (; !r.done; r = await it.next()) if (r.value.text) await send(null, { text: r.value.text });
      const result = r.value;
      outcomes.push({ id, finishReason: result.finishReason, completionTokens: result.completionTokens, maxTokens, clientGone: ac.signal.aborted, ms: performance.now() - t0 });
      await send('done', { finishReason: result.finishReason, promptTokens: result.promptTokens, completionTokens: result.completionTokens });
    } catch (err) {
      // Mid-stream the status line is sent already: the error is the stream's last event.
      await send('error', { message: (err as Error).message });
    } finally {
      if (outcomes.length > 100) outcomes.splice(0, outcomes.length - 100);
      res.off('close', onClose);
      if (!res.destroyed) res.end();
    }
  });

  app.get('/stats', async () => ({ engine: await engine.stats(), requests: outcomes }));
  return app;
}

function arg(name: string, short?: string): string | undefined {
  const a = process.argv.slice(2);
  const i = a.findIndex((x) => x === name || (short !== undefined && x === short));
  return i >= 0 ? a[i + 1] : undefined;
}

async function main(): Promise<void> {
  const model = arg('--model', '-m') ?? bundledModelPath;
  const port = Number(arg('--port') ?? 8080);
  const backend = (arg('--backend') ?? 'auto') as 'cpu' | 'js' | 'auto';
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`Expected a port in [0, 65535] for --port but received ${arg('--port')}`);
  const engine = await Engine.load(model, { backend });
  const app = buildApp(engine);
  await app.listen({ host: '127.0.0.1', port });
  const address = app.server.address();
  console.log(`listening on http://127.0.0.1:${typeof address === 'object' && address ? address.port : port} (${engine.info.backend}, ${model})`);
  const stop = async () => {
    await app.close();
    await engine.dispose();
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

// Run as a script (not when a test imports buildApp).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: Error) => {
    console.error(`server-sse: ${err.message}`);
    process.exit(1);
  });
}
