/** `tessera chat`: an interactive conversation (a ChatSession) using the model's chat template. */
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { bundledModelPath } from '../engine/bundled.js';
import type { ChatSession } from '../engine/chat-session.js';
import { Engine, type EngineGenerateOptions } from '../engine/engine.js';
import { backendName, inputFile, MAX_TOKENS, num, parse } from './common.js';
import { UsageError } from './errors.js';

export const CHAT_HELP = `Usage: tessera chat [-m FILE] [--system TEXT] [--template FILE] [options]

An interactive chat: each line you type is a user message; the reply streams back. The prompt
is rendered with the model's chat template (GGUF tokenizer.chat_template or tokenizer_config.json);
models without one need --template. The conversation's KV cache is kept between turns, so each
turn computes only the new message. Without -m it runs the bundled stories260K, a toy that
answers everything with a children's story.

  /reset        clear the conversation (the system message stays)
  /exit, /quit  quit (as do Ctrl-D and the end of piped input)
  Ctrl-C        stop the reply being written (it is left out of the conversation);
                at the prompt, quit

Options:
  -m, --model FILE         Model (GGUF file or Hugging Face directory; default: the bundled stories260K)
      --system TEXT        System message
      --template FILE      Jinja chat template to use instead of the model's
  -n, --max-tokens N       Reply length limit (default 512)
      --temperature T      (default 0.8)  --top-k K  --top-p P  --min-p P  --seed S
      --backend B          cpu | js | auto
      --threads N          Native threads
  -h, --help               Show this help
`;

/** Where the chat loop writes: the reply text, notes to the user, the input prompt. */
export interface ChatIo {
  write(text: string): void;
  note(text: string): void;
  prompt(): void;
}

/**
 * The chat's input handling, apart from readline so it can be tested: lines queue and run one turn
 * at a time (piped input arrives all at once); interrupt() (Ctrl-C) stops the running turn, or
 * quits when none runs; end() (Ctrl-D, end of input) quits once the queued lines are answered;
 * /exit quits at once. `finished` resolves when the loop has quit and no turn is running.
 */
export class ChatLoop {
  readonly finished: Promise<void>;
  readonly #session: Pick<ChatSession, 'promptStream' | 'reset'>;
  readonly #io: ChatIo;
  readonly #options: EngineGenerateOptions;
  readonly #queue: string[] = [];
  #turn: AbortController | null = null;
  #busy = false;
  #ended = false;
  #quit = false;
  #resolve!: () => void;

  constructor(session: Pick<ChatSession, 'promptStream' | 'reset'>, io: ChatIo, options: EngineGenerateOptions = {}) {
    this.#session = session;
    this.#io = io;
    this.#options = options;
    this.finished = new Promise((r) => (this.#resolve = r));
  }

  /** True once the loop quit (further input is ignored). */
  get quitting(): boolean {
    return this.#quit;
  }

  /** A line of input. */
  line(text: string): void {
    if (this.#quit) return;
    this.#queue.push(text);
    void this.#pump();
  }

  /** Ctrl-C: stops the reply being written; at the prompt, quits. */
  interrupt(): void {
    if (this.#turn) this.#turn.abort();
    else this.#stop();
  }

  /** End of input: quits after the lines already read are answered. */
  end(): void {
    this.#ended = true;
    void this.#pump();
  }

  #stop(): void {
    this.#quit = true;
    this.#queue.length = 0;
    this.#turn?.abort();
    if (!this.#busy) this.#resolve();
  }

  async #pump(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      while (this.#queue.length && !this.#quit) await this.#handle(this.#queue.shift()!);
    } finally {
      this.#busy = false;
    }
    if (this.#quit || this.#ended) this.#stop();
    else this.#io.prompt();
  }

  async #handle(line: string): Promise<void> {
    const text = line.trim();
    if (text === '/exit' || text === '/quit') return this.#stop();
    if (text === '/reset') {
      this.#session.reset();
      return this.#io.note('(conversation cleared)\n');
    }
    if (!text) return;
    this.#turn = new AbortController();
    try {
      const it = this.#session.promptStream(text, { ...this.#options, signal: this.#turn.signal });
      let r;
      while (!(r = await it.next()).done) this.#io.write(r.value.text);
      this.#io.write('\n');
      if (r.value.finishReason === 'abort' && !this.#quit) this.#io.note('(stopped; this turn is not kept)\n');
    } catch (err) {
      this.#io.write('\n');
      this.#io.note(`error: ${(err as Error).message}\n`);
    } finally {
      this.#turn = null;
    }
  }
}

export async function chatCommand(argv: string[]): Promise<void> {
  const { values: a } = parse('chat', argv, {
    model: { type: 'string', short: 'm' }, system: { type: 'string' }, template: { type: 'string' }, 'max-tokens': { type: 'string', short: 'n' },
    temperature: { type: 'string' }, 'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'min-p': { type: 'string' }, seed: { type: 'string' },
    backend: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (a.help) return void process.stdout.write(CHAT_HELP);
  const model = a.model ?? bundledModelPath;
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
  const session = engine.createChatSession({ system: a.system, template });
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  rl.setPrompt('> ');
  const loop = new ChatLoop(session, {
    write: (t) => process.stdout.write(t),
    note: (t) => process.stderr.write(t),
    prompt: () => rl.prompt(),
  }, sampling);
  // Ctrl-C reaches readline as a key on a terminal, and the process as a signal when stdin is piped.
  const onSigint = () => loop.interrupt();
  rl.on('SIGINT', onSigint);
  process.on('SIGINT', onSigint);
  rl.on('line', (l) => loop.line(l));
  rl.on('close', () => loop.end());
  rl.prompt();
  try {
    await loop.finished;
  } finally {
    process.off('SIGINT', onSigint);
    rl.close();
    session.dispose();
    await engine.dispose();
  }
}
