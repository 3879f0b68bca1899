/** `tessera tokenize`: print the token ids of a text. */
import { readFileSync } from 'node:fs';
import { loadTokenizer } from '../model/load.js';
import { existsSync } from 'node:fs';
import { defaultModelPath, inputFile, parse } from './common.js';
import { UsageError } from './errors.js';

export const TOKENIZE_HELP = `Usage: tessera tokenize [-m FILE] (-p TEXT | -f FILE) [--json] [--no-bos] [--pieces]

Prints the token ids of the text, space-separated (default model: the bundled stories260K).

Options:
  -m, --model FILE   Model: GGUF, Hugging Face directory or llama2.c .bin (only its tokenizer is read)
  -p, --prompt TEXT  Text to tokenize
  -f, --file FILE    Read the text from a file
      --json         Print a JSON array of ids (with --pieces: of {id, piece})
      --pieces       Print each token's piece next to its id
      --no-bos       Do not prepend BOS
  -h, --help         Show this help
`;

export function tokenizeCommand(argv: string[]): void {
  const { values: a } = parse('tokenize', argv, {
    model: { type: 'string', short: 'm' },
    prompt: { type: 'string', short: 'p' },
    file: { type: 'string', short: 'f' },
    json: { type: 'boolean' },
    pieces: { type: 'boolean' },
    'no-bos': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (a.help) return void process.stdout.write(TOKENIZE_HELP);
  if ((a.prompt === undefined) === (a.file === undefined)) throw new UsageError('give exactly one of -p TEXT or -f FILE (see tessera tokenize --help)');
  const text = a.prompt ?? readFileSync(inputFile(a.file!, 'text file'), 'utf8');
  const file = a.model ?? defaultModelPath();
  if (!existsSync(file)) throw new UsageError(`model file not found: ${file}`);
  const tok = loadTokenizer(file);
  const ids = tok.encode(text, { addBos: !a['no-bos'], parseSpecial: true });
  if (a.json) {
    const out = a.pieces ? ids.map((id) => ({ id, piece: tok.piece(id) })) : ids;
    process.stdout.write(JSON.stringify(out) + '\n');
  } else if (a.pieces) {
    process.stdout.write(ids.map((id) => `${id}\t${JSON.stringify(tok.piece(id))}`).join('\n') + '\n');
  } else {
    process.stdout.write(ids.join(' ') + '\n');
  }
}
