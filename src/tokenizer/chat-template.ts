/**
 * Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, Hugging Face
 * tokenizer_config.json `chat_template`) rendered with @huggingface/jinja, given the variables
 * transformers' apply_chat_template passes (messages, add_generation_prompt, bos_token, eos_token).
 *
 * A template comes from a model file, so it is untrusted code: rendering runs under limits on the
 * interpreter's steps (every node it evaluates, every element `range()` produces), the size of any
 * string or list it builds, wall time, and a cancel hook that another thread can trip (the Engine
 * shares an abort flag with its worker). Breaking a limit throws ChatTemplateError for that render
 * alone. `range()` pays before it builds its list (`range(300000000)` is refused, not allocated);
 * other values are measured once built, so one filter call such as `indent(900000000)` may allocate
 * a large transient string (or hit the engine's string limit) before it is refused.
 */
import * as jinja from '@huggingface/jinja';

// The package's .d.ts re-exports these through extension-less paths that NodeNext resolution does
// not follow, so they are typed here by the parts this file uses.
interface JinjaValue { value?: unknown }
interface JinjaEnvironment { set(name: string, value: unknown): unknown }
interface JinjaInterpreter {
  run(program: unknown): JinjaValue;
  evaluate(statement: unknown, environment: unknown): JinjaValue;
}
const { Template } = jinja;
type Template = jinja.Template;
const Environment = jinja.Environment as unknown as new () => JinjaEnvironment;
const Interpreter = jinja.Interpreter as unknown as new (env: JinjaEnvironment) => JinjaInterpreter;

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** Bounds on one render. Defaults: DEFAULT_TEMPLATE_LIMITS. */
export interface ChatTemplateLimits {
  /** Interpreter steps (nodes evaluated plus elements produced by range()). */
  maxSteps: number;
  /** Longest string (in UTF-16 units) the template may build, its output included. */
  maxChars: number;
  /** Longest list the template may build. */
  maxItems: number;
  /** Wall time in milliseconds. */
  timeoutMs: number;
}

export const DEFAULT_TEMPLATE_LIMITS: Readonly<ChatTemplateLimits> = Object.freeze({
  maxSteps: 500_000,
  maxChars: 8 << 20,
  maxItems: 1 << 20,
  timeoutMs: 2000,
});

export interface ChatTemplateOptions {
  /** End with the prompt that makes the model answer as the assistant. */
  addGenerationPrompt?: boolean;
  /** A template to use instead of the model's own. */
  template?: string;
  /** More variables for the template (tools, enable_thinking, ...). */
  variables?: Record<string, unknown>;
  /** Tighter or looser bounds than DEFAULT_TEMPLATE_LIMITS. */
  limits?: Partial<ChatTemplateLimits>;
  /** Checked before rendering (a render is synchronous, so a signal cannot fire during it). */
  signal?: AbortSignal;
  /** Polled during rendering; returning true stops it with a ChatTemplateError whose reason is 'cancelled'. */
  cancelled?: () => boolean;
}

export type ChatTemplateFailure = 'syntax' | 'runtime' | 'steps' | 'size' | 'timeout' | 'cancelled';

/** A chat template that failed to parse or render, or broke a limit; `reason` says which. */
export class ChatTemplateError extends Error {
  readonly reason: ChatTemplateFailure;
  constructor(reason: ChatTemplateFailure, message: string) {
    super(`chat template: ${message}`);
    this.name = 'ChatTemplateError';
    this.reason = reason;
  }
}

const cache = new Map<string, Template>();

function compile(source: string): Template {
  let t = cache.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new ChatTemplateError('syntax', `cannot parse: ${(e as Error)?.message ?? String(e)}`);
    }
    if (cache.size > 16) cache.clear();
    cache.set(source, t);
  }
  return t;
}

function positiveLimit(v: unknown, key: keyof ChatTemplateLimits): number {
  if (typeof v !== 'number' || !(v > 0)) throw new RangeError(`Expected a positive number for limits.${key} but received ${String(v)}`);
  return v;
}

function resolveLimits(l: Partial<ChatTemplateLimits> | undefined): ChatTemplateLimits {
  if (l !== undefined && (l === null || typeof l !== 'object')) throw new TypeError(`Expected an object for options.limits but received ${l === null ? 'null' : typeof l}`);
  const out = { ...DEFAULT_TEMPLATE_LIMITS };
  for (const k of Object.keys(l ?? {})) {
    if (!(k in out)) throw new TypeError(`Unknown chat template limit '${k}' (expected ${Object.keys(out).join(', ')})`);
    const key = k as keyof ChatTemplateLimits;
    if (l![key] !== undefined) out[key] = positiveLimit(l![key], key);
  }
  return out;
}

/** The interpreter with a budget: every evaluated node costs a step, every built value is measured. */
class BoundedInterpreter extends Interpreter {
  steps = 0;
  readonly #limits: ChatTemplateLimits;
  readonly #deadline: number;
  readonly #cancelled: (() => boolean) | undefined;

  constructor(env: JinjaEnvironment, limits: ChatTemplateLimits, cancelled: (() => boolean) | undefined) {
    super(env);
    this.#limits = limits;
    this.#deadline = performance.now() + limits.timeoutMs;
    this.#cancelled = cancelled;
  }

  /** Spends n steps; every 1024 steps also looks at the clock and the cancel hook. */
  spend(n: number): void {
    const before = this.steps;
    this.steps += n;
    if (this.steps > this.#limits.maxSteps)
      throw new ChatTemplateError('steps', `rendering took more than ${this.#limits.maxSteps} steps (a loop too long for a chat prompt)`);
    if ((before >>> 10) !== (this.steps >>> 10)) {
      if (performance.now() > this.#deadline) throw new ChatTemplateError('timeout', `rendering took longer than ${this.#limits.timeoutMs} ms`);
      if (this.#cancelled?.()) throw new ChatTemplateError('cancelled', 'rendering was cancelled');
    }
  }

  listOf(n: number): void {
    if (n > this.#limits.maxItems) throw new ChatTemplateError('size', `rendering built a list of ${n} items (limit ${this.#limits.maxItems})`);
  }

  /** Strings and lists (the interpreter's values carry them in `.value`) are held to their limits. */
  measure(v: JinjaValue | undefined): void {
    const x = v?.value;
    if (typeof x === 'string' && x.length > this.#limits.maxChars)
      throw new ChatTemplateError('size', `rendering built a string of ${x.length} characters (limit ${this.#limits.maxChars})`);
    if (Array.isArray(x)) this.listOf(x.length);
  }

  override evaluate(statement: unknown, environment: unknown): JinjaValue {
    this.spend(1);
    const v = super.evaluate(statement, environment);
    this.measure(v);
    return v;
  }
}

/** Python's range() with the interpreter paying for each element before the list exists. */
function boundedRange(interp: () => BoundedInterpreter) {
  return (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) [start, stop] = [0, start];
    for (const [v, name] of [[start, 'start'], [stop, 'stop'], [step, 'step']] as const)
      if (!Number.isInteger(v)) throw new Error(`range() ${name} must be an integer, got ${String(v)}`);
    if (step === 0) throw new Error('range() step must not be zero');
    const n = Math.max(0, Math.ceil((stop - start) / step));
    interp().listOf(n);
    interp().spend(n);
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = start + i * step;
    return out;
  };
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** strftime_now as @huggingface/jinja defines it (the directives chat templates use). */
function strftimeNow(format: string): string {
  const d = new Date();
  return String(format).replace(/%[YmdbBHM%]/g, (t) => {
    switch (t) {
      case '%Y': return String(d.getFullYear());
      case '%m': return pad2(d.getMonth() + 1);
      case '%d': return pad2(d.getDate());
      case '%b': return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(d);
      case '%B': return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(d);
      case '%H': return pad2(d.getHours());
      case '%M': return pad2(d.getMinutes());
      default: return '%';
    }
  });
}

export function renderChatTemplate(
  modelTemplate: string | undefined,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions,
  tokens: { bosToken?: string; eosToken?: string },
): string {
  const source = opts.template ?? modelTemplate;
  if (source === undefined)
    throw new TypeError('Expected a chat template in the model (tokenizer.chat_template) or in options.template but received none');
  if (typeof source !== 'string') throw new TypeError(`Expected a string for options.template but received ${typeof source}`);
  if (!Array.isArray(messages)) throw new TypeError(`Expected an array for messages but received ${typeof messages}`);
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string')
      throw new TypeError(`Expected {role: string, content: string} for messages[${i}] but received ${JSON.stringify(m)}`);
  });
  if (opts.cancelled !== undefined && typeof opts.cancelled !== 'function')
    throw new TypeError(`Expected a function for options.cancelled but received ${typeof opts.cancelled}`);
  const limits = resolveLimits(opts.limits);
  opts.signal?.throwIfAborted();
  const template = compile(source);

  const env = new Environment();
  let interp: BoundedInterpreter | undefined;
  // The globals Template.render sets, with range() bounded; then the caller's variables.
  const globals: Record<string, unknown> = {
    false: false, true: true, none: null, False: false, True: true, None: null,
    raise_exception: (msg: unknown) => { throw new ChatTemplateError('runtime', `the template raised: ${String(msg)}`); },
    range: boundedRange(() => interp!),
    strftime_now: strftimeNow,
    ...opts.variables,
    messages,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
    bos_token: tokens.bosToken ?? '',
    eos_token: tokens.eosToken ?? '',
  };
  for (const [k, v] of Object.entries(globals)) env.set(k, v);
  interp = new BoundedInterpreter(env, limits, opts.cancelled);
  let out: unknown;
  try {
    out = interp.run(template.parsed).value;
  } catch (e) {
    if (e instanceof ChatTemplateError) throw e;
    // The interpreter's own errors, and the engine's (deep recursion, an over-long string).
    throw new ChatTemplateError('runtime', (e as Error)?.message ?? String(e));
  }
  if (typeof out !== 'string') throw new ChatTemplateError('runtime', `rendering produced ${typeof out}, not text`);
  if (out.length > limits.maxChars) throw new ChatTemplateError('size', `the rendered prompt has ${out.length} characters (limit ${limits.maxChars})`);
  return out;
}
