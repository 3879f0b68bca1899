/**
 * The model worker: loads a model and serves every request through one scheduler (continuous
 * batching): each step is one forward over all running requests, and the worker yields to its
 * own event loop between steps, so new requests join and aborts land at the next step. The main
 * thread never runs model code (ARCHITECTURE rule 2).
 */
import { parentPort } from 'node:worker_threads';
import { getBackend, setThreads } from '../backend/index.js';
import { loadModelFile, type LoadedModel } from '../model/load.js';
import { createGenerateJob, type GenerationJob } from '../runtime/generate.js';
import { PagedKvCache } from '../runtime/kv/cache.js';
import { Scheduler } from '../runtime/scheduler.js';
import { ScoreJob, type TokenScore } from '../runtime/score.js';
import { checkDraftVocabulary, makeProposer, type SpeculativeSetup } from '../runtime/speculate.js';
import { serializeError } from './errors.js';
import type { Request, Response, ScoredTokens, ScoreResult } from './protocol.js';
import { SessionKv } from './session-kv.js';
import { ChatTemplateError } from '../tokenizer/chat-template.js';

const port = parentPort!;
const send = (m: Response) => port.postMessage(m);
let loaded: LoadedModel | null = null;
let cache: PagedKvCache | null = null;
let sched: Scheduler | null = null;
let spec: SpeculativeSetup | null = null;
let sessions: SessionKv | null = null;
let draftSeq = 0;
const incoming: Extract<Request, { type: 'generate' | 'score' }>[] = []; // arrived, not yet tokenized
const jobs = new Map<number, GenerationJob | ScoreJob[]>();
const abortedEarly = new Set<number>();
let pumping = false;

const tick = () => new Promise<void>((r) => setImmediate(r));

function errorMessage(id: number | null, err: unknown): Response {
  return { type: 'error', id, ...serializeError(err) }; // the Engine rebuilds the error's class
}

/**
 * Text that can fit the context, or a RangeError before the encoder spends seconds on it (a chat
 * template can turn a few messages into megabytes). A token stands for at most maxPieceBytes bytes
 * and a UTF-16 unit for at least one byte, so more than ctx * maxPieceBytes units cannot fit; the
 * factor 4 leaves room for normalizers that shorten text (NFC composing a letter and its marks).
 */
function fits(text: string): string {
  const { model, tokenizer } = loaded!;
  const ctx = model.config.contextLength;
  const limit = 4 * ctx * tokenizer.maxPieceBytes;
  if (text.length > limit)
    throw new RangeError(`Expected a prompt of at most the model's context length ${ctx} tokens but received ${text.length} characters of text, far more than ${ctx} tokens of at most ${tokenizer.maxPieceBytes} bytes each can hold`);
  return text;
}

/**
 * A score request's items as token lists and where each one's scored part starts. A text
 * completion is split off the tokens of prompt + completion, as lm-evaluation-harness does, so
 * the tokens are those the model would see for the whole text; where that tokenization does not
 * begin with the prompt's own tokens (a merge across the boundary), the completion is tokenized
 * on its own after the prompt's tokens.
 */
function scoreTokens(req: Extract<Request, { type: 'score' }>): { tokens: number[]; from: number }[] {
  const { tokenizer } = loaded!;
  const addBos = req.options.addBos ?? true;
  return req.items.map((item, i) => {
    const prompt = typeof item.prompt === 'string' ? tokenizer.encode(fits(item.prompt), { addBos, parseSpecial: true }) : item.prompt;
    if (prompt.length === 0) throw new RangeError(`Expected a non-empty prompt (at least one token) in item ${i}; with addBos false a text prompt must not be empty`);
    let completion: number[];
    if (typeof item.completion !== 'string') completion = item.completion;
    else if (typeof item.prompt !== 'string') completion = tokenizer.encode(fits(item.completion), { addBos: false, parseSpecial: true });
    else {
      const whole = tokenizer.encode(fits(item.prompt + item.completion), { addBos, parseSpecial: true });
      const aligned = prompt.every((t, j) => whole[j] === t);
      completion = aligned ? whole.slice(prompt.length) : tokenizer.encode(fits(item.completion), { addBos: false, parseSpecial: true });
    }
    if (completion.length === 0) throw new RangeError(`Expected a non-empty completion (at least one token) in item ${i}`);
    return { tokens: [...prompt, ...completion], from: prompt.length };
  });
}

/** Scored tokens as the Engine returns them (texts added here, where the tokenizer is). */
function scored(scores: readonly TokenScore[], top: boolean): ScoredTokens {
  const { tokenizer } = loaded!;
  const run = { runStart: false }; // scored text continues what came before it
  return {
    tokens: scores.map((s) => s.token),
    pieces: scores.map((s) => tokenizer.tokenText(s.token, run)),
    logprobs: scores.map((s) => s.logprob),
    ...(top ? { topLogprobs: scores.map((s) => s.topLogprobs!.map((t) => ({ ...t, text: tokenizer.tokenText(t.token, { runStart: false }) }))) } : {}),
  };
}

/** Tokenizes a score request and hands the scheduler one job per item; answers once all are scored. */
function startScore(req: Extract<Request, { type: 'score' }>): void {
  const id = req.id;
  if (abortedEarly.delete(id)) return; // the Engine already answered the abort
  const items = scoreTokens(req);
  const top = (req.options.topLogprobs ?? 0) > 0;
  const results: ScoreResult[] = new Array(items.length);
  let left = items.length;
  const ctx = sched!;
  const list: ScoreJob[] = [];
  const fail = (err: Error) => {
    if (!jobs.has(id)) return;
    jobs.delete(id);
    for (const j of list) j.abort(); // the others' results are not wanted any more
    send(errorMessage(id, err));
  };
  for (const [i, { tokens, from }] of items.entries()) {
    // promptLogprobs: score from the second token and split the prompt's part off afterwards.
    const first = req.options.promptLogprobs ? 1 : from;
    list.push(new ScoreJob(ctx, tokens, first, { topLogprobs: req.options.topLogprobs }, {
      onDone: (scores) => {
        const prompt = scores.slice(0, from - first), completion = scores.slice(from - first);
        const c = scored(completion, top);
        results[i] = { ...c, sum: c.logprobs.reduce((a, b) => a + b, 0), promptTokens: from, ...(req.options.promptLogprobs ? { prompt: scored(prompt, top) } : {}) };
        if (--left === 0 && jobs.delete(id)) send({ type: 'scored', id, results });
      },
      onError: fail,
    }));
  }
  jobs.set(id, list);
  for (const j of list) sched!.submit(j);
}

/** Tokenizes a request and hands it to the scheduler as a job. */
function start(req: Extract<Request, { type: 'generate' }>): void {
  const { tokenizer } = loaded!;
  const cancelled = req.cancel ? () => Atomics.load(req.cancel!, 0) !== 0 : () => false;
  if (abortedEarly.delete(req.id) || cancelled()) {
    // Aborted before it started: no tokenizing, no prefill.
    send({ type: 'done', id: req.id, finishReason: 'abort', promptTokens: 0, completionTokens: 0 });
    return;
  }
  let prompt: number[];
  if (typeof req.prompt === 'string') prompt = tokenizer.encode(fits(req.prompt), { addBos: req.options.addBos ?? true, parseSpecial: true });
  else if (Array.isArray(req.prompt)) prompt = req.prompt;
  else {
    let text: string;
    try {
      text = tokenizer.applyChatTemplate(req.prompt.messages, { addGenerationPrompt: true, template: req.prompt.template, cancelled });
    } catch (err) {
      if (err instanceof ChatTemplateError && err.reason === 'cancelled') {
        send({ type: 'done', id: req.id, finishReason: 'abort', promptTokens: 0, completionTokens: 0 });
        return;
      }
      throw err;
    }
    // Templates that write the BOS text themselves must not get a second BOS.
    const bos = tokenizer.bosId === undefined ? '' : tokenizer.piece(tokenizer.bosId);
    prompt = tokenizer.encode(fits(text), { addBos: req.options.addBos ?? (tokenizer.addBos && !(bos && text.startsWith(bos))), parseSpecial: true });
  }
  const id = req.id;
  // With tokenTexts each token (and each top-logprob alternative) carries its own text (the
  // server's logprobs); a token's text is its piece decoded alone.
  const texts = req.options.tokenTexts === true;
  const run = { runStart: true }; // the stream decoder's view: generated text starts a run
  const speculation = spec && req.options.speculative !== false
    ? () => ({ proposer: makeProposer(spec!, req.options, () => draftSeq++), draftMax: spec!.draftMax })
    : null;
  // A ChatSession turn (sampling; a beam search runs on its own sequences) continues the session's
  // KV: the job's one sequence starts on the session's pinned prefix and is kept when it ends.
  const session = req.session !== undefined && !((req.options.beams ?? 1) > 1) ? req.session : undefined;
  let seq: number | undefined;
  let reused = 0;
  const ctx = session === undefined ? sched! : { cache: sched!.cache, model: sched!.model, newSeq: () => (seq = sched!.newSeq()) };
  const job = createGenerateJob(ctx, tokenizer, prompt, req.options, {
    onDelta: (delta) => {
      if (texts && delta.token !== null) {
        if (delta.topLogprobs) delta.topLogprobs = delta.topLogprobs.map((t) => ({ ...t, text: tokenizer.tokenText(t.token, { ...run }) }));
        delta.tokenText = tokenizer.tokenText(delta.token, run);
      }
      send({ type: 'delta', id, delta });
    },
    onDone: (finishReason, u) => {
      jobs.delete(id);
      if (session !== undefined && seq !== undefined) sessions!.keep(session, seq);
      send({
        type: 'done', id, finishReason, promptTokens: u.promptTokens, completionTokens: u.completionTokens,
        ...(u.speculation ? { speculation: u.speculation } : {}), ...(req.session !== undefined ? { reusedTokens: reused } : {}),
      });
    },
    onError: (err) => {
      jobs.delete(id);
      send(errorMessage(id, err));
    },
  }, speculation);
  if (job.done) return; // e.g. maxTokens 0
  if (session !== undefined && seq !== undefined) reused = sessions!.start(session, seq, prompt);
  sched!.submit(job);
  jobs.set(id, job);
}

async function pump(): Promise<void> {
  if (pumping) return;
  pumping = true;
  try {
    for (;;) {
      await tick(); // let every message that arrived (new requests, aborts) land first
      while (incoming.length) {
        const req = incoming.shift()!;
        try {
          if (req.type === 'score') startScore(req);
          else start(req);
        } catch (err) {
          send(errorMessage(req.id, err));
        }
      }
      if (!sched || sched.pending === 0) break;
      sched.step();
    }
  } finally {
    pumping = false;
  }
}

function handle(req: Request): void {
  switch (req.type) {
    case 'load': {
      const backend = getBackend(req.backend);
      if (req.threads && backend.name === 'cpu') setThreads(req.threads); // the js backend is single-threaded
      loaded = loadModelFile(req.path, backend, (done, total) => send({ type: 'progress', done, total }));
      const c = loaded.model.config;
      cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, maxBytes: req.kvCacheBytes, prefixCaching: req.prefixCaching });
      sched = new Scheduler(loaded.model, cache, { maxBatchTokens: req.maxBatchTokens, maxSequences: req.maxSequences });
      sessions = new SessionKv(cache, () => sched!.newSeq());
      if (req.draftModel) {
        const d = loadModelFile(req.draftModel, backend);
        checkDraftVocabulary(loaded.tokenizer, d.tokenizer, `the draft model ${req.draftModel}`);
        const dc = d.model.config;
        const draftCache = new PagedKvCache({ layers: dc.layers, kvHeads: dc.kvHeads, headDim: dc.headDim, maxBytes: Math.max(2 ** 20, req.kvCacheBytes / 4), prefixCaching: false });
        spec = { draft: { model: d.model, cache: draftCache }, draftMax: req.draftMax ?? 8 };
      } else if (req.lookupNgram) spec = { lookupNgram: req.lookupNgram, draftMax: req.draftMax ?? 8 };
      send({ type: 'loaded', info: { path: req.path, backend: backend.name, config: c, chatTemplate: loaded.chatTemplate } });
      return;
    }
    case 'tokenize':
      send({ type: 'tokens', id: req.id, tokens: loaded!.tokenizer.encode(req.text, { addBos: req.addBos, parseSpecial: true }) });
      return;
    case 'detokenize':
      send({ type: 'text', id: req.id, text: loaded!.tokenizer.decode(req.ids, { skipSpecial: req.skipSpecial }) });
      return;
    case 'session-close':
      sessions?.close(req.session);
      return;
    case 'generate':
    case 'score':
      incoming.push(req);
      void pump();
      return;
    case 'abort': {
      const job = jobs.get(req.id);
      if (Array.isArray(job)) {
        jobs.delete(req.id);
        for (const j of job) j.abort();
        sched!.sweep();
      } else if (job) {
        job.abort();
        sched!.sweep(); // its blocks come back now
      } else if (incoming.some((r) => r.id === req.id)) abortedEarly.add(req.id);
      return; // late aborts of finished requests are dropped
    }
    case 'stats':
      send({ type: 'stats', id: req.id, stats: sched!.stats() });
      return;
    case 'dispose':
      sched?.clear(new Error('Engine disposed'));
      cache?.dispose();
      spec?.draft?.cache.dispose();
      spec?.draft?.model.dispose();
      loaded?.model.dispose();
      loaded = null;
      send({ type: 'disposed' });
      return;
  }
}

port.on('message', (req: Request) => {
  try {
    handle(req);
  } catch (err) {
    send(errorMessage('id' in req ? req.id : null, err));
  }
});
