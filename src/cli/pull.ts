/** `tessera pull hf:...`, and `-m hf:...` for every command: Hugging Face URIs to local paths. */
import { fmtBytes } from '../hub/download.js';
import { HubError, pullModel, type PullOptions, type PullProgress, type PullResult } from '../hub/index.js';
import { parse, type ProgressStream } from './common.js';
import { UsageError } from './errors.js';

export const PULL_HELP = `Usage: tessera pull URI... [--revision REV] [--cache-dir DIR] [--json] [--quiet]

Downloads a model from the Hugging Face hub into the Hugging Face cache (shared with Python's
huggingface_hub) and prints its local path. A second pull downloads nothing. An interrupted
download resumes where it stopped. Every command's -m (and --draft-model) takes the same URIs,
so \`tessera generate -m hf:OWNER/REPO/FILE.gguf\` pulls on first use.

URIs:
  hf:OWNER/REPO/PATH/FILE.gguf   one file (any file of the repo)
  hf:OWNER/REPO:QUANT            the repo's GGUF file whose name has QUANT as a word (Q4_0, Q8_0, F16, ...)
  hf:OWNER/REPO                  a Hugging Face model directory (config.json, tokenizer.json,
                                 tokenizer_config.json, safetensors weights and index), or the
                                 repo's only GGUF file
  ...#REV or hf:OWNER/REPO@REV/...  a branch, tag or commit (default main)

Options:
      --revision REV   Branch, tag or commit (overrides #REV)
      --cache-dir DIR  Cache root (default: HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)
      --json           Print {path, uri, repo, revision, commit, files, downloadedBytes} per URI
  -q, --quiet          No progress on stderr
  -h, --help           Show this help

Environment:
  HF_TOKEN             Access token for private and gated repos (else the file huggingface-cli login writes)
  HF_ENDPOINT          Hub URL (default https://huggingface.co; a mirror works)
  HF_HUB_CACHE, HF_HOME  Cache location, as huggingface_hub reads them
  HF_HUB_OFFLINE=1     Use only the cache; fail if the model is not there
`;

const MIB = 2 ** 20;

/**
 * Download progress for PullProgress events. On a terminal: one redrawn line with a bar, bytes,
 * total and speed. Otherwise (a pipe, a log) a plain line at the start, every 10% or 5 s, and at the end.
 */
export function downloadProgress(stream: ProgressStream = process.stderr): (p: PullProgress) => void {
  let current = '';
  let started = 0, startBytes = 0, lastLine = 0, lastTenth = -1;
  return (p) => {
    const now = Date.now();
    const name = `${p.fileCount > 1 ? `[${p.fileIndex + 1}/${p.fileCount}] ` : ''}${p.file}`;
    if (name !== current) {
      current = name;
      started = now;
      startBytes = p.bytes;
      lastLine = 0;
      lastTenth = -1;
      if (!stream.isTTY) stream.write(`downloading ${name} (${fmtBytes(p.total)}${p.bytes > 0 ? `, resuming at ${fmtBytes(p.bytes)}` : ''})\n`);
    }
    const secs = (now - started) / 1000;
    const speed = secs > 0.2 ? `${((p.bytes - startBytes) / MIB / secs).toFixed(1)} MiB/s` : '';
    const pct = p.total > 0 ? Math.floor((100 * p.bytes) / p.total) : 100;
    const done = p.bytes >= p.total;
    const text = `${fmtBytes(p.bytes)}/${fmtBytes(p.total)} ${pct}%${speed ? ` ${speed}` : ''}`;
    if (stream.isTTY) {
      const width = 24, fill = Math.round((width * pct) / 100);
      stream.write(`\r${name} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${text}\x1b[K${done ? '\n' : ''}`);
      return;
    }
    const tenth = Math.floor(pct / 10);
    if (done || tenth > lastTenth || now - lastLine >= 5000) {
      if (lastTenth >= 0 || done) stream.write(`${name}: ${text}\n`);
      lastTenth = tenth;
      lastLine = now;
    }
  };
}

/** pullModel with the CLI's reporting: progress and warnings on stderr, a HubError of bad input as a UsageError. */
export async function pullForCli(uri: string, opts: PullOptions & { quiet?: boolean } = {}): Promise<PullResult> {
  const { quiet, ...o } = opts;
  const ac = new AbortController();
  const onSigint = () => ac.abort(new HubError('network', 'interrupted; the partial download is kept: pull again to resume'));
  process.once('SIGINT', onSigint);
  try {
    return await pullModel(uri, {
      ...o,
      signal: ac.signal,
      onProgress: quiet ? undefined : downloadProgress(),
      onWarning: (m) => process.stderr.write(`tessera: warning: ${m}\n`),
    });
  } catch (err) {
    if (err instanceof HubError && err.kind === 'usage') throw new UsageError(err.message);
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Options whose value is a model path, as typed before normalisation (`-m X`, `-mX`, `--model X`, `--model=X`). */
const MODEL_FLAGS = ['-m', '--model', '--draft-model'];

/**
 * argv with every `hf:` model given to -m / --model / --draft-model (and `inspect`'s file)
 * replaced by its local path, pulling what the cache lacks. Nothing is pulled for --help.
 */
export async function resolveHubArgs(cmd: string, argv: string[]): Promise<string[]> {
  if (cmd === 'pull' || argv.includes('-h') || argv.includes('--help') || !argv.some((a) => a.includes('hf:'))) return argv;
  const out = [...argv];
  const pull = async (i: number, prefix: string) => {
    out[i] = prefix + (await pullForCli(out[i]!.slice(prefix.length))).path;
  };
  for (let i = 0; i < out.length; i++) {
    const a = out[i]!;
    if (a === '--') break;
    if (MODEL_FLAGS.includes(a) && out[i + 1]?.startsWith('hf:')) await pull(++i, '');
    else if (a.startsWith('-mhf:')) await pull(i, '-m');
    else for (const f of MODEL_FLAGS) if (f.startsWith('--') && a.startsWith(`${f}=hf:`)) await pull(i, `${f}=`);
    if (cmd === 'inspect' && out[i]!.startsWith('hf:')) await pull(i, '');
  }
  return out;
}

export async function pullCommand(argv: string[]): Promise<void> {
  const { values: a, positionals } = parse('pull', argv, {
    revision: { type: 'string' },
    'cache-dir': { type: 'string' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean', short: 'q' },
    help: { type: 'boolean', short: 'h' },
  }, true);
  if (a.help) return void process.stdout.write(PULL_HELP);
  if (positionals.length === 0) throw new UsageError('give a model to pull, e.g. tessera pull hf:OWNER/REPO/FILE.gguf (see tessera pull --help)');
  for (const p of positionals) if (!p.startsWith('hf:')) throw new UsageError(`expected an hf: URI but received '${p}' (e.g. hf:OWNER/REPO/FILE.gguf; see tessera pull --help)`);
  const results: PullResult[] = [];
  for (const uri of positionals) {
    const t0 = performance.now();
    const r = await pullForCli(uri, { revision: a.revision, cacheDir: a['cache-dir'], quiet: a.quiet });
    if (!a.quiet) {
      process.stderr.write(r.downloadedBytes > 0
        ? `pulled ${r.uri} (${r.commit.slice(0, 12)}): ${fmtBytes(r.downloadedBytes)} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`
        : `${r.uri} is cached (${r.commit.slice(0, 12)})\n`);
    }
    results.push(r);
    if (!a.json) process.stdout.write(`${r.path}\n`);
  }
  if (a.json) process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : results, null, 2) + '\n');
}
