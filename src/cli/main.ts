/** The `tessera` command line. Subcommands: info (and, as later work lands, generate, serve, ...). */
import { runtimeInfo } from '../backend/index.js';
import { cudaAddonSource, cudaStatus } from '../backend/cuda/device.js';
import { nativeAddonSource } from '../backend/cpu/native.js';
import type { AddonOrigin } from '../backend/addon-files.js';
import { VERSION } from '../version.js';
import { UsageError } from './errors.js';
import { didYouMean } from './common.js';
import { benchCommand } from './bench.js';
import { chatCommand } from './chat.js';
import { evalCommand } from './eval.js';
import { generateCommand } from './generate.js';
import { serveCommand } from './serve.js';
import { inspectCommand } from './inspect.js';
import { logitsCommand } from './logits.js';
import { moeStatsCommand } from './moe-stats.js';
import { perplexityCommand } from './perplexity.js';
import { pullCommand, resolveHubArgs } from './pull.js';
import { quantizeCommand } from './quantize.js';
import { scoreCommand } from './score.js';
import { tokenizeCommand } from './tokenize.js';

const HELP = `tessera ${VERSION} — transformer inference runtime for Node.js

Usage: tessera <command> [options]

Commands:
  generate        Stream a completion of a prompt (default model: the bundled stories260K)
  chat            Interactive chat with the model's chat template
  serve           OpenAI-compatible HTTP server (batched, streaming, /metrics)
  perplexity      Perplexity of a text file (llama.cpp chunk convention or sliding window)
  score           Log-probability of each token of a completion given a prompt
  eval            Corpus BLEU and ROUGE-L of generated (or given) hypotheses against references
  quantize        GPTQ / RTN quantisation to a GPTQ checkpoint (or GGUF Q4_0/Q8_0)
  tokenize        Print the token ids of a text
  logits          Write all positions' logits as raw float32 [n_tokens, vocab]
  inspect         Print a GGUF file's metadata and tensors
  moe-stats       Expert load and load-balancing loss of a MoE model over a text
  bench           Prefill and decode speed of a model
  pull            Download a model from the Hugging Face hub into its cache;
                  every -m also takes hf:OWNER/REPO/FILE.gguf
  info            Show the native addon status, the CPU kernel path (ISA) in use,
                  the supported paths, thread count and CPU features.

Options:
  -h, --help      Show this help (or a command's help: tessera <command> --help)
  -v, --version   Print the version and the kernel path in use

llama.cpp spellings, in the commands that have the option:
  --temp (--temperature)  -t (--threads)  -s (--seed)  -c, --ctx-size (--ctx)
  -ngl, --n-gpu-layers N  accepted and ignored with a note: tessera has no per-layer GPU
                          offload; the whole model runs on --backend
An unknown command or option is refused with exit status 2 and the nearest name.

Environment:
  TESSERA_ISA=scalar|avx2|avx512|avx512vnni
                                   Force a CPU kernel path (default: the best supported)
  TESSERA_THREADS=N                Native thread pool size (default: available cores)
  TESSERA_DISABLE_NATIVE=1         Use the pure-TypeScript 'js' backend
  HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE, HF_HOME, HF_HUB_OFFLINE
                                   Hugging Face hub access for pull and -m hf:... (see tessera pull --help)
`;

const INFO_HELP = `Usage: tessera info [--json]

Prints whether the native addon loaded and from which file (the package's prebuilt
binary, a local build, or TESSERA_ADDON's), or why not and what to run; the kernel
path in use, every path this CPU supports, the thread pool size and the detected CPU
features; then the CUDA addon and the GPU, or why the cuda backend is unavailable
(no addon for this platform, a file missing or failing to load, no device).

Options:
  --json   Print the same as JSON
`;


/** Where an addon came from, in words. */
const origin = (o: AddonOrigin, envVar: string) => (o === 'env' ? `named by ${envVar}` : o === 'build' ? 'local build' : 'prebuilt');

function info(args: string[]): void {
  if (args.includes('-h') || args.includes('--help')) return void process.stdout.write(INFO_HELP);
  const unknown = args.filter((a) => a !== '--json');
  if (unknown.length) throw new UsageError(`unknown option for info: ${unknown[0]} (see tessera info --help)`);
  const i = runtimeInfo();
  const cuda = cudaStatus();
  const nativeAddon = nativeAddonSource();
  const cudaAddon = cudaAddonSource();
  if (args.includes('--json')) {
    return void process.stdout.write(JSON.stringify({ version: VERSION, ...i, nativeAddon, cuda: { ...cuda, addon: cudaAddon } }, null, 2) + '\n');
  }
  const lines = [`tessera ${VERSION}`, `node ${process.version} (${process.platform}-${process.arch})`];
  if (!i.native) {
    lines.push(`native addon: unavailable — ${i.nativeError}`, `backend: js (pure TypeScript)`);
  } else {
    lines.push(
      `native addon: loaded, ${origin(nativeAddon!.origin, 'TESSERA_ADDON')} (${nativeAddon!.file})`,
      `backend: cpu`,
      `kernel path (ISA): ${i.isa}`,
      `supported paths: ${i.isas.join(', ')}`,
      `threads: ${i.threads}`,
      `cpu features: ${Object.entries(i.features).filter(([, v]) => v).map(([k]) => k).join(' ') || '(none)'}`,
    );
  }
  if (cudaAddon) lines.push(`cuda addon: ${origin(cudaAddon.origin, 'TESSERA_CUDA_ADDON')} (${cudaAddon.file})`);
  lines.push(cuda.available
    ? `cuda: ${cuda.device!.name} (sm ${cuda.device!.computeCapability}, ${(cuda.device!.memoryBytes / 2 ** 30).toFixed(0)} GiB)`
    : `cuda: unavailable — ${cuda.reason}`);
  process.stdout.write(lines.join('\n') + '\n');
}

/** The command names, as HELP lists them (so a command added there is suggested too). */
function commandNames(): string[] {
  const list = HELP.slice(HELP.indexOf('Commands:'), HELP.indexOf('Options:'));
  return [...list.matchAll(/^ {2}([a-z][a-z-]*)\s/gm)].map((m) => m[1]!);
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...given] = argv;
  try {
    const rest = await resolveHubArgs(cmd ?? '', given); // -m hf:... -> its path in the Hugging Face cache
    if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
      process.stdout.write(HELP);
      return;
    }
    if (cmd === '-v' || cmd === '--version') {
      const i = runtimeInfo();
      process.stdout.write(`tessera ${VERSION} (${i.native ? `cpu, ${i.isa}, ${i.threads} threads` : 'js backend: native addon unavailable'})\n`);
      return;
    }
    if (cmd === 'info') return info(rest);
    if (cmd === 'generate') return await generateCommand(rest);
    if (cmd === 'chat') return await chatCommand(rest);
    if (cmd === 'serve') return await serveCommand(rest);
    if (cmd === 'perplexity') return perplexityCommand(rest);
    if (cmd === 'score') return await scoreCommand(rest);
    if (cmd === 'eval') return await evalCommand(rest);
    if (cmd === 'quantize') return quantizeCommand(rest);
    if (cmd === 'tokenize') return tokenizeCommand(rest);
    if (cmd === 'logits') return logitsCommand(rest);
    if (cmd === 'inspect') return inspectCommand(rest);
    if (cmd === 'moe-stats') return moeStatsCommand(rest);
    if (cmd === 'bench') return benchCommand(rest);
    if (cmd === 'pull') return await pullCommand(rest);
    const near = didYouMean(cmd, commandNames());
    throw new UsageError(`unknown command '${cmd}'${near ? `; did you mean ${near}?` : ''} (see tessera --help)`);
  } catch (err) {
    if (err instanceof UsageError || (err as Error)?.name === 'ModelFileError' || (err as Error)?.name === 'HubError') {
      process.stderr.write(`tessera: ${(err as Error).message}\n`);
      process.exitCode = err instanceof UsageError ? 2 : 1;
      return;
    }
    throw err;
  }
}
