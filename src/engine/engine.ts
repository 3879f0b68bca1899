/**
 * Engine: owns a model inside a worker_thread and exposes an async API (Promises, async
 * iterators, AbortSignal). The event loop of the caller keeps running while the model loads
 * and generates. Concurrent requests are batched by the worker's scheduler (continuous batching).
 */
import { Worker } from 'node:worker_threads';
import * as check from '../tensor/check.js';
import { DisposedError } from '../tensor/tensor.js';
import type { Delta, FinishReason, GenerateOptions, SpeculationStats } from '../runtime/generate.js';
import type { SchedulerStats } from '../runtime/scheduler.js';
import { bundledModelPath } from './bundled.js';
import { isHfUri, pullModel } from '../hub/index.js';
import { ChatSession, type ChatSessionOptions } from './chat-session.js';
import { reviveError } from './errors.js';
import { SESSION_CLOSE, SESSION_TURN } from './internal.js';
import { CHAT_OPTIONS, checkOptionNames, GENERATE_OPTIONS, LOAD_OPTIONS, SCORE_OPTIONS } from './options.js';
import type { ChatMessage, ModelInfo, Prompt, Request, Response, ScoreItem, ScoreResult } from './protocol.js';

export interface EngineOptions {
  /** 'auto' (native when built), 'cpu' or 'js'. */
  backend?: 'cpu' | 'js' | 'auto';
  /** KV cache budget in bytes. Default 256 MiB. */
  kvCacheBytes?: number;
  /** Native thread pool size. */
  threads?: number;
  /** Tokens per forward step (decode tokens plus prompt chunks). Default 512. */
  maxBatchTokens?: number;
  /** Sequences generating at once (a beam search counts its beams). Default 64. */
  maxSequences?: number;
  /** Reuse the KV of prompt prefixes seen before (shared system prompts). Default true. */
  prefixCaching?: boolean;
  /** Speculative decoding with this draft model (same vocabulary as the target; checked at load). */
  draftModel?: string;
  /** Speculative decoding by prompt lookup: match up to this many last tokens (used without a draft model). */
  lookupNgram?: number;
  /** Most draft tokens per step (k adapts from 4 within [1, draftMax]). Default 8. */
  draftMax?: number;
  /** Called as tensors load. */
  onProgress?: (done: number, total: number) => void;
}

export interface EngineGenerateOptions extends GenerateOptions {
  /** Prepend BOS to a text prompt. Default true. */
  addBos?: boolean;
  /** Give each delta its token's own text (`tokenText`, and `text` on topLogprobs entries). */
  tokenTexts?: boolean;
  /** Set false to decode this request without the engine's speculative decoding. */
  speculative?: boolean;
  signal?: AbortSignal;
}

export interface EngineScoreOptions {
  /** Also the this many most likely tokens (0-20) at each scored position. Default 0. */
  topLogprobs?: number;
  /** Also score the prompt's tokens after the first (result.prompt). Default false. */
  promptLogprobs?: boolean;
  /** Prepend BOS to a text prompt. Default true. */
  addBos?: boolean;
  /** An abort rejects the promise with the signal's reason (an AbortError unless the caller gave one). */
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  logprobs: number[];
  /** With options.topLogprobs: per generated token (as tokens), the most likely tokens at that step, best first (the deltas' topLogprobs). */
  topLogprobs?: { token: number; logprob: number; text?: string }[][];
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** With speculative decoding: draft tokens proposed and accepted. */
  speculation?: SpeculationStats;
}

/** What an aborted request returns, whether its signal was aborted before the call or during it. */
function abortedResult(): GenerateResult {
  return { text: '', tokens: [], logprobs: [], finishReason: 'abort', promptTokens: 0, completionTokens: 0 };
}

type Done = Extract<Response, { type: 'done' }>;

const asyncDisposeSymbol: symbol = (Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for('nodejs.asyncDispose');

interface Pending {
  onDelta?: (d: Delta) => void;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/**
 * The parent's execArgv without `--input-type`: a script piped to `node --input-type=module` would
 * otherwise start a worker that fails with "--input-type can only be used with string input".
 */
function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input-type') i++;
    else if (!argv[i].startsWith('--input-type=')) out.push(argv[i]);
  }
  return out;
}

function spawnWorker(): Worker {
  const self = new URL(import.meta.url);
  if (!self.pathname.endsWith('.ts')) return new Worker(new URL('./worker.js', self), { execArgv: workerExecArgv() });
  // Running from TypeScript sources (tests, tsx): the worker registers tsx's loader itself.
  const src = new URL('./worker.ts', self).href;
  return new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(src)}); });`, { eval: true });
}

export class Engine {
  #worker: Worker;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #disposed = false;
  #dead: Error | null = null; // set when the worker exits or fails on its own
  #info: ModelInfo;

  private constructor(worker: Worker, info: ModelInfo) {
    this.#worker = worker;
    this.#info = info;
    worker.on('message', (m: Response) => this.#onMessage(m));
    worker.on('error', (err) => {
      this.#dead ??= err;
      this.#failAll(err);
    });
    worker.on('exit', (code) => {
      if (this.#disposed) return;
      this.#dead ??= new Error(`model worker exited with code ${code}`);
      this.#failAll(this.#dead);
    });
  }

  /**
   * Loads a model (GGUF file, Hugging Face directory or llama2.c .bin) in a new worker. Without a
   * path (`Engine.load()`, `Engine.load({ backend: 'js' })`) it loads the bundled stories260K
   * (`bundledModelPath`), a toy that writes children's stories.
   */
  static load(options?: EngineOptions): Promise<Engine>;
  static load(path?: string, options?: EngineOptions): Promise<Engine>;
  static load(pathOrOptions?: string | EngineOptions, maybeOptions?: EngineOptions): Promise<Engine> {
    const onlyOptions = typeof pathOrOptions === 'object' && pathOrOptions !== null && !Array.isArray(pathOrOptions) && maybeOptions === undefined;
    const path: unknown = pathOrOptions === undefined || onlyOptions ? bundledModelPath : pathOrOptions;
    const options: EngineOptions = (onlyOptions ? pathOrOptions : maybeOptions) ?? {};
    if (typeof path !== 'string' || !path) return Promise.reject(new TypeError('Expected a model file path (or nothing, for the bundled model) for path'));
    try {
      const o = check.options<EngineOptions>(options, 'options');
      checkOptionNames(o, LOAD_OPTIONS, 'the Engine.load options');
      if (o.backend !== undefined) check.oneOf(o.backend, 'options.backend', ['cpu', 'js', 'auto'] as const);
      if (o.kvCacheBytes !== undefined) check.num(o.kvCacheBytes, 'options.kvCacheBytes', { positive: true });
      if (o.threads !== undefined) check.int(o.threads, 'options.threads', 1, 1024);
      if (o.maxBatchTokens !== undefined) check.int(o.maxBatchTokens, 'options.maxBatchTokens', 16);
      if (o.maxSequences !== undefined) check.int(o.maxSequences, 'options.maxSequences', 1);
      if (o.prefixCaching !== undefined && typeof o.prefixCaching !== 'boolean') throw new TypeError('Expected a boolean for options.prefixCaching');
      if (o.draftModel !== undefined && (typeof o.draftModel !== 'string' || !o.draftModel)) throw new TypeError('Expected a model file path for options.draftModel');
      if (o.lookupNgram !== undefined) check.int(o.lookupNgram, 'options.lookupNgram', 1, 16);
      if (o.draftMax !== undefined) check.int(o.draftMax, 'options.draftMax', 1, 64);
      if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new TypeError('Expected a function for options.onProgress');
    } catch (err) {
      return Promise.reject(err);
    }
    if (isHfUri(path) || (options.draftModel !== undefined && isHfUri(options.draftModel))) {
      // Hugging Face URIs are downloaded (or found in the cache) first, then loaded as files.
      const pull = async (p: string) => (isHfUri(p) ? (await pullModel(p)).path : p);
      return (async () => {
        const file = await pull(path);
        const draftModel = options.draftModel === undefined ? undefined : await pull(options.draftModel);
        return Engine.load(file, { ...options, draftModel });
      })();
    }
    const worker = spawnWorker();
    return new Promise((resolve, reject) => {
      const onMessage = (m: Response) => {
        if (m.type === 'progress') options.onProgress?.(m.done, m.total);
        else if (m.type === 'loaded') {
          worker.off('message', onMessage);
          worker.off('error', onError);
          resolve(new Engine(worker, m.info));
        } else if (m.type === 'error') {
          worker.off('message', onMessage);
          void worker.terminate();
          reject(reviveError(m));
        }
      };
      const onError = (err: Error) => reject(err);
      const onExit = (code: number) => reject(new Error(`model worker exited with code ${code} while loading ${path}`));
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.once('exit', onExit);
      const req: Request = {
        type: 'load', path, backend: options.backend ?? 'auto', kvCacheBytes: options.kvCacheBytes ?? 256 * 2 ** 20, threads: options.threads,
        maxBatchTokens: options.maxBatchTokens, maxSequences: options.maxSequences, prefixCaching: options.prefixCaching,
        draftModel: options.draftModel, draftMax: options.draftMax, lookupNgram: options.lookupNgram,
      };
      worker.postMessage(req);
    });
  }

  get info(): ModelInfo {
    return this.#info;
  }

  #onMessage(m: Response): void {
    if (m.type === 'delta') return void this.#pending.get(m.id)?.onDelta?.(m.delta);
    if (m.type === 'scored') {
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      return void p?.resolve(m.results);
    }
    if (m.type !== 'done' && m.type !== 'stats' && m.type !== 'tokens' && m.type !== 'text' && m.type !== 'error') return;
    if (m.id === null) return; // an error not tied to a request
    const p = this.#pending.get(m.id);
    this.#pending.delete(m.id);
    if (m.type === 'error') p?.reject(reviveError(m));
    else p?.resolve(m.type === 'stats' ? m.stats : m.type === 'tokens' ? m.tokens : m.type === 'text' ? m.text : m);
  }

  /** Sends a request that the worker answers with one message; resolves with its payload. */
  #call<T>(req: Extract<Request, { type: 'tokenize' | 'detokenize' | 'stats' }>): Promise<T> {
    return new Promise((resolve, reject) => {
      this.#pending.set(req.id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage(req);
    });
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  #check(): void {
    if (this.#disposed) throw new DisposedError('Engine');
    if (this.#dead) throw this.#dead;
  }

  /** Token ids of text (BOS prepended by default; special-token text such as `<s>` becomes its id). */
  tokenize(text: string, options: { addBos?: boolean } = {}): Promise<number[]> {
    try {
      this.#check();
      if (typeof text !== 'string') throw new TypeError('Expected a string for text');
      const o = check.options<{ addBos?: boolean }>(options, 'options');
      checkOptionNames(o, ['addBos'], 'the tokenize options');
      if (o.addBos !== undefined && typeof o.addBos !== 'boolean') throw new TypeError('Expected a boolean for options.addBos');
      return this.#call({ type: 'tokenize', id: this.#nextId++, text, addBos: o.addBos ?? true });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The text of token ids, exactly as the model's tokenizer decodes them (control tokens such as
   * BOS are written as their text unless skipSpecial; bytes that are not valid UTF-8 become U+FFFD).
   */
  detokenize(ids: readonly number[], options: { skipSpecial?: boolean } = {}): Promise<string> {
    try {
      this.#check();
      const vocab = this.#info.config.vocabSize;
      if (!Array.isArray(ids)) throw new TypeError('Expected an array of token ids for ids');
      ids.forEach((t, i) => {
        if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new RangeError(`Expected token ids in [0, ${vocab}) but received ${String(t)} at index ${i}`);
      });
      const o = check.options<{ skipSpecial?: boolean }>(options, 'options');
      checkOptionNames(o, ['skipSpecial'], 'the detokenize options');
      if (o.skipSpecial !== undefined && typeof o.skipSpecial !== 'boolean') throw new TypeError('Expected a boolean for options.skipSpecial');
      return this.#call({ type: 'detokenize', id: this.#nextId++, ids: [...ids], skipSpecial: o.skipSpecial ?? false });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The scheduler's state: running and waiting requests, KV blocks in use / free / cached for
   * prefix reuse, the prefix cache's hit rate and recent tokens per second.
   */
  stats(): Promise<SchedulerStats> {
    this.#check();
    return this.#call({ type: 'stats', id: this.#nextId++ });
  }

  /**
   * Teacher-forced log-probabilities of `completion` after `prompt`: each completion token's
   * log p(token | prompt and the completion before it), their sum, the tokens and their texts
   * (topLogprobs: the most likely alternatives at each position; promptLogprobs: the prompt's
   * tokens after the first too). Text is tokenized as prompt + completion together (BOS first
   * unless addBos is false) and split where the prompt's own tokens end; token ids are used as they
   * are. `score([{ prompt, completion }, ...])` scores several in one batch; concurrent calls are
   * batched too, and a result does not depend on what it was batched with.
   */
  score(prompt: string | number[], completion: string | number[], options?: EngineScoreOptions): Promise<ScoreResult>;
  score(items: ScoreItem[], options?: EngineScoreOptions): Promise<ScoreResult[]>;
  score(a: string | number[] | ScoreItem[], b?: string | number[] | EngineScoreOptions, c?: EngineScoreOptions): Promise<ScoreResult | ScoreResult[]> {
    try {
      this.#check();
      const many = Array.isArray(a) && a.length > 0 && a.every((x) => typeof x === 'object' && x !== null && !Array.isArray(x));
      const vocab = this.#info.config.vocabSize;
      const text = (x: unknown, name: string): string | number[] => {
        if (typeof x === 'string') return x;
        if (Array.isArray(x)) {
          x.forEach((t, i) => {
            if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new RangeError(`Expected token ids in [0, ${vocab}) for ${name} but received ${String(t)} at index ${i}`);
          });
          return [...(x as number[])];
        }
        throw new TypeError(`Expected a string or an array of token ids for ${name}`);
      };
      let items: ScoreItem[];
      let options: unknown;
      if (many) {
        items = (a as ScoreItem[]).map((it, i) => {
          checkOptionNames(it, ['prompt', 'completion'], `score item ${i}`);
          return { prompt: text(it.prompt, `items[${i}].prompt`), completion: text(it.completion, `items[${i}].completion`) };
        });
        if (c !== undefined) throw new TypeError('Expected score(items, options): a third argument was given');
        options = b ?? {};
      } else {
        if (Array.isArray(a) && a.length === 0) throw new RangeError('Expected at least one { prompt, completion } item (or a prompt string / token ids) for score');
        items = [{ prompt: text(a, 'prompt'), completion: text(b, 'completion') }];
        options = c ?? {};
      }
      const o = check.options<EngineScoreOptions>(options, 'options');
      checkOptionNames(o, SCORE_OPTIONS, 'the score options');
      if (o.topLogprobs !== undefined) check.int(o.topLogprobs, 'options.topLogprobs', 0, 20);
      for (const k of ['promptLogprobs', 'addBos'] as const) if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new TypeError(`Expected a boolean for options.${k}`);
      const { signal, ...rest } = o;
      if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('Expected an AbortSignal for options.signal');
      signal?.throwIfAborted();
      const id = this.#nextId++;
      return new Promise<ScoreResult[]>((resolve, reject) => {
        const onAbort = () => {
          this.#pending.delete(id);
          this.#worker.postMessage({ type: 'abort', id } satisfies Request);
          reject(signal!.reason);
        };
        const done = () => signal?.removeEventListener('abort', onAbort);
        this.#pending.set(id, { resolve: (v) => { done(); resolve(v as ScoreResult[]); }, reject: (e) => { done(); reject(e); } });
        signal?.addEventListener('abort', onAbort, { once: true });
        this.#worker.postMessage({ type: 'score', id, items, options: rest } satisfies Request);
      }).then((r) => (many ? r : r[0]!));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Streams text deltas; ends when generation finishes. Concurrent calls are batched together.
   *
   * Abort: a signal aborted before the call or while it runs ends the request the same way: the
   * stream returns (never throws) a result with finishReason 'abort' holding the text produced so
   * far (none when aborted before it started). Unknown option names are a TypeError.
   */
  stream(prompt: Prompt, options: EngineGenerateOptions = {}): AsyncGenerator<Delta, GenerateResult> {
    return this.#stream(prompt, options, 'the generate options');
  }

  /** A ChatSession on this engine: history and KV cache kept between turns (see ChatSession). */
  createChatSession(options: ChatSessionOptions = {}): ChatSession {
    return new ChatSession(this, options);
  }

  /** A ChatSession's turn: a chat prompt that continues the session's KV sequence in the worker. */
  [SESSION_TURN](session: number, prompt: { messages: ChatMessage[]; template?: string }, options: EngineGenerateOptions): AsyncGenerator<Delta, GenerateResult & { reusedTokens: number }> {
    return this.#stream(prompt, options, 'the prompt options', session) as AsyncGenerator<Delta, GenerateResult & { reusedTokens: number }>;
  }

  /** Frees a ChatSession's KV sequence in the worker (nothing to do once the engine is gone). */
  [SESSION_CLOSE](session: number): void {
    if (!this.#disposed && !this.#dead) this.#worker.postMessage({ type: 'session-close', session } satisfies Request);
  }

  async *#stream(prompt: Prompt, options: EngineGenerateOptions, where: string, session?: number): AsyncGenerator<Delta, GenerateResult> {
    this.#check();
    const isMessages = (p: unknown): p is { messages: ChatMessage[] } =>
      typeof p === 'object' && p !== null && Array.isArray((p as { messages?: unknown }).messages) &&
      (p as { messages: unknown[] }).messages.every((m) => typeof (m as ChatMessage)?.role === 'string' && typeof (m as ChatMessage)?.content === 'string');
    if (typeof prompt !== 'string' && !(Array.isArray(prompt) && prompt.every((t) => Number.isInteger(t))) && !isMessages(prompt))
      throw new TypeError('Expected a string, an array of token ids or { messages: [{ role, content }] } for prompt');
    if (isMessages(prompt)) {
      checkOptionNames(prompt, ['messages', 'template'], 'the prompt');
      if (prompt.template !== undefined && typeof prompt.template !== 'string') throw new TypeError('Expected a string (a Jinja chat template) for prompt.template');
    }
    const o = check.options<EngineGenerateOptions>(options, 'options');
    checkOptionNames(o, GENERATE_OPTIONS, where);
    const { signal, ...rest } = o;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('Expected an AbortSignal for options.signal');
    if (signal?.aborted) return session === undefined ? abortedResult() : Object.assign(abortedResult(), { reusedTokens: 0 });
    const id = this.#nextId++;
    const queue: Delta[] = [];
    let wake: (() => void) | null = null;
    let finished: Done | null = null;
    let failure: Error | null = null;
    const poke = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    this.#pending.set(id, {
      onDelta: (d) => { queue.push(d); poke(); },
      resolve: (v) => { finished = v as typeof finished; poke(); },
      reject: (e) => { failure = e; poke(); },
    });
    // A chat prompt's template renders synchronously in the worker, where an abort message cannot
    // land until it ends; the shared flag reaches the render itself.
    const cancel = isMessages(prompt) ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
    const onAbort = () => {
      if (cancel) Atomics.store(cancel, 0, 1);
      this.#worker.postMessage({ type: 'abort', id } satisfies Request);
    };
    try {
      this.#worker.postMessage({ type: 'generate', id, prompt, options: rest, ...(cancel ? { cancel } : {}), ...(session !== undefined ? { session } : {}) } satisfies Request);
    } catch (err) {
      this.#pending.delete(id); // e.g. a function in the options cannot be sent to the worker
      throw new TypeError(`Expected plain data in the generate options: ${(err as Error).message}`);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const result: GenerateResult & { reusedTokens?: number } = { text: '', tokens: [], logprobs: [], finishReason: 'length', promptTokens: 0, completionTokens: 0 };
    try {
      for (;;) {
        while (queue.length) {
          const d = queue.shift()!;
          result.text += d.text;
          if (d.token !== null) {
            result.tokens.push(d.token);
            if (d.logprob !== null) result.logprobs.push(d.logprob);
            if (d.topLogprobs) (result.topLogprobs ??= []).push(d.topLogprobs);
          }
          yield d;
        }
        if (failure) throw failure;
        if (finished) {
          const f = finished as Done;
          // Only the result fields (the worker's message also carries its type and id).
          result.finishReason = f.finishReason;
          result.promptTokens = f.promptTokens;
          result.completionTokens = f.completionTokens;
          if (f.speculation) result.speculation = f.speculation;
          if (session !== undefined) result.reusedTokens = f.reusedTokens ?? 0;
          return result;
        }
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished && !failure) onAbort(); // consumer stopped early
      this.#pending.delete(id);
    }
  }

  /** Chat: renders the messages with the model's chat template (or `template`) and streams the reply. */
  async *chat(messages: ChatMessage[], options: EngineGenerateOptions & { template?: string } = {}): AsyncGenerator<Delta, GenerateResult> {
    const o = check.options<EngineGenerateOptions & { template?: string }>(options, 'options');
    checkOptionNames(o, CHAT_OPTIONS, 'the chat options');
    const { template, ...rest } = o;
    return yield* this.#stream({ messages, template }, rest, 'the chat options');
  }

  /** Generates to completion (an abort ends it as stream() does: finishReason 'abort'). */
  async generate(prompt: Prompt, options: EngineGenerateOptions = {}): Promise<GenerateResult> {
    const it = this.#stream(prompt, options, 'the generate options');
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Stops the worker and frees the model. Safe to call twice. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#failAll(new DisposedError('Engine'));
    await this.#worker.terminate();
  }

  [asyncDisposeSymbol](): Promise<void> {
    return this.dispose();
  }
}
