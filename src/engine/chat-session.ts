/**
 * ChatSession: a conversation on an Engine that keeps its history and its KV cache between turns
 * (node-llama-cpp's LlamaChatSession habit). Each turn renders the whole history with the chat
 * template, and the worker starts it on the K/V the session's previous turn left (session-kv.ts),
 * so a turn prefills only what the previous turn did not already compute: normally the new user
 * message and the template's text around it.
 *
 * One turn at a time. A turn that ends by abort (its signal, breaking out of promptStream, or
 * dispose) is not added to the history; its result still holds the text produced until then.
 */
import * as check from '../tensor/check.js';
import { DisposedError } from '../tensor/tensor.js';
import type { Delta } from '../runtime/generate.js';
import type { Engine, EngineGenerateOptions, GenerateResult } from './engine.js';
import { SESSION_CLOSE, SESSION_TURN } from './internal.js';
import { checkOptionNames } from './options.js';
import type { ChatMessage } from './protocol.js';

export interface ChatSessionOptions {
  /** System message, rendered first in every turn (kept by reset()). */
  system?: string;
  /** Jinja chat template to use instead of the model's (required when the model has none). */
  template?: string;
  /** Earlier messages to continue from ({ role, content }; put the system message in `system`). */
  history?: ChatMessage[];
}

/** One turn's result: the reply as engine.generate() returns it, plus the KV it reused. */
export interface ChatTurnResult extends GenerateResult {
  /** Prompt tokens found in the session's KV cache (computed by earlier turns) and not prefilled again. */
  reusedTokens: number;
}

const disposeSymbol: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for('nodejs.dispose');

/** Session ids: unique in the process, so unique within every engine's worker. */
let nextSession = 1;

function checkMessages(v: unknown, name: string): ChatMessage[] {
  if (!Array.isArray(v)) throw new TypeError(`Expected an array of { role, content } messages for ${name}`);
  return v.map((m: unknown, i) => {
    if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string')
      throw new TypeError(`Expected { role: string, content: string } for ${name}[${i}]`);
    return { ...(m as ChatMessage) };
  });
}

export class ChatSession {
  readonly engine: Engine;
  /** The system message every turn starts with (undefined: none). */
  readonly system: string | undefined;
  /** The chat template this session renders with (undefined: the model's). */
  readonly template: string | undefined;
  #id = nextSession++;
  #history: ChatMessage[];
  #turn: AbortController | null = null;
  #disposed = false;

  constructor(engine: Engine, options: ChatSessionOptions = {}) {
    if (typeof (engine as Partial<Engine> | null)?.[SESSION_TURN] !== 'function') throw new TypeError('Expected an Engine for engine');
    const o = check.options<ChatSessionOptions>(options, 'options');
    checkOptionNames(o, ['system', 'template', 'history'], 'the ChatSession options');
    if (o.system !== undefined && typeof o.system !== 'string') throw new TypeError('Expected a string for options.system');
    if (o.template !== undefined && (typeof o.template !== 'string' || !o.template)) throw new TypeError('Expected a Jinja chat template (a non-empty string) for options.template');
    if (o.template === undefined && engine.info.chatTemplate === null)
      throw new TypeError(`Expected options.template: the model ${engine.info.path} has no chat template`);
    this.engine = engine;
    this.system = o.system;
    this.template = o.template;
    this.#history = o.history === undefined ? [] : checkMessages(o.history, 'options.history');
  }

  /** The conversation so far (user and assistant messages, without the system message); a copy. */
  get history(): ChatMessage[] {
    return this.#history.map((m) => ({ ...m }));
  }

  /** True while a turn runs. */
  get busy(): boolean {
    return this.#turn !== null;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Sends a user message and resolves with the whole reply (finishReason 'abort' when aborted). */
  async prompt(text: string, options: EngineGenerateOptions = {}): Promise<ChatTurnResult> {
    const it = this.promptStream(text, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Sends a user message and streams the reply; returns the turn's result. */
  async *promptStream(text: string, options: EngineGenerateOptions = {}): AsyncGenerator<Delta, ChatTurnResult> {
    if (this.#disposed) throw new DisposedError('ChatSession');
    if (this.#turn) throw new Error('ChatSession: a turn is already running; await it (or abort it) before the next prompt');
    if (typeof text !== 'string') throw new TypeError('Expected a string (the user message) for text');
    const o = check.options<EngineGenerateOptions>(options, 'options');
    const turn = new AbortController();
    // dispose() stops the turn through `turn`; the caller's signal still reaches it.
    const signal = o.signal instanceof AbortSignal ? AbortSignal.any([o.signal, turn.signal]) : o.signal ?? turn.signal;
    const user: ChatMessage = { role: 'user', content: text };
    const messages = [...(this.system !== undefined ? [{ role: 'system', content: this.system }] : []), ...this.#history, user];
    this.#turn = turn;
    try {
      const result = (yield* this.engine[SESSION_TURN](this.#id, { messages, template: this.template }, { ...o, signal })) as ChatTurnResult;
      if (result.finishReason !== 'abort' && !this.#disposed) this.#history.push(user, { role: 'assistant', content: result.text });
      return result;
    } finally {
      this.#turn = null;
    }
  }

  /** Forgets the conversation (the system message stays) and frees its KV cache. Not during a turn. */
  reset(): void {
    if (this.#disposed) throw new DisposedError('ChatSession');
    if (this.#turn) throw new Error('ChatSession: cannot reset during a turn; await it (or abort it) first');
    this.engine[SESSION_CLOSE](this.#id);
    this.#id = nextSession++;
    this.#history = [];
  }

  /** Stops a running turn (it ends as aborted) and frees the session's KV cache. Safe to call twice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#turn?.abort();
    this.engine[SESSION_CLOSE](this.#id);
  }

  [disposeSymbol](): void {
    this.dispose();
  }
}
