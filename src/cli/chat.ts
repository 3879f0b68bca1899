/** `tessera chat`: an interactive conversation using the model's chat template. */
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { Engine } from '../engine/engine.js';
import type { ChatMessage } from '../engine/protocol.js';
import { backendName, defaultModelPath, inputFile, MAX_TOKENS, num, parse } from './common.js';
import { UsageError } from './errors.js';

export const CHAT_HELP = `Usage: tessera chat -m FILE [--system TEXT] [--template FILE] [options]

An interactive chat: each line you type is a user message; the reply streams back. The prompt
is rendered with the model's chat template (GGUF tokenizer.chat_template or tokenizer_config.json);
models without one need --template. Type /reset to clear the conversation, /exit or Ctrl-D to quit.

Options:
  -m, --model FILE         Model (GGUF file or Hugging Face directory)
      --system TEXT        System message
      --template FILE      Jinja chat template to use instead of the model's
  -n, --max-tokens N       Reply length limit (default 512)
      --temperature T      (default 0.8)  --top-k K  --top-p P  --min-p P  --seed S
      --backend B          cpu | js | auto
      --threads N          Native threads
  -h, --help               Show this help
`;

export async function chatCommand(argv: string[]): Promise<void> {
  const { values: a } = parse('chat', argv, {
    model: { type: 'string', short: 'm' }, system: { type: 'string' }, template: { type: 'string' }, 'max-tokens': { type: 'string', short: 'n' },
    temperature: { type: 'string' }, 'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'min-p': { type: 'string' }, seed: { type: 'string' },
    backend: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (a.help) return void process.stdout.write(CHAT_HELP);
  const model = a.model ?? defaultModelPath();
  if (!existsSync(model)) throw new UsageError(`model file not found: ${model}`);
  const template = a.template === undefined ? undefined : readFileSync(inputFile(a.template, 'template file'), 'utf8');
  // Every number is checked before the model loads (the same ranges as tessera generate).
  const sampling = {
    maxTokens: num(a['max-tokens'], 'max-tokens', true, 1, MAX_TOKENS) ?? 512,
    temperature: num(a.temperature, 'temperature', false, 0),
    topK: num(a['top-k'], 'top-k', true, 0),
    topP: num(a['top-p'], 'top-p', false, 0, 1),
    minP: num(a['min-p'], 'min-p', false, 0, 1),
    seed: num(a.seed, 'seed', true, 0, 2 ** 32 - 1),
  };
  const backend = backendName(a.backend);
  const threads = num(a.threads, 'threads', true, 1, 1024);
  const engine = await Engine.load(model, { backend, threads });
  if (!template && !engine.info.chatTemplate) {
    await engine.dispose();
    throw new UsageError(`${model} has no chat template; pass one with --template FILE (see tessera chat --help)`);
  }
  const history: ChatMessage[] = a.system ? [{ role: 'system', content: a.system }] : [];
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  let current: AbortController | null = null;
  rl.on('SIGINT', () => (current ? current.abort() : rl.close()));
  try {
    for (;;) {
      let line: string;
      try {
        line = await rl.question('> ');
      } catch {
        break; // closed (Ctrl-D / end of input)
      }
      const text = line.trim();
      if (text === '/exit' || text === '/quit') break;
      if (text === '/reset') {
        history.splice(a.system ? 1 : 0);
        continue;
      }
      if (!text) continue;
      history.push({ role: 'user', content: text });
      current = new AbortController();
      let reply = '';
      const it = engine.chat(history, { ...sampling, template, signal: current.signal });
      let r;
      while (!(r = await it.next()).done) {
        reply += r.value.text;
        process.stdout.write(r.value.text);
      }
      current = null;
      process.stdout.write('\n');
      history.push({ role: 'assistant', content: reply });
    }
  } finally {
    rl.close();
    await engine.dispose();
  }
}
