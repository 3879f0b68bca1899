/** `tessera inspect`: print a model file's metadata and tensor table. */
import { readGGUF, type GGUFValue } from '../formats/gguf.js';
import { inputFile, parse } from './common.js';
import { UsageError } from './errors.js';

export const INSPECT_HELP = `Usage: tessera inspect FILE [--json] [--all]

Prints a GGUF file's version, metadata and tensors (name, type, shape, bytes).

Options:
  --json   Print as JSON (long arrays summarised)
  --all    Print long arrays (e.g. the vocabulary) in full
  -h, --help
`;

function show(v: GGUFValue, all: boolean): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'object' && v !== null && 'length' in v) {
    const arr = Array.from(v as ArrayLike<GGUFValue>);
    if (!all && arr.length > 8) return `[${arr.slice(0, 8).map((x) => JSON.stringify(show(x, all))).join(', ')}, … ${arr.length} items]`;
    return arr.map((x) => show(x, all));
  }
  return v;
}

export function inspectCommand(argv: string[]): void {
  const { values: a, positionals } = parse('inspect', argv, { json: { type: 'boolean' }, all: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, true);
  if (a.help) return void process.stdout.write(INSPECT_HELP);
  if (positionals.length !== 1) throw new UsageError('give one model file (see tessera inspect --help)');
  const file = positionals[0]!;
  inputFile(file, 'file');
  const g = readGGUF(file);
  const meta = Object.fromEntries([...g.metadata].map(([k, v]) => [k, show(v, a.all ?? false)]));
  if (a.json) {
    process.stdout.write(JSON.stringify({ version: g.version, alignment: g.alignment, metadata: meta, tensors: g.tensors.map(({ name, type, shape, byteLength }) => ({ name, type, shape, bytes: byteLength })) }, null, 2) + '\n');
    return;
  }
  const out = [`GGUF v${g.version}, ${g.tensors.length} tensors, ${g.metadata.size} metadata keys, alignment ${g.alignment}, ${(g.fileSize / 2 ** 20).toFixed(2)} MiB`, '', 'metadata:'];
  for (const [k, v] of Object.entries(meta)) out.push(`  ${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  out.push('', 'tensors:');
  const params = g.tensors.reduce((s, t) => s + t.elements, 0);
  for (const t of g.tensors) out.push(`  ${t.name.padEnd(32)} ${t.type.padEnd(5)} [${t.shape.join(', ')}]  ${t.byteLength} bytes`);
  out.push('', `parameters: ${params}`);
  process.stdout.write(out.join('\n') + '\n');
}
