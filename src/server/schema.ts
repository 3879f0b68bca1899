/** JSON schemas of the OpenAI-compatible request bodies (validated by fastify's Ajv; unknown fields are refused). */

const stop = {
  anyOf: [
    { type: 'string', minLength: 1 },
    { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 16 },
    { type: 'null' },
  ],
};
const num = (min: number, max: number) => ({ type: ['number', 'null'], minimum: min, maximum: max });
const int = (min: number, max: number) => ({ type: ['integer', 'null'], minimum: min, maximum: max });

/** Fields both endpoints take. Harmless metadata (user, metadata, store) is accepted and ignored. */
const common = {
  model: { type: 'string' },
  max_tokens: int(0, 1 << 20),
  temperature: num(0, 2),
  top_p: num(0, 1),
  top_k: int(0, 1 << 20),
  min_p: num(0, 1),
  seed: { type: ['integer', 'null'], minimum: 0, maximum: 2 ** 32 - 1 },
  stop,
  n: int(1, 16),
  presence_penalty: num(-2, 2),
  frequency_penalty: num(-2, 2),
  repetition_penalty: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 10 },
  stream: { type: ['boolean', 'null'] },
  stream_options: {
    anyOf: [{ type: 'object', properties: { include_usage: { type: 'boolean' } }, additionalProperties: false }, { type: 'null' }],
  },
  user: { type: 'string' },
  metadata: { type: ['object', 'null'] },
  store: { type: ['boolean', 'null'] },
};

const content = {
  anyOf: [
    { type: 'string' },
    {
      type: 'array',
      items: { type: 'object', required: ['type', 'text'], properties: { type: { const: 'text' }, text: { type: 'string' } }, additionalProperties: false },
    },
  ],
};

export const chatSchema = {
  type: 'object',
  required: ['messages'],
  additionalProperties: false,
  properties: {
    ...common,
    max_completion_tokens: int(0, 1 << 20),
    logprobs: { type: ['boolean', 'null'] },
    top_logprobs: int(0, 20),
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role', 'content'],
        properties: { role: { enum: ['system', 'developer', 'user', 'assistant'] }, content, name: { type: 'string' } },
        additionalProperties: false,
      },
    },
  },
} as const;

export const completionSchema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    ...common,
    logprobs: int(0, 20),
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 },
      ],
    },
  },
} as const;
