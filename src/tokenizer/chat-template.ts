/**
 * Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, Hugging Face
 * tokenizer_config.json `chat_template`) rendered with @huggingface/jinja, given the variables
 * transformers' apply_chat_template passes (messages, add_generation_prompt, bos_token, eos_token).
 */
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the prompt that makes the model answer as the assistant. */
  addGenerationPrompt?: boolean;
  /** A template to use instead of the model's own. */
  template?: string;
  /** More variables for the template (tools, enable_thinking, ...). */
  variables?: Record<string, unknown>;
}

const cache = new Map<string, Template>();

function compile(source: string): Template {
  let t = cache.get(source);
  if (!t) {
    t = new Template(source);
    if (cache.size > 16) cache.clear();
    cache.set(source, t);
  }
  return t;
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
  return compile(source).render({
    ...opts.variables,
    messages,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
    bos_token: tokens.bosToken ?? '',
    eos_token: tokens.eosToken ?? '',
  });
}
