/**
 * An OpenAI-compatible HTTP server on the Engine (fastify; Prometheus metrics with prom-client):
 * POST /v1/chat/completions and /v1/completions (streaming as server-sent events), GET /v1/models,
 * /health and /metrics. Every request is one or more engine streams, so concurrent clients are
 * batched by the Engine's scheduler. A client that disconnects aborts its streams at once.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, EngineGenerateOptions, GenerateResult } from '../engine/engine.js';
import type { ChatMessage, Prompt } from '../engine/protocol.js';
import { chatSchema, completionSchema } from './schema.js';

export interface ServerOptions {
  /** Require `Authorization: Bearer <apiKey>` on /v1 routes. */
  apiKey?: string;
  /** The model id clients see (default: the model file's name). */
  modelAlias?: string;
  /** Generation streams in flight (running or queued) before new requests get 429. Default 256. */
  maxQueue?: number;
  /** A Jinja chat template to use instead of the model's (models without one need it for chat). */
  chatTemplate?: string;
  /** Largest request body in bytes (413 beyond). Default 4 MiB. */
  bodyLimit?: number;
}

/** The OpenAI error shape. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly type = 'invalid_request_error', readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

interface Body {
  model?: string;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  logprobs?: boolean | number | null;
  top_logprobs?: number | null;
  messages?: { role: string; content: string | { type: 'text'; text: string }[] }[];
  prompt?: string | number[];
}

type Delta = { text: string; token: number | null; logprob: number | null; tokenText?: string; topLogprobs?: { token: number; logprob: number; text?: string }[] };

const finishReason = (r: string) => (r === 'stop' ? 'stop' : 'length');
const bytes = (s: string) => Array.from(Buffer.from(s, 'utf8'));

function sameKey(given: string, want: string): boolean {
  const a = createHash('sha256').update(given).digest(), b = createHash('sha256').update(want).digest();
  return timingSafeEqual(a, b);
}

/** Builds the server; call `.listen({ host, port })` on the result. `engine` may still be loading (health is 503 until it resolves). */
export function createServer(engine: Engine | Promise<Engine>, options: ServerOptions = {}): FastifyInstance {
  const maxQueue = options.maxQueue ?? 256;
  if (!Number.isInteger(maxQueue) || maxQueue < 1) throw new RangeError(`Expected a positive integer for maxQueue but received ${options.maxQueue}`);
  const app = Fastify({
    bodyLimit: options.bodyLimit ?? 4 * 2 ** 20,
    // Refuse what the schema does not know instead of dropping it; no type coercion.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    forceCloseConnections: false,
  });
  let ready: Engine | null = null;
  let loadError: Error | null = null;
  Promise.resolve(engine).then((e) => (ready = e), (err: Error) => (loadError = err));
  const created = Math.floor(Date.now() / 1000);
  let inFlight = 0;
  const streams = new Set<AbortController>();
  let draining = false;

  // ---- metrics ----
  const registry = new Registry();
  const requests = new Counter({ name: 'tessera_requests_total', help: 'HTTP requests by endpoint and status', labelNames: ['endpoint', 'status'], registers: [registry] });
  const promptTokens = new Counter({ name: 'tessera_prompt_tokens_total', help: 'Prompt tokens processed', registers: [registry] });
  const completionTokens = new Counter({ name: 'tessera_completion_tokens_total', help: 'Tokens generated', registers: [registry] });
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers: [registry] });
  const running = gauge('tessera_running_sequences', 'Requests generating now');
  const waiting = gauge('tessera_waiting_sequences', 'Requests queued in the scheduler');
  const kvUsed = gauge('tessera_kv_blocks_used', 'KV cache blocks referenced by a sequence');
  const kvFree = gauge('tessera_kv_blocks_free', 'KV cache blocks holding nothing');
  const kvCached = gauge('tessera_kv_blocks_cached', 'Unreferenced KV blocks kept for prefix reuse');
  const hitRate = gauge('tessera_prefix_cache_hit_rate', 'Prompt tokens served from the prefix cache / prompt tokens');
  const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
  const ttft = new Histogram({ name: 'tessera_time_to_first_token_seconds', help: 'Time from request to first token', buckets, registers: [registry] });
  const itl = new Histogram({ name: 'tessera_inter_token_latency_seconds', help: 'Time between consecutive tokens of a stream', buckets, registers: [registry] });

  const modelId = () => options.modelAlias ?? (ready ? ready.info.path.split(/[\\/]/).pop()! : 'tessera');
  const errorBody = (e: ApiError) => ({ error: { message: e.message, type: e.type, param: e.param, code: e.code } });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err.validation) {
      const v = err.validation[0]!;
      const p = v.params as { missingProperty?: string; additionalProperty?: string };
      const field = (v.instancePath || '').replace(/^\//, '').replace(/\//g, '.');
      const param = p.additionalProperty ? (field ? `${field}.` : '') + p.additionalProperty : p.missingProperty ? (field ? `${field}.` : '') + p.missingProperty : field || null;
      const msg = p.additionalProperty
        ? `Unrecognized or unsupported request argument: ${param}`
        : `Invalid value for '${param ?? 'body'}': ${v.message}`;
      e = new ApiError(400, msg, 'invalid_request_error', param, p.additionalProperty ? 'unsupported_parameter' : 'invalid_value');
    } else if (err.statusCode === 413) e = new ApiError(413, `Request body too large (limit ${app.initialConfig.bodyLimit} bytes)`, 'invalid_request_error', null, 'body_too_large');
    else if (err.statusCode && err.statusCode < 500) e = new ApiError(err.statusCode, err.message);
    else e = new ApiError(500, `Internal error: ${err.message}`, 'server_error');
    requests.inc({ endpoint: req.routeOptions.url ?? 'unknown', status: String(e.status) });
    void reply.status(e.status).send(errorBody(e));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send(errorBody(new ApiError(404, `Unknown route ${req.method} ${req.url}`, 'invalid_request_error', null, 'not_found')));
  });

  app.addHook('onRequest', async (req) => {
    if (!req.url.startsWith('/v1/')) return;
    if (draining) throw new ApiError(503, 'The server is shutting down', 'server_error', null, 'shutting_down');
    if (options.apiKey === undefined) return;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(h);
    if (!m || !sameKey(m[1]!, options.apiKey)) throw new ApiError(401, 'Incorrect or missing API key', 'invalid_request_error', null, 'invalid_api_key');
  });

  const needEngine = (): Engine => {
    if (loadError) throw new ApiError(503, `The model failed to load: ${loadError.message}`, 'server_error');
    if (!ready) throw new ApiError(503, 'The model is still loading', 'server_error', null, 'loading');
    return ready;
  };

  app.get('/health', async (_req, reply) => {
    if (loadError) return reply.status(503).send({ status: 'error', message: loadError.message });
    if (!ready) return reply.status(503).send({ status: 'loading' });
    return { status: 'ok' };
  });

  app.get('/metrics', async (_req, reply) => {
    if (ready) {
      const s = await ready.stats();
      running.set(s.running);
      waiting.set(s.waiting);
      kvUsed.set(s.kvBlocksUsed);
      kvFree.set(s.kvBlocksFree);
      kvCached.set(s.kvBlocksCached);
      hitRate.set(s.prefixHitRate);
    }
    return reply.header('content-type', registry.contentType).send(await registry.metrics());
  });

  app.get('/v1/models', async () => {
    needEngine();
    return { object: 'list', data: [{ id: modelId(), object: 'model', created, owned_by: 'tessera' }] };
  });

  /** Engine options from the body (OpenAI defaults: temperature 1, top_p 1, no top-k / min-p). */
  function engineOptions(b: Body, e: Engine, chat: boolean): EngineGenerateOptions & { tokenTexts?: boolean } {
    const max = b.max_completion_tokens ?? b.max_tokens;
    const topLogprobs = chat ? (b.logprobs ? b.top_logprobs ?? 0 : 0) : typeof b.logprobs === 'number' ? b.logprobs : 0;
    if (chat && b.top_logprobs && !b.logprobs) throw new ApiError(400, "'top_logprobs' requires 'logprobs': true", 'invalid_request_error', 'top_logprobs', 'invalid_value');
    return {
      maxTokens: max ?? (chat ? e.info.config.contextLength : 16),
      temperature: b.temperature ?? 1,
      topP: b.top_p ?? 1,
      topK: b.top_k ?? 0,
      minP: b.min_p ?? 0,
      presencePenalty: b.presence_penalty ?? 0,
      frequencyPenalty: b.frequency_penalty ?? 0,
      repetitionPenalty: b.repetition_penalty ?? 1,
      seed: b.seed ?? undefined,
      stop: typeof b.stop === 'string' ? [b.stop] : b.stop ?? undefined,
      topLogprobs,
      tokenTexts: (chat && !!b.logprobs) || (!chat && b.logprobs !== undefined && b.logprobs !== null),
    };
  }

  function toError(err: unknown): ApiError {
    const e = err as Error;
    if (e instanceof ApiError) return e;
    if (/context length/.test(e.message)) return new ApiError(400, e.message, 'invalid_request_error', 'messages', 'context_length_exceeded');
    if (e.name === 'RangeError' || e.name === 'TypeError') return new ApiError(400, e.message, 'invalid_request_error');
    if (e.name === 'KvCacheFullError') return new ApiError(503, e.message, 'server_error', null, 'kv_cache_full');
    return new ApiError(500, e.message, 'server_error');
  }

  async function handle(req: FastifyRequest, reply: FastifyReply, chat: boolean): Promise<void> {
    const e = needEngine();
    const b = req.body as Body;
    const endpoint = chat ? '/v1/chat/completions' : '/v1/completions';
    const n = b.n ?? 1;
    if (inFlight + n > maxQueue) throw new ApiError(429, `Too many requests in flight (${inFlight}; limit ${maxQueue}); retry later`, 'rate_limit_error', null, 'queue_full');
    const prompt: Prompt = chat
      ? { messages: b.messages!.map((m) => ({ role: m.role, content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('') }) as ChatMessage), template: options.chatTemplate }
      : b.prompt!;
    const opts = engineOptions(b, e, chat);
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const model = b.model ?? modelId();
    const ac = new AbortController();
    streams.add(ac);
    const onClose = () => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.on('close', onClose);
    inFlight += n;
    const t0 = performance.now();
    /** The usage of the finished choices, counted in the metrics with the request's status. */
    const finished = (results: GenerateResult[], status: string) => {
      const usage = usageOf(results);
      promptTokens.inc(usage.prompt_tokens);
      completionTokens.inc(usage.completion_tokens);
      requests.inc({ endpoint, status });
      return usage;
    };
    // One engine stream per choice; seeds differ per choice so n samples differ.
    const runChoice = async (i: number, onDelta: (d: Delta) => void): Promise<GenerateResult> => {
      const it = e.stream(prompt, { ...opts, seed: opts.seed === undefined ? undefined : (opts.seed + i) >>> 0, signal: ac.signal } as EngineGenerateOptions);
      let last = 0;
      for (;;) {
        const r = await it.next();
        if (r.done) return r.value;
        const d = r.value as Delta;
        if (d.token !== null) {
          const now = performance.now();
          if (last === 0) ttft.observe((now - t0) / 1e3);
          else itl.observe((now - last) / 1e3);
          last = now;
        }
        onDelta(d);
      }
    };
    try {
      if (!b.stream) {
        const deltas: Delta[][] = Array.from({ length: n }, () => []);
        const results = await Promise.all(Array.from({ length: n }, (_, i) => runChoice(i, (d) => deltas[i]!.push(d))));
        const usage = finished(results, '200');
        const choices = results.map((r, i) => chat
          ? { index: i, message: { role: 'assistant', content: r.text }, logprobs: b.logprobs ? { content: chatLogprobs(deltas[i]!) } : null, finish_reason: finishReason(r.finishReason) }
          : { index: i, text: r.text, logprobs: opts.tokenTexts ? completionLogprobs(deltas[i]!) : null, finish_reason: finishReason(r.finishReason) });
        await reply.send({ id, object: chat ? 'chat.completion' : 'text_completion', created: Math.floor(Date.now() / 1000), model, choices, usage });
        return;
      }
      // Streaming: the first chunk waits for the first delta, so errors before it (bad prompt) are plain HTTP errors.
      let started = false;
      const head = () => {
        if (started) return;
        started = true;
        reply.hijack();
        reply.raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      };
      const write = (obj: unknown) => {
        head();
        if (!reply.raw.destroyed) reply.raw.write(`data: ${JSON.stringify(obj)}\n\n`);
      };
      const chunk = (choices: unknown[], extra: object = {}) =>
        ({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: Math.floor(Date.now() / 1000), model, choices, ...extra });
      const sentRole = new Set<number>();
      const results = await Promise.all(Array.from({ length: n }, (_, i) => runChoice(i, (d) => {
        if (!d.text && d.token === null) return;
        if (chat) {
          const delta: Record<string, string> = { content: d.text };
          if (!sentRole.has(i)) (sentRole.add(i), (delta.role = 'assistant'));
          write(chunk([{ index: i, delta, logprobs: b.logprobs && d.token !== null ? { content: chatLogprobs([d]) } : null, finish_reason: null }]));
        } else write(chunk([{ index: i, text: d.text, logprobs: opts.tokenTexts && d.token !== null ? completionLogprobs([d]) : null, finish_reason: null }]));
      }).then((r) => {
        if (r.finishReason !== 'abort')
          write(chunk([chat ? { index: i, delta: sentRole.has(i) ? {} : { role: 'assistant', content: '' }, logprobs: null, finish_reason: finishReason(r.finishReason) }
            : { index: i, text: '', logprobs: null, finish_reason: finishReason(r.finishReason) }]));
        return r;
      })));
      const usage = finished(results, ac.signal.aborted ? 'aborted' : '200');
      if (b.stream_options?.include_usage) write(chunk([], { usage }));
      head();
      if (!reply.raw.destroyed) reply.raw.end('data: [DONE]\n\n');
    } catch (err) {
      const apiErr = toError(err);
      if (reply.sent || reply.raw.headersSent) {
        // Mid-stream: report in the stream, then end it.
        if (!reply.raw.destroyed) reply.raw.end(`data: ${JSON.stringify(errorBody(apiErr))}\n\ndata: [DONE]\n\n`);
        requests.inc({ endpoint, status: String(apiErr.status) });
        return;
      }
      throw apiErr;
    } finally {
      inFlight -= n;
      streams.delete(ac);
      reply.raw.off('close', onClose);
    }
  }

  app.post('/v1/chat/completions', { schema: { body: chatSchema } }, (req, reply) => handle(req, reply, true));
  app.post('/v1/completions', { schema: { body: completionSchema } }, (req, reply) => handle(req, reply, false));

  /** Stops accepting requests; aborts streams still running after `graceMs`; resolves when all are done. */
  app.decorate('drain', async (graceMs = 10_000) => {
    draining = true;
    const deadline = Date.now() + graceMs;
    while (streams.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const ac of streams) ac.abort();
    while (streams.size) await new Promise((r) => setTimeout(r, 10));
  });
  return app;
}

function usageOf(results: GenerateResult[]) {
  const prompt = results[0]?.promptTokens ?? 0;
  const completion = results.reduce((a, r) => a + r.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function chatLogprobs(ds: Delta[]) {
  return ds.filter((d) => d.token !== null).map((d) => ({
    token: d.tokenText ?? d.text,
    logprob: d.logprob,
    bytes: bytes(d.tokenText ?? d.text),
    top_logprobs: (d.topLogprobs ?? []).map((t) => ({ token: t.text ?? '', logprob: t.logprob, bytes: bytes(t.text ?? '') })),
  }));
}

function completionLogprobs(ds: Delta[]) {
  const toks = ds.filter((d) => d.token !== null);
  let offset = 0;
  return {
    tokens: toks.map((d) => d.tokenText ?? d.text),
    token_logprobs: toks.map((d) => d.logprob),
    top_logprobs: toks.map((d) => Object.fromEntries((d.topLogprobs ?? []).map((t) => [t.text ?? '', t.logprob]))),
    text_offset: toks.map((d) => {
      const o = offset;
      offset += (d.tokenText ?? d.text).length;
      return o;
    }),
  };
}

declare module 'fastify' {
  interface FastifyInstance {
    drain(graceMs?: number): Promise<void>;
  }
}
