// The documentation's code is true: every ```ts / ```typescript / ```js block of README.md,
// docs/*.md and examples/README.md type-checks against the package's published types (`tessera`
// resolved by Node's package self-reference through package.json `exports`, as a user's project
// resolves it) and runs on its own in a fresh Node process, its `tessera` being the file that
// `exports` names (dist/, so `npm run build` first, as for the CLI tests). A block that cannot run
// that way carries a directive on the line before its fence:
//   <!-- doctest: skip (reason) -->  not run (type-checked still); the reason is required
//   <!-- doctest: serve -->          runs against an OpenAI-compatible server on the bundled model
//                                    that this test starts; `http://127.0.0.1:8080` in the block
//                                    is pointed at it
//   <!-- doctest: gpu -->            runs; without a GPU it must stop at CudaDevice.open() with
//                                    CudaUnavailableError, as the README says it does
// Shell blocks are not run, but every `tessera <command>` they (or inline code) mention must be a
// command in `tessera --help` and every --option of it must be in `tessera <command> --help`, and
// every `npm run <script>` must be a script in package.json.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundledModelPath, Engine, createServer, cudaStatus } from '../src/index.js';
import { nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

interface Block {
  /** Path relative to the repository root. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  code: string;
  directive: { kind: 'skip' | 'serve' | 'gpu'; reason?: string } | null;
}

const DIRECTIVE = /^<!--\s*doctest:\s*(\w+)(?:\s*\((.*)\))?\s*-->$/;

/** Fenced code blocks of a markdown file, with the doctest directive on the line before each. */
export function codeBlocks(file: string, text: string): Block[] {
  const lines = text.split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[1]!;
    let j = i + 1;
    while (j < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[j]!)) j++;
    let p = i - 1;
    while (p >= 0 && lines[p]!.trim() === '') p--;
    const d = p >= 0 ? DIRECTIVE.exec(lines[p]!.trim()) : null;
    let directive: Block['directive'] = null;
    if (d) {
      const kind = d[1]!;
      if (kind !== 'skip' && kind !== 'serve' && kind !== 'gpu') throw new Error(`${file}:${p + 1}: unknown doctest directive '${kind}' (skip, serve or gpu)`);
      if (kind === 'skip' && !d[2]?.trim()) throw new Error(`${file}:${p + 1}: a doctest skip needs a reason: <!-- doctest: skip (why) -->`);
      directive = { kind, reason: d[2]?.trim() };
    }
    out.push({ file, line: i + 1, lang: open[2]!.toLowerCase(), code: lines.slice(i + 1, j).join('\n'), directive });
    i = j;
  }
  return out;
}

function docFiles(): string[] {
  const files = ['README.md'];
  if (existsSync(path.join(root, 'docs'))) files.push(...readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`));
  if (existsSync(path.join(root, 'examples/README.md'))) files.push('examples/README.md');
  return files;
}

const blocks = docFiles().flatMap((f) => codeBlocks(f, readFileSync(path.join(root, f), 'utf8')));
const CODE_LANGS = new Set(['ts', 'typescript', 'js', 'javascript']);
const code = blocks.filter((b) => CODE_LANGS.has(b.lang));
const isTs = (b: Block) => b.lang === 'ts' || b.lang === 'typescript';
const where = (b: Block) => `${b.file}:${b.line}`;

describe('the parser', () => {
  it('finds fences, languages, line numbers and directives', () => {
    const md = ['# t', '<!-- doctest: skip (needs a GPU) -->', '', '```ts', 'a;', '```', 'text', '````js', '```', 'b;', '````', '<!-- doctest: serve -->', '```typescript', '```'].join('\n');
    expect(codeBlocks('x.md', md)).toEqual([
      { file: 'x.md', line: 4, lang: 'ts', code: 'a;', directive: { kind: 'skip', reason: 'needs a GPU' } },
      { file: 'x.md', line: 8, lang: 'js', code: '```\nb;', directive: null },
      { file: 'x.md', line: 13, lang: 'typescript', code: '', directive: { kind: 'serve', reason: undefined } },
    ]);
    expect(() => codeBlocks('x.md', '<!-- doctest: skip -->\n```ts\n```')).toThrow(/x\.md:1: a doctest skip needs a reason/);
    expect(() => codeBlocks('x.md', '<!-- doctest: maybe -->\n```ts\n```')).toThrow(/unknown doctest directive 'maybe'/);
  });

  it('the documentation has code blocks, and skipping one is rare', () => {
    expect(code.length).toBeGreaterThanOrEqual(5);
    expect(code.filter((b) => b.directive?.kind === 'skip').length).toBeLessThanOrEqual(1);
  });
});

// ---- type-check: all TypeScript blocks in one program, as a user's project would see tessera ------

function typeErrors(): Map<Block, string[]> {
  const cfg = ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(cfg.config, ts.sys, root);
  const options: ts.CompilerOptions = { ...parsed.options, noEmit: true, declaration: false, rootDir: root, outDir: undefined, sourceMap: false };
  // Virtual files inside the package directory, so that 'tessera' resolves to its own dist/ types.
  const files = new Map<string, Block>();
  for (const b of code.filter(isTs)) files.set(path.join(root, '.doctest', `${b.file.replace(/[/.]/g, '_')}-L${b.line}.ts`), b);
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.fileExists = (f) => files.has(f) || ts.sys.fileExists(f);
  host.readFile = (f) => files.get(f)?.code ?? ts.sys.readFile(f);
  host.getSourceFile = (f, lang, onError) => {
    const b = files.get(f);
    return b ? ts.createSourceFile(f, b.code, lang) : getSourceFile(f, lang, onError);
  };
  const program = ts.createProgram([...files.keys()], options, host);
  const out = new Map<Block, string[]>();
  for (const d of [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()])
    throw new Error(`doctest compiler options: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
  for (const [f, b] of files) {
    const sf = program.getSourceFile(f)!;
    const msgs = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)].map((d) => {
      const { line } = sf.getLineAndCharacterOfPosition(d.start ?? 0);
      return `${b.file}:${b.line + 1 + line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    out.set(b, msgs);
  }
  return out;
}

describe('TypeScript blocks type-check against the package', () => {
  const built = existsSync(path.join(root, 'dist/index.d.ts'));
  let errors: Map<Block, string[]>;
  beforeAll(() => {
    if (!built) throw new Error('dist/index.d.ts is missing: run `npm run build` (the blocks import tessera as users do, from dist/)');
    errors = typeErrors();
  }, 120_000);
  it.each(code.filter(isTs).map((b) => [where(b), b] as const))('%s', (_w, b) => {
    expect(errors.get(b)).toEqual([]);
  });
});

// ---- run: each block in its own Node process --------------------------------------------------------

function transpile(b: Block): string {
  if (!isTs(b)) return b.code;
  return ts.transpileModule(b.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }, fileName: 'block.ts' }).outputText;
}

// Each block runs from a file of its own. Not from stdin with --input-type=module: the Engine's
// worker thread inherits the process's execArgv, and Node refuses --input-type in a worker. The
// files live under node_modules/.cache, where Node's package self-reference does not apply, so
// the block's 'tessera' is pointed at the package's own entry point (package.json exports '.').
const runDir = path.join(root, 'node_modules/.cache', `tessera-doctest-${process.pid}`);
const entry = pathToFileURL(path.join(root, (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { exports: { '.': { default: string } } }).exports['.'].default)).href;

function run(b: Block, js: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const name = `${b.file.replace(/[/.]/g, '_')}-L${b.line}.mjs`;
  const file = path.join(runDir, name);
  mkdirSync(runDir, { recursive: true });
  writeFileSync(file, js.replace(/(from\s*|import\s*\(\s*)(['"])tessera\2/g, (_m, pre: string, q: string) => `${pre}${q}${entry}${q}`));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 90_000 });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    // Stack frames name the block's file: say which line of the markdown that is.
    const frame = new RegExp(`(?:file://)?${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(\\d+)`, 'g');
    child.on('close', (c) => resolve({ code: c, stdout, stderr: stderr.replace(frame, (_m, n: string) => `${b.file}:~${b.line + Number(n)}`) }));
  });
}

describe('code blocks run', () => {
  let engine: Engine | null = null;
  let app: ReturnType<typeof createServer> | null = null;
  let serveUrl = '';
  beforeAll(async () => {
    if (!existsSync(path.join(root, 'dist/index.js'))) throw new Error('dist/index.js is missing: run `npm run build` (the blocks import tessera as users do, from dist/)');
    if (!code.some((b) => b.directive?.kind === 'serve')) return;
    engine = await Engine.load(bundledModelPath, { backend: nativeAvailable ? 'cpu' : 'js', kvCacheBytes: 4 * 2 ** 20 });
    app = createServer(engine);
    await app.listen({ host: '127.0.0.1', port: 0 });
    serveUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  }, 60_000);
  afterAll(async () => {
    rmSync(runDir, { recursive: true, force: true });
    await app?.close();
    await engine?.dispose();
  });

  for (const b of code) {
    const label = `${where(b)} (${b.lang}${b.directive ? `, ${b.directive.kind}` : ''})`;
    if (b.directive?.kind === 'skip') {
      it.skip(`${label}: ${b.directive.reason}`, () => {});
      continue;
    }
    it(label, async () => {
      let js = transpile(b);
      if (b.directive?.kind === 'serve') {
        expect(js, `${where(b)}: a serve block talks to http://127.0.0.1:8080`).toContain('http://127.0.0.1:8080');
        js = js.replaceAll('http://127.0.0.1:8080', serveUrl);
      }
      const r = await run(b, js);
      if (b.directive?.kind === 'gpu' && !cudaStatus().available) {
        expect(r.code, `${where(b)} should stop at CudaDevice.open() without a GPU`).not.toBe(0);
        expect(r.stderr, `${where(b)}: without a GPU the block must fail with CudaUnavailableError`).toMatch(/CudaUnavailableError: the cuda backend is unavailable/);
        return;
      }
      if (r.code !== 0) throw new Error(`${where(b)}: the ${b.lang} block exited with code ${r.code}\n--- stderr ---\n${r.stderr.slice(-4000)}\n--- stdout ---\n${r.stdout.slice(-1000)}`);
    }, 120_000);
  }
});

// ---- shell blocks: commands, options and npm scripts exist ------------------------------------------

/** Shell lines with backslash continuations joined, each with the index of its first line. */
function joinContinuations(sh: string): [string, number][] {
  const out: [string, number][] = [];
  let cur: [string, number] | null = null;
  sh.split('\n').forEach((l, i) => {
    const cont = /\\\s*$/.test(l);
    const text = l.replace(/\\\s*$/, ' ');
    cur = cur ? [cur[0] + text, cur[1]] : [text, i];
    if (!cont) {
      out.push(cur);
      cur = null;
    }
  });
  if (cur) out.push(cur);
  return out;
}

/** The `tessera` commands of a help text's "Commands:" section. */
function commandsOf(help: string): Set<string> {
  const section = help.split('Commands:')[1]?.split(/\n\S/)[0] ?? '';
  return new Set([...section.matchAll(/^ {2}([a-z][\w-]*)\s/gm)].map((m) => m[1]!));
}

/** What is wrong with `tessera ...` uses: unknown commands, and options their --help does not list. */
function commandProblems(uses: { where: string; text: string }[], commands: Set<string>, helpOf: (cmd: string) => string): string[] {
  const problems: string[] = [];
  for (const u of uses) {
    const words = u.text.trim().split(/\s+/);
    const cmd = words[0]!;
    if (cmd.startsWith('-') || cmd.startsWith('<')) continue; // `tessera --help`, `tessera <command>`
    if (!commands.has(cmd)) {
      problems.push(`${u.where}: 'tessera ${cmd}' is not a command of tessera --help`);
      continue;
    }
    const h = helpOf(cmd);
    for (const w of words.slice(1)) {
      const opt = /^(--[a-z][\w-]*)/.exec(w.replace(/^[[(]+/, ''))?.[1];
      if (opt && !new RegExp(`(^|[\\s,\\[|])${opt}(?![\\w-])`, 'm').test(h)) problems.push(`${u.where}: tessera ${cmd} has no option ${opt}`);
    }
  }
  return problems;
}

describe('commands named in the documentation exist', () => {
  const bin = path.join(root, 'bin/tessera.js');
  /** `tessera [cmd] --help`, run concurrently (each is a Node start). */
  const help = (cmd: string | null) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [bin, ...(cmd ? [cmd] : []), '--help'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
      let out = '', err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`tessera ${cmd ?? ''} --help exited with ${code}: ${err}`))));
    });
  // `tessera ...` command lines: in sh blocks, and inline code spans that start with tessera.
  const uses: { where: string; text: string }[] = [];
  const scripts: { where: string; name: string }[] = [];
  for (const f of docFiles()) {
    const text = readFileSync(path.join(root, f), 'utf8');
    for (const b of codeBlocks(f, text).filter((x) => x.lang === 'sh' || x.lang === 'bash' || x.lang === 'shell'))
      joinContinuations(b.code).forEach(([l, i]) => {
        const cmd = l.replace(/\s#.*$/, '');
        for (const m of cmd.matchAll(/(?:^|[\s;&|(])(?:npx\s+)?tessera\s+([^;&|]*)/g)) uses.push({ where: `${f}:${b.line + 1 + i}`, text: m[1]! });
        for (const m of cmd.matchAll(/\bnpm run ([\w:-]+)/g)) scripts.push({ where: `${f}:${b.line + 1 + i}`, name: m[1]! });
      });
    text.split('\n').forEach((l, i) => {
      for (const m of l.matchAll(/`(?:npx )?tessera ([^`]+)`/g)) uses.push({ where: `${f}:${i + 1}`, text: m[1]! });
    });
  }

  it('the checker finds unknown commands and options', () => {
    const h = 'Usage: tessera <command>\n\nCommands:\n  generate        Stream\n  info            Show\n                  more\n\nOptions:\n  -h, --help  Show\n';
    const commands = commandsOf(h);
    expect(commands).toEqual(new Set(['generate', 'info']));
    const gen = 'Options:\n  -p, --prompt TEXT  Prompt\n      --top-k K     Keep\n';
    expect(commandProblems([
      { where: 'a:1', text: 'generate -p x --top-k 5 [--prompt Y]' },
      { where: 'a:2', text: 'generate --top 5 --topk' },
      { where: 'a:3', text: 'serve --port 1' },
      { where: 'a:4', text: '<command> --help' },
    ], commands, () => gen)).toEqual(['a:2: tessera generate has no option --top', 'a:2: tessera generate has no option --topk', "a:3: 'tessera serve' is not a command of tessera --help"]);
  });

  it('every `tessera <command>` is in tessera --help, with its options in tessera <command> --help', async () => {
    expect(uses.length).toBeGreaterThan(5);
    const commands = commandsOf(await help(null));
    expect(commands.has('generate')).toBe(true);
    const named = [...new Set(uses.map((u) => u.text.trim().split(/\s+/)[0]!).filter((c) => commands.has(c)))];
    // Three at a time: each is a Node start, and the host may be busy.
    const helps = new Map<string, string>();
    for (let i = 0; i < named.length; i += 3) for (const [c, h] of await Promise.all(named.slice(i, i + 3).map(async (c) => [c, await help(c)] as const))) helps.set(c, h);
    expect(commandProblems(uses, commands, (c) => helps.get(c)!)).toEqual([]);
  }, 180_000);

  it('every `npm run <script>` is a script in package.json', () => {
    const defined = Object.keys((JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts);
    expect(scripts.length).toBeGreaterThan(3);
    expect(scripts.filter((s) => !defined.includes(s.name)).map((s) => `${s.where}: npm run ${s.name}`)).toEqual([]);
  });
});
