// The OpenAI-compatible server over real HTTP on 127.0.0.1, driven by the official `openai`
// client: results against engine.generate on the same prompt, streaming, usage, stop, n > 1,
// logprobs (against a log-softmax of the model's logits), bad input, disconnects, shutdown.
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, getBackend } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { createServer } from '../src/server/server.js';
import { nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const backend = nativeAvailable ? 'cpu' : 'js';
const KEY = 'test-key-123';
// stories260K has no chat template: a minimal one for the chat endpoint.
const TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

let engine: Engine;
let app: ReturnType<typeof createServer>;
let base: string;
let client: OpenAI;

beforeAll(async () => {
  engine = await Engine.load(STORIES, { backend, kvCacheBytes: 4 * 2 ** 20 });
  app = createServer(engine, { apiKey: KEY, modelAlias: 'stories', maxQueue: 80, bodyLimit: 64 * 1024, chatTemplate: TEMPLATE });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  client = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await app.close();
  await engine.dispose();
});

const post = (route: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

describe('tessera serve: OpenAI API', () => {
  it('completions and chat (plain and streaming) equal engine.generate with the same settings; usage counts', async () => {
    const ref = await engine.generate('Once upon a time', { temperature: 0, maxTokens: 24 });
    const c = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
    expect(c.choices[0]!.text).toBe(ref.text);
    expect(c.choices[0]!.finish_reason).toBe(ref.finishReason === 'stop' ? 'stop' : 'length');
    expect(c.usage).toEqual({ prompt_tokens: ref.promptTokens, completion_tokens: ref.completionTokens, total_tokens: ref.promptTokens + ref.completionTokens });

    const stream = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null;
    for await (const ch of stream) {
      if (ch.choices.length) {
        text += ch.choices[0]!.text;
        finish = ch.choices[0]!.finish_reason ?? finish;
      }
      if (ch.usage) usage = ch.usage;
    }
    expect(text).toBe(ref.text);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: ref.completionTokens, prompt_tokens: ref.promptTokens });

    const messages = [{ role: 'user' as const, content: 'Tell me a story.' }];
    const refChat = await engine.generate('user: Tell me a story.\nassistant:', { temperature: 0, maxTokens: 20 });
    const chat = await client.chat.completions.create({ model: 'stories', messages, max_tokens: 20, temperature: 0 });
    expect(chat.choices[0]!.message).toMatchObject({ role: 'assistant', content: refChat.text });
    expect(chat.usage!.prompt_tokens).toBe(refChat.promptTokens);
    const s = await client.chat.completions.create({ model: 'stories', messages, max_tokens: 20, temperature: 0, stream: true });
    let t = '', role = '';
    for await (const ch of s) {
      t += ch.choices[0]?.delta.content ?? '';
      role ||= ch.choices[0]?.delta.role ?? '';
    }
    expect(t).toBe(refChat.text);
    expect(role).toBe('assistant');
    const lp = await client.chat.completions.create({ model: 'stories', messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = lp.choices[0]!.logprobs!.content!;
    expect(content.map((c) => c.token).join('')).toBe(lp.choices[0]!.message.content);
    for (const c of content) {
      expect(c.top_logprobs.length).toBe(2);
      expect(c.top_logprobs[0]!.logprob).toBeCloseTo(c.logprob, 6); // greedy: the chosen token is the most likely
    }
  });

  it('stop strings, n > 1 with distinct seeds, and logprobs that match the model', async () => {
    const stopped = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: 'Lily' });
    expect(stopped.choices[0]!.text).toBe(', there was a little girl named ');
    expect(stopped.choices[0]!.finish_reason).toBe('stop');

    const many = await client.completions.create({ model: 'stories', prompt: 'One day', max_tokens: 20, temperature: 1, seed: 7, n: 3 });
    expect(many.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const [i, ch] of many.choices.entries()) {
      const alone = await engine.generate('One day', { temperature: 1, topP: 1, topK: 0, minP: 0, seed: 7 + i, maxTokens: 20 });
      expect(ch.text).toBe(alone.text);
    }
    expect(many.usage!.completion_tokens).toBeGreaterThan(20);

    const lp = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, logprobs: 3 });
    const l = lp.choices[0]!.logprobs!;
    expect(l.tokens!.length).toBe(5);
    expect(l.tokens!.join('')).toBe(lp.choices[0]!.text);
    // Independent check: the first token's log-probability from a plain forward + log-softmax.
    const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
    const c = model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
    cache.add(0);
    const logits = forwardTokens(model, cache, 0, tokenizer.encode('Once upon a time', { addBos: true })).data;
    const mx = Math.max(...logits);
    const lse = mx + Math.log(logits.reduce((a, x) => a + Math.exp(x - mx), 0));
    const best = logits.indexOf(mx);
    expect(l.token_logprobs![0]!).toBeCloseTo(logits[best]! - lse, 4);
    const top = Object.entries(l.top_logprobs![0]!).sort((a, b) => b[1] - a[1]);
    expect(top.length).toBe(3);
    expect(top[0]![0]).toBe(l.tokens![0]);
    const sorted = Array.from(logits).map((x, i) => [x - lse, i] as const).sort((a, b) => b[0] - a[0]);
    top.forEach(([, v], i) => expect(v).toBeCloseTo(sorted[i]![0], 4));
  });

  it('GET /v1/models, /health and /metrics', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['stories']);
    expect((await fetch(`${base}/health`)).status).toBe(200);
    const m = await (await fetch(`${base}/metrics`)).text();
    expect(m).toMatch(/tessera_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/);
    expect(m).toMatch(/tessera_kv_blocks_used 0/);
    expect(m).toMatch(/tessera_time_to_first_token_seconds_bucket/);
    expect(m).toMatch(/tessera_inter_token_latency_seconds_count \d+/);
  });

  it('health is 503 while the model loads', async () => {
    let release: (e: Engine) => void = () => {};
    const pending = new Promise<Engine>((r) => (release = r));
    const s = createServer(pending);
    await s.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    try {
      expect((await fetch(`${url}/health`)).status).toBe(503);
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
      expect(r.status).toBe(503);
      release(engine);
      await new Promise((r2) => setTimeout(r2, 10));
      expect((await fetch(`${url}/health`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it.each([
    ['invalid JSON', '{"prompt": ', 400, null],
    ['wrong type', { prompt: 'x', max_tokens: 'ten' }, 400, 'max_tokens'],
    ['out of range', { prompt: 'x', temperature: 5 }, 400, 'temperature'],
    ['missing field', { max_tokens: 3 }, 400, 'prompt'],
    ['unsupported parameter', { prompt: 'x', logit_bias: { 5: 10 } }, 400, 'logit_bias'],
    ['unsupported parameter (echo)', { prompt: 'x', echo: true }, 400, 'echo'],
    ['prompt longer than the context', { prompt: Array.from({ length: 3000 }, () => 5) }, 400, null],
    ['body too large', { prompt: 'x'.repeat(70_000) }, 413, null],
  ])('bad input: %s gets %i in the OpenAI error shape, and the server keeps serving', async (_, body, status, param) => {
    const r = await post('/v1/completions', body);
    expect(r.status).toBe(status);
    const j = (await r.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
    expect(Object.keys(j.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(j.error.message.length).toBeGreaterThan(5);
    if (param) expect(j.error.param).toBe(param);
    const ok = await post('/v1/completions', { prompt: 'Once', max_tokens: 2, temperature: 0 });
    expect(ok.status).toBe(200);
  });

  it('bad input: a missing or wrong API key is 401; an unknown route 404; chat messages are checked', async () => {
    expect((await post('/v1/completions', { prompt: 'x' }, { authorization: 'Bearer nope' })).status).toBe(401);
    const noKey = await fetch(`${base}/v1/models`);
    expect(noKey.status).toBe(401);
    expect(((await noKey.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
    expect((await post('/v1/nothing', {})).status).toBe(404);
    const bad = await post('/v1/chat/completions', { messages: [{ role: 'wizard', content: 'hi' }] });
    expect(bad.status).toBe(400);
    expect((await post('/v1/chat/completions', { messages: [] })).status).toBe(400);
  });

  it('queue full is 429', async () => {
    const s = createServer(engine, { maxQueue: 1 });
    await s.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    try {
      const send = (n = 1) => fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once', max_tokens: 300, n, temperature: 0 }) });
      const first = send();
      await new Promise((r) => setTimeout(r, 50));
      const second = await send();
      expect(second.status).toBe(429);
      expect(((await second.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
      expect((await first).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('64 concurrent streaming clients with random disconnects: all settle, no KV block stays in use, no unhandled rejection, RSS stays flat', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    const rss: number[] = [];
    for (let round = 0; round < 4; round++) {
      const runs = Array.from({ length: 64 }, async (_, i) => {
        const ac = new AbortController();
        const cut = i % 3 === 0 ? 1 + (i % 7) : -1;
        try {
          const r = await fetch(`${base}/v1/completions`, {
            method: 'POST', signal: ac.signal,
            headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
            body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 30, stream: true, temperature: 0.8, seed: i }),
          });
          const reader = r.body!.getReader();
          let chunks = 0, text = '';
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += Buffer.from(value).toString();
            if (++chunks === cut) {
              ac.abort();
              break;
            }
          }
          return cut < 0 ? (text.endsWith('data: [DONE]\n\n') ? 'done' : 'truncated') : 'cut';
        } catch {
          return 'cut';
        }
      });
      const res = await Promise.all(runs);
      expect(res.filter((r) => r === 'truncated')).toEqual([]);
      expect(res.filter((r) => r === 'done').length).toBe(64 - Math.ceil(64 / 3));
      // Disconnected streams are aborted on the server; wait for the scheduler to drain.
      let s = await engine.stats();
      for (let t = 0; t < 100 && (s.running || s.waiting); t++) {
        await new Promise((r) => setTimeout(r, 20));
        s = await engine.stats();
      }
      expect(s).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
      rss.push(process.memoryUsage().rss);
    }
    process.off('unhandledRejection', onUnhandled);
    expect(unhandled).toEqual([]);
    // Growth after the first round (warm-up) stays small: nothing per request is kept.
    expect(rss[3]! - rss[1]!).toBeLessThan(64 * 2 ** 20);
    const m = await (await fetch(`${base}/metrics`)).text();
    expect(m).toMatch(/tessera_kv_blocks_used 0/);
  });

  it('graceful shutdown: in-flight streams finish, new requests are refused', async () => {
    const s = createServer(engine);
    await s.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    const inflight = fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once', max_tokens: 40, temperature: 0, stream: true }) })
      .then((r) => r.text());
    await new Promise((r) => setTimeout(r, 30));
    const drained = s.drain(5000);
    const refused = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
    expect(refused.status).toBe(503);
    await drained;
    expect(await inflight).toMatch(/data: \[DONE\]\n\n$/);
    await s.close();
  });
});

describe('tessera serve (the command)', () => {
  it('serves the bundled model, and on SIGTERM lets a running stream finish, then exits 0', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [path.join(root, 'bin/tessera.js'), 'serve', '--port', '0', '--backend', backend], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (b: Buffer) => {
        err += b.toString();
        const m = /listening on (http:\/\/[^\s]+)/.exec(err);
        if (m && /serving/.test(err)) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`serve exited early (${code}): ${err}`)));
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const stream = fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 200, temperature: 0, stream: true }) });
    const r = await stream;
    const reader = r.body!.getReader();
    await reader.read(); // the stream is running
    child.kill('SIGTERM');
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    expect(text).toMatch(/"finish_reason":"(length|stop)"[\s\S]*data: \[DONE\]\n\n$/);
    expect(await exited).toBe(0);
    expect(err).toMatch(/SIGTERM/);
  }, 60_000);

  it('--help names every option; bad options are usage errors', async () => {
    const { spawnSync } = await import('node:child_process');
    const bin = path.join(root, 'bin/tessera.js');
    const help = spawnSync(process.execPath, [bin, 'serve', '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    for (const o of ['--host', '--port', '--api-key', '--max-sequences', '--kv-cache-bytes', '--model-alias']) expect(help.stdout).toContain(o);
    const bad = spawnSync(process.execPath, [bin, 'serve', '--port', 'http'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--port expects an integer/);
  });
});
