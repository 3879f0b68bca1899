/** Messages between Engine (main thread) and its model worker. */
import type { LlamaConfig } from '../model/config.js';
import type { Delta, FinishReason, GenerateOptions, SpeculationStats } from '../runtime/generate.js';
import type { SchedulerStats } from '../runtime/scheduler.js';
import type { SerializedError } from './errors.js';

import type { ChatMessage } from '../tokenizer/chat-template.js';
export type { ChatMessage };

/** Text, token ids, or chat messages rendered with the model's (or the given) chat template. */
export type Prompt = string | number[] | { messages: ChatMessage[]; template?: string };

export interface LoadRequest {
  type: 'load';
  path: string;
  backend: 'cpu' | 'js' | 'auto';
  kvCacheBytes: number;
  threads?: number;
  maxBatchTokens?: number;
  maxSequences?: number;
  prefixCaching?: boolean;
  draftModel?: string;
  draftMax?: number;
  lookupNgram?: number;
}

export type Request =
  | LoadRequest
  /**
   * `cancel` (chat prompts): a shared flag the main thread sets on abort, which the worker polls while it renders the template.
   * `session` (ChatSession turns): continue that session's KV sequence and keep the result's as the session's.
   */
  | { type: 'generate'; id: number; prompt: Prompt; options: GenerateOptions & { addBos?: boolean; tokenTexts?: boolean; speculative?: boolean }; cancel?: Int32Array; session?: number }
  /** Teacher-forced scoring of each item's completion after its prompt (engine.score). */
  | { type: 'score'; id: number; items: ScoreItem[]; options: { topLogprobs?: number; promptLogprobs?: boolean; addBos?: boolean } }
  | { type: 'abort'; id: number }
  | { type: 'tokenize'; id: number; text: string; addBos: boolean }
  | { type: 'detokenize'; id: number; ids: number[]; skipSpecial: boolean }
  /** A ChatSession is reset or disposed: free the KV sequence it keeps. */
  | { type: 'session-close'; session: number }
  | { type: 'stats'; id: number }
  | { type: 'dispose' };

/** A prompt and the completion to score after it: text, or token ids (used as they are). */
export interface ScoreItem {
  prompt: string | number[];
  completion: string | number[];
}

/** Scored tokens: ids, each token's text, log-probabilities (and the top alternatives when asked). */
export interface ScoredTokens {
  tokens: number[];
  /** Each token's text, decoded alone (control tokens are empty). */
  pieces: string[];
  /** log p(token | everything before it), natural log, from the unmodified model distribution. */
  logprobs: number[];
  /** With options.topLogprobs: the most likely tokens at each position, best first. */
  topLogprobs?: { token: number; logprob: number; text: string }[][];
}

export interface ScoreResult extends ScoredTokens {
  /** Sum of logprobs: log p(completion | prompt). */
  sum: number;
  /** Prompt tokens (BOS included). */
  promptTokens: number;
  /** With options.promptLogprobs: the prompt's tokens after the first, scored the same way. */
  prompt?: ScoredTokens;
}

export interface ModelInfo {
  path: string;
  backend: string;
  config: LlamaConfig;
  chatTemplate: string | null;
}

export type Response =
  | { type: 'loaded'; info: ModelInfo }
  | { type: 'progress'; done: number; total: number }
  | ({ type: 'error'; id: number | null } & SerializedError)
  | { type: 'delta'; id: number; delta: Delta }
  /** `reusedTokens` (session turns): prompt tokens the turn found in the session's KV sequence. */
  | { type: 'done'; id: number; finishReason: FinishReason; promptTokens: number; completionTokens: number; speculation?: SpeculationStats; reusedTokens?: number }
  | { type: 'tokens'; id: number; tokens: number[] }
  | { type: 'scored'; id: number; results: ScoreResult[] }
  | { type: 'text'; id: number; text: string }
  | { type: 'stats'; id: number; stats: SchedulerStats }
  | { type: 'disposed' };
