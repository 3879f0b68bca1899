// Chat templates are code from a model file: rendering is bounded (steps, sizes, time) and
// cancellable, a bad template fails only its own request, and real templates render exactly as
// the unbounded @huggingface/jinja renderer does.
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { ChatTemplateError, renderChatTemplate, type ChatTemplateFailure } from '../src/tokenizer/chat-template.js';
import { nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const QWEN3 = JSON.parse(readFileSync(path.join(root, 'test/fixtures/vocab/qwen3-tokenizer_config.json'), 'utf8')).chat_template as string;
const backend = nativeAvailable ? 'cpu' : 'js';
const user = [{ role: 'user', content: 'hi' }];
const nested = (n: number) => `{% for i in range(${n}) %}{% for j in range(${n}) %}{% for k in range(${n}) %}x{% endfor %}{% endfor %}{% endfor %}`;

function failure(fn: () => unknown): ChatTemplateError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ChatTemplateError);
    return e as ChatTemplateError;
  }
  throw new Error('expected the render to fail');
}

describe('bounded chat template rendering', () => {
  it('renders real templates exactly as the unbounded renderer does', () => {
    const messages = [
      { role: 'system', content: 'You are helpful.' },
      ...Array.from({ length: 40 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `turn ${i} ünïcödé` })),
    ];
    const tools = [{ type: 'function', function: { name: 'weather', description: 'w', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const simple = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% if loop.last %}!{% endif %}{% endfor %}{{ range(3) | join(',') }}";
    for (const [tpl, vars] of [[QWEN3, { tools }], [QWEN3, {}], [simple, {}]] as const) {
      const ours = renderChatTemplate(undefined, messages, { template: tpl, addGenerationPrompt: true, variables: vars }, { bosToken: '<s>', eosToken: '</s>' });
      const ref = new Template(tpl).render({ ...vars, messages, add_generation_prompt: true, bos_token: '<s>', eos_token: '</s>' });
      expect(ours).toBe(ref);
    }
  });

  const hostile: [string, string, ChatTemplateFailure][] = [
    ['a range too long to build', '{% for i in range(300000000) %}x{% endfor %}', 'size'],
    ['a negative-step range too long to build', '{{ range(0, -300000000, -1) | length }}', 'size'],
    ['a string doubled past the size limit', '{% set ns = namespace(s="ab") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}', 'size'],
    ['a list doubled past the size limit', '{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}', 'size'],
    ['an indent of a billion spaces', '{{ "a\\nb" | indent(900000000) }}', 'runtime'],
    ['raise_exception', '{{ raise_exception("no system role") }}', 'runtime'],
    ['a syntax error', '{% for %}', 'syntax'],
  ];
  it.each(hostile)('refuses %s with a ChatTemplateError and the process lives on', (_name, tpl, reason) => {
    expect(failure(() => renderChatTemplate(undefined, user, { template: tpl }, {})).reason).toBe(reason);
  });

  it('bounds nested loops by steps and by time', () => {
    expect(failure(() => renderChatTemplate(undefined, user, { template: nested(1000), limits: { maxSteps: 20_000, timeoutMs: 1e9 } }, {})).reason).toBe('steps');
    expect(failure(() => renderChatTemplate(undefined, user, { template: nested(1000), limits: { maxSteps: 1e12, timeoutMs: 30 } }, {})).reason).toBe('timeout');
    // With the default limits one of the two ends it.
    expect(['steps', 'timeout']).toContain(failure(() => renderChatTemplate(undefined, user, { template: nested(1000) }, {})).reason);
    // A template inside the limits renders in full.
    expect(renderChatTemplate(undefined, user, { template: nested(10), limits: { maxSteps: 1e6, timeoutMs: 1e9 } }, {})).toBe('x'.repeat(1000));
  });

  it('stops when the cancel hook says so, and checks the signal first', () => {
    let polls = 0;
    const e = failure(() => renderChatTemplate(undefined, user, { template: nested(1000), limits: { timeoutMs: 1e9 }, cancelled: () => ++polls > 3 }, {}));
    expect(e.reason).toBe('cancelled');
    expect(polls).toBe(4);
    const ac = new AbortController();
    ac.abort();
    expect(() => renderChatTemplate(undefined, user, { template: 'x', signal: ac.signal }, {})).toThrow(/abort/i);
  });

  it('validates its limits', () => {
    expect(() => renderChatTemplate(undefined, user, { template: 'x', limits: { maxSteps: -1 } }, {})).toThrow(/limits\.maxSteps/);
    expect(() => renderChatTemplate(undefined, user, { template: 'x', limits: { steps: 5 } as never }, {})).toThrow(/Unknown chat template limit 'steps'/);
  });
});

describe('Engine with a hostile chat template', () => {
  it('fails that request only; other requests and the worker carry on', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const good = engine.generate('Once upon a time', { temperature: 0, maxTokens: 8 });
      const bad = engine.generate({ messages: user, template: '{% for i in range(300000000) %}x{% endfor %}' }, { maxTokens: 4 });
      await expect(bad).rejects.toThrow(/chat template: rendering built a list of 300000000 items/);
      await expect(bad).rejects.toMatchObject({ reason: 'size' });
      await expect(bad).rejects.toBeInstanceOf(ChatTemplateError);
      const r = await good;
      expect(r.completionTokens).toBe(8);
      const again = await engine.generate({ messages: user, template: '{{ messages[0].content }}' }, { temperature: 0, maxTokens: 4 });
      expect(again.completionTokens).toBe(4);
    } finally {
      await engine.dispose();
    }
  });

  it('text that cannot fit the context is refused before it is encoded (a template can amplify a few messages into megabytes)', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const ctx = engine.info.config.contextLength;
      const amplify = `{{ messages | map(attribute='content') | join('${'-'.repeat(3000)}') }}`;
      const many = Array.from({ length: 1000 }, () => ({ role: 'user', content: 'hi' }));
      await expect(engine.generate({ messages: many, template: amplify }, { maxTokens: 1 })).rejects.toThrow(
        new RegExp(`^Expected a prompt of at most the model's context length ${ctx} tokens but received 2999000 characters of text, far more than ${ctx} tokens of at most \\d+ bytes each can hold$`),
      );
      await expect(engine.generate('x'.repeat(2_000_000), { maxTokens: 1 })).rejects.toThrow(/received 2000000 characters of text/);
      // Text under the bound still goes to the encoder, whose token count decides.
      await expect(engine.generate('Once upon a time '.repeat(700), { maxTokens: 1 })).rejects.toThrow(/Expected a prompt of at most the model's context length \d+ tokens but received \d+$/);
      expect((await engine.generate('Once upon a time', { temperature: 0, maxTokens: 3 })).completionTokens).toBe(3);
    } finally {
      await engine.dispose();
    }
  });

  it('an abort reaches a render in progress (it ends as aborted, not as a template timeout)', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const ac = new AbortController();
      const p = engine.generate({ messages: user, template: nested(1000) }, { maxTokens: 4, signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      const r = await p;
      expect(r.finishReason).toBe('abort');
      expect(r.completionTokens).toBe(0);
      expect((await engine.stats()).kvBlocksUsed).toBe(0);
    } finally {
      await engine.dispose();
    }
  });
});
