/**
 * Errors across the worker boundary. postMessage's structured clone keeps only the built-in error
 * types, so the worker sends name, message and the error's own plain fields (ModelFileError.file,
 * NonFiniteLogitsError.position, ...), and the main thread rebuilds the project's class from them:
 * `instanceof` and the fields work as if the error had been thrown on the caller's thread.
 */
import { BackendUnavailableError } from '../backend/index.js';
import { CudaUnavailableError } from '../backend/cuda/device.js';
import { ModelFileError } from '../formats/errors.js';
import { NonFiniteLogitsError } from '../runtime/errors.js';
import { KvCacheFullError } from '../runtime/kv/cache.js';
import { GptqFormatError } from '../tensor/gptq.js';
import { DisposedError } from '../tensor/tensor.js';
import { ChatTemplateError } from '../tokenizer/chat-template.js';

/** A field value that crosses postMessage unchanged. */
export type ErrorField = string | number | boolean | null;

/** An error as the worker sends it. */
export interface SerializedError {
  name: string;
  message: string;
  /** The error's own enumerable fields with plain values (not name, message or stack). */
  fields?: Record<string, ErrorField>;
}

type ErrorClass = abstract new (...args: never[]) => Error;

/** The classes rebuilt by name on the main thread; any other name becomes an Error with that name. */
const CLASSES: Record<string, ErrorClass> = {
  ModelFileError, KvCacheFullError, NonFiniteLogitsError, ChatTemplateError, DisposedError, GptqFormatError, BackendUnavailableError,
  CudaUnavailableError,
};
const BUILTIN: Record<string, ErrorConstructor> = { RangeError, TypeError, SyntaxError, URIError, EvalError, ReferenceError };

export function serializeError(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const fields: Record<string, ErrorField> = {};
  for (const [k, v] of Object.entries(err))
    if (k !== 'name' && k !== 'message' && k !== 'stack' && (v === null || ['string', 'number', 'boolean'].includes(typeof v))) fields[k] = v as ErrorField;
  return { name: err.name, message: err.message, ...(Object.keys(fields).length ? { fields } : {}) };
}

/**
 * The error the worker threw, rebuilt on this thread: the project's class (its constructor is not
 * re-run, so the message stays exactly the worker's), a built-in error type, or an Error named as
 * the original.
 */
export function reviveError(s: SerializedError): Error {
  const builtin = Object.hasOwn(BUILTIN, s.name) ? BUILTIN[s.name]! : null;
  if (builtin) return new builtin(s.message);
  const cls = Object.hasOwn(CLASSES, s.name) ? CLASSES[s.name]! : null;
  const e: Error = cls ? Reflect.construct(Error, [s.message], cls) : new Error(s.message);
  e.name = s.name;
  for (const [k, v] of Object.entries(s.fields ?? {})) if (k !== 'name' && k !== 'message' && k !== 'stack') (e as unknown as Record<string, ErrorField>)[k] = v;
  return e;
}
