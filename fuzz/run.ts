/**
 * `npm run fuzz -- --seconds N [--target name[,name]] [--seed S] [--jobs J]`: structure-aware
 * fuzzing of tessera's file readers, tokenizers and chat templates.
 *
 * Each input (a directory of files: a model, a tokenizer, or an input.json) runs in a child
 * process (fuzz/child.ts, `node --max-old-space-size=512`) that takes many inputs in turn. The
 * parent is the watchdog: an input that runs past --timeout-ms is a hang, a child whose RSS passes
 * --mem-mb (or that dies of V8 heap exhaustion) is an OOM, a child killed by a signal or exiting is
 * a crash; the child itself reports a model that loads and generates although its forward gives
 * NaN/Inf logits (the request must fail instead), broken tokenizer invariants, and JavaScript engine errors that show an unchecked field ("internal"). A thrown
 * Error with a message is the expected outcome for bad input. Every failure is saved under
 * fuzz/crashes/<target>/<kind>-<hash>/ (the input's files plus REASON.txt) and the run exits 1.
 *
 * Inputs: first every seed of fuzz/corpus/<target>/ as it is, then a mix of stacked mutations of
 * the seeds (bit flips, integer fields at structure level, truncation, splicing, JSON edits) and
 * freshly generated valid-but-hostile inputs.
 *
 *   --replay DIR...   run saved inputs (e.g. fuzz/crashes/gguf/crash-1a2b3c4d) and print what happens
 *   --asan            children load the sanitizer build (build-asan/, from `npm run test:asan -- --build-only`)
 *                     with libasan/libubsan preloaded: native memory errors become crashes with the report
 *   --list            list the targets
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Rng } from './rng.js';
import type { Bundle } from './seeds.js';
import { TARGETS, type Target } from './targets.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CORPUS = path.join(ROOT, 'fuzz', 'corpus');
const CRASHES = path.join(ROOT, 'fuzz', 'crashes');

// ---- options ---------------------------------------------------------------------------------------

interface Options {
  seconds: number;
  targets: Target[];
  seed: number;
  jobs: number;
  timeoutMs: number;
  memMb: number;
  keep: number;
  replay: string[];
  verbose: boolean;
  /** Extra environment of the children (the sanitizer build with --asan). */
  env: Record<string, string>;
}

function usage(msg?: string): never {
  if (msg) console.error(`fuzz: ${msg}`);
  console.error(`Usage: npm run fuzz -- [--seconds N] [--target ${TARGETS.map((t) => t.name).join('|')}[,...]] [--seed S] [--jobs J]
                     [--timeout-ms T] [--mem-mb M] [--keep K] [--asan] [--verbose] | --replay DIR... | --list`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 60, targets: TARGETS, seed: Date.now() % 2 ** 31, jobs: 1, timeoutMs: 5000, memMb: 1024, keep: 2, replay: [], verbose: false, env: {} };
  const int = (v: string | undefined, name: string, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) usage(`${name} expects an integer >= ${min} but received '${v}'`);
    return n;
  };
  const set = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => inline ?? argv[++i];
    switch (flag) {
      case '--seconds': o.seconds = int(val(), '--seconds', 1); break;
      case '--seed': o.seed = int(val(), '--seed', 0); break;
      case '--jobs': o.jobs = int(val(), '--jobs', 1); break;
      case '--timeout-ms': o.timeoutMs = int(val(), '--timeout-ms', 100); set.add('timeout'); break;
      case '--mem-mb': o.memMb = int(val(), '--mem-mb', 128); set.add('mem'); break;
      case '--keep': o.keep = int(val(), '--keep', 1); break;
      case '--verbose': o.verbose = true; break;
      case '--asan': o.env = asanEnv(); break;
      case '--target': {
        const names = (val() ?? '').split(',').filter(Boolean);
        o.targets = names.map((n) => TARGETS.find((t) => t.name === n) ?? usage(`unknown target '${n}' (targets: ${TARGETS.map((t) => t.name).join(', ')})`));
        if (!o.targets.length) usage('--target expects a target name');
        break;
      }
      case '--replay':
        while (argv[i + 1] && !argv[i + 1]!.startsWith('--')) o.replay.push(argv[++i]!);
        if (!o.replay.length) usage('--replay expects one or more input directories');
        break;
      case '--list':
        for (const t of TARGETS) console.log(`${t.name.padEnd(16)} ${t.what}`);
        process.exit(0);
      // eslint-disable-next-line no-fallthrough
      case '-h': case '--help': usage();
      // eslint-disable-next-line no-fallthrough
      default: usage(`unknown argument '${a}'`);
    }
  }
  if (o.env.TESSERA_ADDON) {
    // instrumented code is slower and ASan's shadow memory and quarantine add to RSS
    if (!set.has('timeout')) o.timeoutMs *= 3;
    if (!set.has('mem')) o.memMb *= 3;
  }
  return o;
}

/** What scripts/asan.mjs gives its tests: the sanitizer addon, the runtimes preloaded, reports on. */
function asanEnv(): Record<string, string> {
  const addon = path.join(ROOT, 'build-asan', 'build', 'Release', 'tessera.node');
  if (!existsSync(addon)) usage(`--asan needs ${path.relative(ROOT, addon)}: run \`npm run test:asan -- --build-only\` first`);
  const lib = (name: string) => spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const libs = [lib('libasan.so'), lib('libubsan.so')];
  if (libs.some((l) => !path.isAbsolute(l) || !existsSync(l))) usage('--asan needs gcc\'s libasan.so and libubsan.so');
  return {
    TESSERA_ADDON: addon, TESSERA_REQUIRE_NATIVE: '1', LD_PRELOAD: libs.join(' '),
    ASAN_OPTIONS: 'allow_user_segv_handler=0:detect_leaks=0', UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
  };
}

// ---- children ---------------------------------------------------------------------------------------

type Kind = 'ok' | 'error' | 'internal' | 'nonfinite' | 'invariant' | 'crash' | 'hang' | 'oom';
interface Result {
  kind: Kind;
  message: string;
  stack?: string;
  ms: number;
}

const CHILD = path.join(ROOT, 'fuzz', 'child.ts');
/** Where the wall time went (printed with --verbose). */
const TIME = { feed: 0, start: 0, starts: 0, warm: 0, write: 0 };

/** One child process, its stderr tail, and the input in flight. */
class Worker {
  proc: ChildProcess | null = null;
  #tail = '';
  #pending: { id: number; resolve: (r: Result) => void; t0: number; killedFor?: Kind } | null = null;
  #timer: NodeJS.Timeout | null = null;
  #mem: NodeJS.Timeout | null = null;
  #nextId = 1;
  readonly dir: string;
  readonly #warmed = new Set<string>();

  constructor(readonly o: Options, k: number) {
    this.dir = mkdtempSync(path.join(tmpdir(), `tessera-fuzz-${k}-`));
  }

  /** Starts a child (it reports 'started' once its imports are loaded). */
  async start(): Promise<void> {
    const t0 = performance.now();
    this.stop();
    this.#warmed.clear();
    const proc = fork(CHILD, [], {
      execArgv: ['--max-old-space-size=512', '--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, UV_THREADPOOL_SIZE: '1', NODE_NO_WARNINGS: '1', ...this.o.env },
    });
    this.proc = proc;
    this.#tail = '';
    const keep = (d: Buffer) => {
      this.#tail = (this.#tail + d.toString('utf8')).slice(-6000);
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    await this.#handshake(proc, (m) => m.started === true, null);
    TIME.start += performance.now() - t0;
    TIME.starts++;
    proc.on('message', (m: { id: number; status: Kind; message: string; stack?: string; ms: number }) => {
      const p = this.#pending;
      if (!p || m.id !== p.id) return;
      this.#settle({ kind: m.status, message: m.message, stack: m.stack, ms: m.ms });
    });
    proc.on('exit', (code, sig) => {
      if (this.proc === proc) this.proc = null;
      const p = this.#pending;
      if (!p) return;
      const tail = this.#tail;
      const kind: Kind = p.killedFor ?? (/heap out of memory|Allocation failed|std::bad_alloc/i.test(tail) ? 'oom' : 'crash');
      const why = p.killedFor === 'hang' ? `no answer within ${this.o.timeoutMs} ms`
        : p.killedFor === 'oom' ? `RSS above ${this.o.memMb} MiB`
        : `child ${sig ? `killed by ${sig}` : `exited with code ${code}`}`;
      this.#settle({ kind, message: `${why}${firstReport(tail)}`, stack: tail, ms: performance.now() - p.t0 });
    });
  }

  /** Sends msg (if any) and waits for the reply that `done` accepts; 60 s at most, outside the per-input limit. */
  #handshake(proc: ChildProcess, done: (m: { started?: boolean; ready?: boolean; message?: string }) => boolean, msg: unknown): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => fail(new Error(`fuzz: a child did not get ready within 60 s:\n${this.#tail}`)), 60_000);
      const fail = (e: Error) => {
        clearTimeout(t);
        proc.off('message', onMsg);
        proc.off('exit', onExit);
        reject(e);
      };
      const onMsg = (m: { started?: boolean; ready?: boolean; message?: string }) => {
        if (m.ready === false) return fail(new Error(`fuzz: a child could not prepare its target:\n${m.message}`));
        if (!done(m)) return;
        clearTimeout(t);
        proc.off('message', onMsg);
        proc.off('exit', onExit);
        resolve();
      };
      const onExit = (code: number | null, sig: string | null) => fail(new Error(`fuzz: a child exited while starting (${sig ?? code}):\n${this.#tail}`));
      proc.on('message', onMsg);
      proc.once('exit', onExit);
      if (msg) proc.send(msg as never);
    });
  }

  #settle(r: Result): void {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#mem) clearInterval(this.#mem);
    p.resolve(r);
  }

  #kill(why: Kind): void {
    if (this.#pending) this.#pending.killedFor = why;
    this.proc?.kill('SIGKILL');
  }

  async run(target: Target, b: Bundle): Promise<Result> {
    if (!this.proc) await this.start();
    for (const key of target.needs?.(b) ?? ['backend']) {
      if (this.#warmed.has(key)) continue;
      // the backend and vocabularies load once per child, outside the per-input time limit
      const t0 = performance.now();
      await this.#handshake(this.proc!, (m) => m.ready === true, { warm: key });
      TIME.warm += performance.now() - t0;
      this.#warmed.add(key);
    }
    const tw = performance.now();
    const inputDir = path.join(this.dir, 'in');
    rmSync(inputDir, { recursive: true, force: true });
    mkdirSync(inputDir);
    for (const [name, data] of Object.entries(b)) writeFileSync(path.join(inputDir, name), data);
    TIME.write += performance.now() - tw;
    this.#tail = '';
    const id = this.#nextId++;
    const proc = this.proc!;
    return new Promise<Result>((resolve) => {
      this.#pending = { id, resolve, t0: performance.now() };
      this.#timer = setTimeout(() => this.#kill('hang'), this.o.timeoutMs);
      this.#mem = setInterval(() => {
        if (rssMb(proc.pid!) > this.o.memMb) this.#kill('oom');
      }, 50);
      proc.send({ id, target: target.name, dir: inputDir });
    });
  }

  stop(): void {
    const p = this.proc;
    this.proc = null;
    p?.removeAllListeners('exit');
    p?.kill('SIGKILL');
  }

  dispose(): void {
    this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function rssMb(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ');
    return (Number(s[1]) * 4096) / 2 ** 20;
  } catch {
    return 0;
  }
}

/** The first sanitizer / fatal line of a child's output, for the one-line message. */
function firstReport(tail: string): string {
  const m = /(ERROR: AddressSanitizer: [^\n]*|runtime error: [^\n]*|FATAL ERROR: [^\n]*|Segmentation fault[^\n]*|Aborted[^\n]*|terminate called[^\n]*|Uncaught [^\n]*)/.exec(tail);
  return m ? `: ${m[1]!.trim()}` : '';
}

// ---- inputs ----------------------------------------------------------------------------------------

function readBundle(dir: string): Bundle {
  const b: Bundle = {};
  for (const f of readdirSync(dir)) {
    const p = path.join(dir, f);
    if (f === 'REASON.txt' || !statSync(p).isFile()) continue;
    b[f] = new Uint8Array(readFileSync(p));
  }
  return b;
}

function loadCorpus(target: string): { name: string; bundle: Bundle }[] {
  const dir = path.join(CORPUS, target);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).sort().filter((n) => statSync(path.join(dir, n)).isDirectory()).map((name) => ({ name, bundle: readBundle(path.join(dir, name)) }));
}

interface Input {
  target: Target;
  bundle: Bundle;
  how: string;
}

/** Seeds first, then mutations (75%) and generated inputs (25%), round-robin over the targets. */
class Feeder {
  #rng: Rng;
  #corpus = new Map<string, { name: string; bundle: Bundle }[]>();
  #seedQueue: Input[] = [];
  #turn = 0;
  constructor(readonly o: Options) {
    this.#rng = new Rng(o.seed);
    for (const t of o.targets) {
      const c = loadCorpus(t.name);
      this.#corpus.set(t.name, c);
      for (const s of c) this.#seedQueue.push({ target: t, bundle: s.bundle, how: `seed ${s.name}` });
    }
  }
  get seeds(): number {
    return this.#seedQueue.length;
  }
  next(): Input {
    const s = this.#seedQueue.shift();
    if (s) return s;
    const t = this.o.targets[this.#turn++ % this.o.targets.length]!;
    const rng = this.#rng.fork();
    const corpus = this.#corpus.get(t.name)!;
    try {
      if (!corpus.length || rng.chance(0.25)) {
        const [bundle, how] = t.generate(rng);
        return { target: t, bundle, how };
      }
      const seed = rng.pick(corpus);
      const [bundle, how] = t.mutate(seed.bundle, rng, corpus.map((c) => c.bundle));
      return { target: t, bundle, how: `${seed.name}: ${how}` };
    } catch {
      // A mutation that cannot be written (e.g. JSON nested too deep to stringify): try another.
      return this.next();
    }
  }
}

// ---- failures ----------------------------------------------------------------------------------------

const FAILURES: ReadonlySet<Kind> = new Set(['internal', 'nonfinite', 'invariant', 'crash', 'hang', 'oom']);

/** Same kind and the same message apart from numbers and quoted names: the same bug. */
function signature(target: string, r: Result): string {
  const msg = r.message.replace(/'[^']*'|"[^"]*"/g, "'…'").replace(/0x[0-9a-f]+/gi, 'X').replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N').slice(0, 160);
  return `${target}|${r.kind}|${msg}`;
}

function save(input: Input, r: Result): string {
  const hash = createHash('sha1');
  for (const [k, v] of Object.entries(input.bundle).sort()) hash.update(k).update(v);
  const dir = path.join(CRASHES, input.target.name, `${r.kind}-${hash.digest('hex').slice(0, 10)}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(input.bundle)) writeFileSync(path.join(dir, name), data);
  writeFileSync(path.join(dir, 'REASON.txt'), `target: ${input.target.name}\nkind: ${r.kind}\nmessage: ${r.message}\ninput: ${input.how}\nreplay: npm run fuzz -- --replay ${path.relative(ROOT, dir)}\n\n${r.stack ?? ''}\n`);
  return path.relative(ROOT, dir);
}

// ---- main ----------------------------------------------------------------------------------------------

interface Tally {
  execs: number;
  ok: number;
  error: number;
  fail: number;
  unique: Set<string>;
  ms: number;
}

async function replay(o: Options): Promise<number> {
  const w = new Worker(o, 0);
  let bad = 0;
  try {
    for (const dir of o.replay) {
      const abs = path.resolve(dir);
      const parts = path.relative(ROOT, abs).split(path.sep);
      const name = o.targets.length === 1 ? o.targets[0]!.name : parts.find((p) => TARGETS.some((t) => t.name === p));
      const target = TARGETS.find((t) => t.name === name);
      if (!target) usage(`cannot tell the target of ${dir}; add --target`);
      const r = await w.run(target, readBundle(abs));
      const fail = FAILURES.has(r.kind);
      if (fail) bad++;
      console.log(`${dir}: [${target.name}] ${r.kind}${r.message ? `: ${r.message}` : ''} (${r.ms.toFixed(0)} ms)`);
      if (fail && r.stack) console.log(r.stack.split('\n').slice(0, 40).map((l) => `    ${l}`).join('\n'));
    }
  } finally {
    w.dispose();
  }
  return bad ? 1 : 0;
}

async function fuzz(o: Options): Promise<number> {
  const feeder = new Feeder(o);
  const tallies = new Map<string, Tally>(o.targets.map((t) => [t.name, { execs: 0, ok: 0, error: 0, fail: 0, unique: new Set(), ms: 0 }]));
  const perSig = new Map<string, number>();
  const t0 = performance.now();
  const deadline = t0 + o.seconds * 1000;
  console.log(`fuzz: ${o.targets.map((t) => t.name).join(', ')} for ${o.seconds} s, seed ${o.seed}, ${o.jobs} job(s), ${feeder.seeds} seed inputs, limits ${o.timeoutMs} ms / ${o.memMb} MiB per input${o.env.TESSERA_ADDON ? ', ASan+UBSan addon' : ''}`);
  // One child per target and job: a hang or crash restarts only its target's child, and each
  // child keeps what it loaded (vocabularies) across inputs.
  const slots = Array.from({ length: o.jobs }, (_, k) => new Map(o.targets.map((t, i) => [t.name, new Worker(o, k * 100 + i)])));
  let stopping = false;
  const onSignal = () => {
    stopping = true;
  };
  process.once('SIGINT', onSignal);
  const loop = async (workers: Map<string, Worker>) => {
    while (!stopping && performance.now() < deadline) {
      const tf = performance.now();
      const input = feeder.next();
      TIME.feed += performance.now() - tf;
      const r = await workers.get(input.target.name)!.run(input.target, input.bundle);
      const t = tallies.get(input.target.name)!;
      t.execs++;
      t.ms += r.ms;
      if (r.kind === 'ok') t.ok++;
      else if (r.kind === 'error') {
        t.error++;
        if (o.verbose) console.log(`  [${input.target.name}] ${r.message.slice(0, 160)}  <- ${input.how.slice(0, 120)}`);
      } else {
        t.fail++;
        const sig = signature(input.target.name, r);
        const seen = perSig.get(sig) ?? 0;
        perSig.set(sig, seen + 1);
        t.unique.add(sig);
        if (seen < o.keep) {
          const where = save(input, r);
          if (!seen) console.log(`FAIL [${input.target.name}] ${r.kind}: ${r.message.split('\n')[0]!.slice(0, 300)}\n     input: ${input.how.slice(0, 200)}\n     saved: ${where}`);
        }
      }
    }
  };
  try {
    await Promise.all(slots.map(loop));
  } finally {
    process.off('SIGINT', onSignal);
    for (const m of slots) for (const w of m.values()) w.dispose();
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`\nfuzz: ${secs.toFixed(0)} s, seed ${o.seed}`);
  console.log(`${'target'.padEnd(16)}${'execs'.padStart(8)}${'exec/s'.padStart(8)}${'ok'.padStart(8)}${'error'.padStart(8)}${'fail'.padStart(8)}${'unique'.padStart(8)}${'ms/exec'.padStart(9)}`);
  let fails = 0;
  for (const [name, t] of tallies) {
    fails += t.fail;
    console.log(`${name.padEnd(16)}${String(t.execs).padStart(8)}${(t.execs / secs).toFixed(1).padStart(8)}${String(t.ok).padStart(8)}${String(t.error).padStart(8)}${String(t.fail).padStart(8)}${String(t.unique.size).padStart(8)}${(t.ms / Math.max(1, t.execs)).toFixed(1).padStart(9)}`);
  }
  if (o.verbose) console.log(`time: feeding ${(TIME.feed / 1000).toFixed(1)} s, ${TIME.starts} child starts ${(TIME.start / 1000).toFixed(1)} s, warming ${(TIME.warm / 1000).toFixed(1)} s, writing inputs ${(TIME.write / 1000).toFixed(1)} s`);
  if (fails) {
    console.log(`\nfuzz: ${fails} failing input(s), ${perSig.size} distinct; reproducers under fuzz/crashes/ (replay with npm run fuzz -- --replay DIR)`);
    for (const [sig, n] of perSig) console.log(`  ${n}x ${sig.replace(/\|/g, ' | ')}`);
  } else console.log('\nfuzz: no failures');
  return fails ? 1 : 0;
}

const opts = parseArgs(process.argv.slice(2));
const code = opts.replay.length ? await replay(opts) : await fuzz(opts);
process.exit(code);
