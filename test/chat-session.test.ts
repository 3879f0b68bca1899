// ChatSession: history and KV kept between turns (a turn prefills only what the last one did not
// compute), checked against a fresh engine.chat() over the same history; history / reset /
// dispose / abort; and `tessera chat` (its input loop driven directly, and the command spawned).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChatLoop, type ChatIo } from '../src/cli/chat.js';
import { bundledModelPath, ChatSession, DisposedError, encodeHalf, Engine, loadTensor, readGGUF, runtimeInfo, Tokenizer, type ChatMessage, type Delta } from '../src/index.js';

const root = path.resolve(import.meta.dirname, '..');
const BARE = path.join(root, 'test/fixtures/stories260K/stories260K-F16.gguf'); // the published file: no chat template
const backend = runtimeInfo().native ? 'cpu' : 'js';
const tok = Tokenizer.fromGGUF(readGGUF(bundledModelPath));
const SYSTEM = 'You tell stories.';

/** The prompt tokens a chat over `messages` runs: the bundled template rendered and encoded (its text starts with BOS). */
function promptTokens(messages: ChatMessage[]): number[] {
  const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  expect(text.startsWith('<s>')).toBe(true);
  return tok.encode(text, { addBos: false, parseSpecial: true });
}

function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

async function drain(it: AsyncGenerator<Delta, unknown>): Promise<void> {
  while (!(await it.next()).done);
}

describe('ChatSession', () => {
  it.each([
    ['', {}],
    [' with n-gram speculative decoding', { lookupNgram: 3 }],
  ])('turn 2 prefills only the tokens turn 1 did not compute, and answers as a fresh chat over the same history%s', async (_label, extra) => {
    // Prefix caching off: whatever turn 2 does not compute can only come from the session's KV.
    const engine = await Engine.load({ backend, prefixCaching: false, ...extra });
    const fresh = await Engine.load({ backend });
    try {
      const o = { temperature: 0, maxTokens: 24, ignoreEos: true };
      const s = engine.createChatSession({ system: SYSTEM });
      const q1 = 'Tell me about a cat.', q2 = 'And a dog?';
      const r1 = await s.prompt(q1, o);
      const m1: ChatMessage[] = [{ role: 'system', content: SYSTEM }, { role: 'user', content: q1 }];
      const p1 = promptTokens(m1);
      expect(r1).toMatchObject({ finishReason: 'length', completionTokens: 24, promptTokens: p1.length, reusedTokens: 0 });
      expect(s.history).toEqual([{ role: 'user', content: q1 }, { role: 'assistant', content: r1.text }]);

      const before = (await engine.stats()).tokensComputed;
      const r2 = await s.prompt(q2, o);
      const computed = (await engine.stats()).tokensComputed - before;
      const m2: ChatMessage[] = [...m1, { role: 'assistant', content: r1.text }, { role: 'user', content: q2 }];
      const p2 = promptTokens(m2);
      // Turn 1 left in the KV its prompt and every reply token but the last (sampled, never run).
      const kv1 = [...p1, ...r1.tokens.slice(0, -1)];
      const reused = Math.min(sharedPrefix(kv1, p2), p2.length - 1);
      expect(reused).toBeGreaterThan(p1.length); // the reply's K/V is reused, not only the first prompt's
      expect(r2.promptTokens).toBe(p2.length);
      expect(r2.reusedTokens).toBe(reused);
      // The model ran the new prompt tokens and then one token per decode step (the last sampled token never runs).
      const spec = r2.speculation ? r2.speculation.proposed - r2.speculation.accepted : 0; // rejected drafts ran too
      expect(computed).toBe(p2.length - reused + r2.completionTokens - 1 + spec);

      const want = await fresh.generate({ messages: m2 }, o);
      expect(r2.text).toBe(want.text);
      expect(r2.tokens).toEqual(want.tokens);
      s.dispose();
      expect((await engine.stats()).kvBlocksUsed).toBe(0);
    } finally {
      await Promise.all([engine.dispose(), fresh.dispose()]);
    }
  }, 120_000);

  it('history, reset (keeps the system message, frees the KV), dispose', async () => {
    const engine = await Engine.load({ backend });
    try {
      const o = { temperature: 0, maxTokens: 8 };
      const s = new ChatSession(engine, { system: SYSTEM, history: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }] });
      const r = await s.prompt('Tell me a story.', o);
      const want = await engine.generate({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Tell me a story.' }] }, o);
      expect(r.text).toBe(want.text);
      expect(s.history).toHaveLength(4);
      const h = s.history;
      h.pop(); // a copy
      expect(s.history).toHaveLength(4);
      expect((await engine.stats()).kvBlocksUsed).toBeGreaterThan(0); // the session keeps its KV
      s.reset();
      expect(s.history).toEqual([]);
      expect(s.system).toBe(SYSTEM);
      expect((await engine.stats()).kvBlocksUsed).toBe(0);
      const again = await s.prompt('Tell me a story.', o);
      expect(again.reusedTokens).toBe(0);
      expect(again.text).toBe((await engine.generate({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'Tell me a story.' }] }, o)).text);
      s.dispose();
      s.dispose(); // safe twice
      await expect(s.prompt('x')).rejects.toThrow(DisposedError);
      expect(() => s.reset()).toThrow(DisposedError);
      expect((await engine.stats()).kvBlocksUsed).toBe(0);
    } finally {
      await engine.dispose();
    }
  });

  it('an aborted turn (before or during it) ends as engine requests do and is left out of the history; the session goes on', async () => {
    const engine = await Engine.load({ backend });
    try {
      const o = { temperature: 0, maxTokens: 40, ignoreEos: true };
      const s = engine.createChatSession();
      const first = await s.prompt('Tell me about a cat.', { ...o, maxTokens: 8 });
      const kept = s.history;

      const early = new AbortController();
      early.abort();
      const pre = await s.prompt('Never mind.', { ...o, signal: early.signal });
      expect(pre).toEqual({ text: '', tokens: [], logprobs: [], finishReason: 'abort', promptTokens: 0, completionTokens: 0, reusedTokens: 0 });

      const ac = new AbortController();
      const it = s.promptStream('And a dog?', { ...o, signal: ac.signal });
      let n = 0, r;
      while (!(r = await it.next()).done) if (++n === 3) ac.abort();
      expect(r.value.finishReason).toBe('abort');
      expect(r.value.completionTokens).toBeLessThan(40);
      expect(Object.keys(r.value).sort()).toEqual(Object.keys(pre).sort());
      expect(s.history).toEqual(kept);

      // Leaving a stream early aborts the turn too.
      for await (const _d of s.promptStream('And a bird?', o)) break;
      expect(s.history).toEqual(kept);
      expect(s.busy).toBe(false);

      const next = await s.prompt('And a fish?', o);
      const want = await engine.generate({ messages: [{ role: 'user', content: 'Tell me about a cat.' }, { role: 'assistant', content: first.text }, { role: 'user', content: 'And a fish?' }] }, o);
      expect(next.text).toBe(want.text);
      expect(s.history).toHaveLength(4);
      s.dispose();
    } finally {
      await engine.dispose();
    }
  });

  it('one turn at a time; dispose stops a running turn; bad options and a model without a template are errors naming them', async () => {
    const engine = await Engine.load({ backend });
    try {
      const s = engine.createChatSession();
      const running = s.prompt('Tell me a long story.', { maxTokens: 400, ignoreEos: true });
      await expect(s.prompt('Hi')).rejects.toThrow(/a turn is already running/);
      expect(() => s.reset()).toThrow(/cannot reset during a turn/);
      s.dispose();
      const r = await running;
      expect(r.finishReason).toBe('abort');
      expect(s.history).toEqual([]);

      expect(() => engine.createChatSession({ sytem: 'x' } as never)).toThrow(/Unknown option 'sytem' in the ChatSession options; did you mean 'system'\?/);
      expect(() => engine.createChatSession({ template: 3 } as never)).toThrow(/Expected a Jinja chat template \(a non-empty string\) for options.template/);
      expect(() => new ChatSession({} as Engine)).toThrow(/Expected an Engine for engine/);
      const t = engine.createChatSession();
      await expect(t.prompt('Hi', { template: 'x' } as never)).rejects.toThrow(/Unknown option 'template' in the prompt options/);
      await expect(t.prompt('Hi', { max_tokens: 3 } as never)).rejects.toThrow(/did you mean 'maxTokens'\?/);
      await expect(t.prompt(42 as never)).rejects.toThrow(/Expected a string \(the user message\) for text/);
      t.dispose();
    } finally {
      await engine.dispose();
    }
    const bare = await Engine.load(BARE, { backend });
    try {
      expect(() => bare.createChatSession()).toThrow(/Expected options.template: the model .*stories260K-F16.gguf has no chat template/);
      const template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
      const s = bare.createChatSession({ template });
      const r = await s.prompt('Once upon a time', { temperature: 0, maxTokens: 8 });
      expect(r.text).toBe((await bare.generate('Once upon a time', { temperature: 0, maxTokens: 8 })).text);
      s.dispose();
    } finally {
      await bare.dispose();
    }
  });
});

/** A stand-in session: each turn streams 'a' forever until aborted, recording what it was asked. */
function fakeSession() {
  const calls: string[] = [];
  let resets = 0;
  return {
    calls,
    get resets() {
      return resets;
    },
    reset() {
      resets++;
    },
    async *promptStream(text: string, o: { signal?: AbortSignal } = {}) {
      calls.push(text);
      let n = 0;
      while (!o.signal?.aborted && n < (text === 'short' ? 2 : Infinity)) {
        n++;
        yield { text: 'a', token: 1, logprob: 0 } as Delta;
        await new Promise((r) => setImmediate(r));
      }
      return { finishReason: o.signal?.aborted ? 'abort' : 'length' };
    },
  };
}

function io() {
  const out = { written: '', notes: '', prompts: 0 };
  const sink: ChatIo = { write: (t) => void (out.written += t), note: (t) => void (out.notes += t), prompt: () => void out.prompts++ };
  return { out, sink };
}

describe('tessera chat input loop', () => {
  it('Ctrl-C during a reply stops it and the next line runs; Ctrl-C at the prompt quits', async () => {
    const s = fakeSession();
    const { out, sink } = io();
    const loop = new ChatLoop(s as never, {
      ...sink,
      write: (t) => {
        sink.write(t);
        if (out.written === 'aaa') loop.interrupt(); // Ctrl-C while the first reply streams
      },
    });
    loop.line('first');
    loop.line('short');
    await new Promise<void>((r) => {
      const poll = () => (out.prompts > 0 ? r() : setImmediate(poll));
      poll();
    });
    expect(s.calls).toEqual(['first', 'short']);
    expect(out.written).toBe('aaa\naa\n');
    expect(out.notes).toMatch(/stopped; this turn is not kept/);
    expect(loop.quitting).toBe(false);
    loop.interrupt(); // idle
    await loop.finished;
    expect(loop.quitting).toBe(true);
    loop.line('ignored');
    expect(s.calls).toEqual(['first', 'short']);
  });

  it('end of input answers the lines already read, then quits; /exit quits at once; /reset resets', async () => {
    const s = fakeSession();
    const { out, sink } = io();
    const loop = new ChatLoop(s as never, sink);
    loop.line('short');
    loop.line('/reset');
    loop.line('  ');
    loop.line('short');
    loop.end();
    await loop.finished;
    expect(s.calls).toEqual(['short', 'short']);
    expect(s.resets).toBe(1);
    expect(out.written).toBe('aa\naa\n');

    const t = fakeSession();
    const l2 = new ChatLoop(t as never, io().sink);
    l2.line('short');
    l2.line('/exit');
    l2.line('short');
    await l2.finished;
    expect(t.calls).toEqual(['short']);
  });

  it('with a real session: Ctrl-C mid-reply leaves the turn out and the next turn answers as a fresh chat', async () => {
    const engine = await Engine.load({ backend });
    try {
      const s = engine.createChatSession();
      const { out, sink } = io();
      let chunks = 0;
      const o = { temperature: 0, maxTokens: 30, ignoreEos: true };
      const loop = new ChatLoop(s, { ...sink, write: (t) => { sink.write(t); if (++chunks === 2) loop.interrupt(); } }, o);
      loop.line('Tell me about a cat.');
      loop.line('Tell me about a dog.');
      loop.end();
      await loop.finished;
      expect(out.notes).toMatch(/stopped/);
      expect(s.history.map((m) => m.content).slice(0, 1)).toEqual(['Tell me about a dog.']);
      const want = await engine.generate({ messages: [{ role: 'user', content: 'Tell me about a dog.' }] }, o);
      expect(s.history[1]!.content).toBe(want.text);
      expect(out.written.endsWith(`${want.text}\n`)).toBe(true);
      s.dispose();
    } finally {
      await engine.dispose();
    }
  });
});

describe('tessera chat (the command)', () => {
  const bin = path.join(root, 'bin/tessera.js');
  /** Spawns `tessera chat`; `onOut` sees stdout so far and may write to stdin or signal. */
  function run(args: string[], onOut: (out: string, child: ReturnType<typeof spawn>) => void) {
    const child = spawn(process.execPath, [bin, 'chat', '--backend', backend, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout!.on('data', (d) => {
      out += d;
      onOut(out, child);
    });
    child.stderr!.on('data', (d) => (err += d));
    return new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`tessera chat did not exit; stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`));
      }, 60_000);
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, out, err });
      });
    });
  }

  it('without -m it chats with the bundled model; each line is a turn of one session; end of input exits 0', async () => {
    const r = await run(['-n', '12', '--temperature', '0', '--system', SYSTEM], (_o, c) => void c.stdin!.end('Tell me about a cat.\nAnd a dog?\n'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const engine = await Engine.load({ backend });
    try {
      const s = engine.createChatSession({ system: SYSTEM });
      const a = await s.prompt('Tell me about a cat.', { temperature: 0, maxTokens: 12 });
      const b = await s.prompt('And a dog?', { temperature: 0, maxTokens: 12 });
      expect(r.out).toBe(`> ${a.text}\n${b.text}\n`);
      s.dispose();
    } finally {
      await engine.dispose();
    }
  }, 90_000);

  it('/exit exits 0 and ignores what follows; Ctrl-C (SIGINT) at an idle prompt exits 0 instead of wedging', async () => {
    let sent = false;
    const a = await run(['-n', '4'], (_o, c) => {
      if (!sent) c.stdin!.write('/exit\nTell me a story.\n');
      sent = true;
    });
    expect(a).toMatchObject({ code: 0, out: '> ', err: '' });
    const b = await run([], (out, c) => {
      if (out === '> ') c.kill('SIGINT'); // stdin stays open: only the signal can end it
    });
    expect(b).toMatchObject({ code: 0, signal: null, out: '> ' });
  }, 90_000);
});

describe('the bundled chat template', () => {
  it('is metadata the bundled GGUF carries; its tensors are the published ones (the F16 fixture, to f16 precision)', () => {
    const a = readGGUF(bundledModelPath), b = readGGUF(BARE);
    expect(a.metadata.get('tokenizer.chat_template')).toBe(readFileSync(path.join(root, 'models/stories260K/chat_template.jinja'), 'utf8'));
    expect(b.metadata.has('tokenizer.chat_template')).toBe(false);
    expect(a.tensors.length).toBe(b.tensors.length);
    for (const t of a.tensors) {
      const u = b.tensors.find((x) => x.name === t.name)!;
      expect(u.shape, t.name).toEqual(t.shape);
      const mine = loadTensor(a, t).data as Float32Array, theirs = loadTensor(b, u).data;
      expect(u.type === 'F16' ? encodeHalf(mine, 'f16') : mine, t.name).toEqual(theirs);
    }
  });

  it('renders User:/Assistant: lines after BOS', () => {
    const text = tok.applyChatTemplate([{ role: 'system', content: 'S' }, { role: 'user', content: 'U' }, { role: 'assistant', content: 'A' }, { role: 'user', content: 'V' }], { addGenerationPrompt: true });
    expect(text).toBe('<s>S\n\nUser: U\nAssistant: A\nUser: V\nAssistant:');
  });
});
