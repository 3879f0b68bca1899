/**
 * The model worker: loads a model and runs requests one at a time, yielding to its own event
 * loop between tokens so abort messages arrive mid-generation. The main thread never runs model
 * code (ARCHITECTURE rule 2).
 */
import { parentPort } from 'node:worker_threads';
import { getBackend, setThreads } from '../backend/index.js';
import { loadModelFile, type LoadedModel } from '../model/load.js';
import { generateTokens } from '../runtime/generate.js';
import { PagedKvCache } from '../runtime/kv-cache.js';
import type { Request, Response } from './protocol.js';

const port = parentPort!;
const send = (m: Response) => port.postMessage(m);
let loaded: LoadedModel | null = null;
let cache: PagedKvCache | null = null;
const aborted = new Set<number>();
const queue: Request[] = [];
let busy = false;
let nextSeq = 0;

const tick = () => new Promise<void>((r) => setImmediate(r));

async function handle(req: Request): Promise<void> {
  switch (req.type) {
    case 'load': {
      const backend = getBackend(req.backend);
      if (req.threads && backend.name === 'cpu') setThreads(req.threads); // the js backend is single-threaded
      loaded = loadModelFile(req.path, backend, (done, total) => send({ type: 'progress', done, total }));
      const c = loaded.model.config;
      cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, maxBytes: req.kvCacheBytes });
      send({ type: 'loaded', info: { path: req.path, backend: backend.name, config: c, chatTemplate: loaded.chatTemplate } });
      return;
    }
    case 'tokenize':
      send({ type: 'tokens', id: req.id, tokens: loaded!.tokenizer.encode(req.text, { addBos: req.addBos, parseSpecial: true }) });
      return;
    case 'generate': {
      const { model, tokenizer } = loaded!;
      if (aborted.has(req.id)) {
        // Aborted while queued: no tokenizing, no prefill.
        aborted.delete(req.id);
        live.delete(req.id);
        send({ type: 'done', id: req.id, finishReason: 'abort', promptTokens: 0, completionTokens: 0 });
        return;
      }
      let prompt: number[];
      if (typeof req.prompt === 'string') prompt = tokenizer.encode(req.prompt, { addBos: req.options.addBos ?? true, parseSpecial: true });
      else if (Array.isArray(req.prompt)) prompt = req.prompt;
      else {
        const text = tokenizer.applyChatTemplate(req.prompt.messages, { addGenerationPrompt: true, template: req.prompt.template });
        // Templates that write the BOS text themselves must not get a second BOS.
        const bos = tokenizer.bosId === undefined ? '' : tokenizer.piece(tokenizer.bosId);
        prompt = tokenizer.encode(text, { addBos: req.options.addBos ?? (tokenizer.addBos && !(bos && text.startsWith(bos))), parseSpecial: true });
      }
      const seq = nextSeq++;
      cache!.add(seq);
      let completion = 0;
      try {
        const it = generateTokens(model, tokenizer, cache!, seq, prompt, req.options, () => aborted.has(req.id), () => nextSeq++);
        for (;;) {
          const r = it.next();
          if (r.done) {
            send({ type: 'done', id: req.id, finishReason: r.value, promptTokens: prompt.length, completionTokens: completion });
            break;
          }
          if (r.value.token !== null) completion++;
          // Empty no-token deltas only mark a step (beam search): tick for aborts, send nothing.
          if (r.value.token !== null || r.value.text) send({ type: 'delta', id: req.id, delta: r.value });
          await tick();
        }
      } finally {
        cache!.free(seq);
        aborted.delete(req.id);
        live.delete(req.id);
      }
      return;
    }
    case 'dispose':
      cache?.dispose();
      loaded?.model.dispose();
      loaded = null;
      send({ type: 'disposed' });
      return;
  }
}

async function drain(): Promise<void> {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const req = queue.shift()!;
    try {
      await handle(req);
    } catch (err) {
      const e = err as Error;
      if (req.type === 'generate') live.delete(req.id);
      send({ type: 'error', id: 'id' in req ? req.id : null, name: e.name ?? 'Error', message: e.message ?? String(err) });
    }
  }
  busy = false;
}

const live = new Set<number>(); // generate requests queued or running
port.on('message', (req: Request) => {
  if (req.type === 'abort') {
    if (live.has(req.id)) aborted.add(req.id); // late aborts of finished requests are dropped
    return;
  }
  if (req.type === 'generate') live.add(req.id);
  queue.push(req);
  void drain();
});
