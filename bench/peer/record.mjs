// `npm run peer:fixtures`: records llama.cpp's outputs for the comparison tests again, from the
// peer (bench/peer, `npm run peer:install`), into test/fixtures/llamacpp/. It runs every test file
// that keeps a LlamaCppReference with TESSERA_RECORD_LLAMACPP=1: their live tests write what
// llama.cpp returned, and the recorded-output tests then check tessera against it.
//   npm run peer:fixtures [-- test/mixtral.test.ts ...]   (default: every such file)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');
if (!existsSync(path.join(import.meta.dirname, 'node_modules/node-llama-cpp/package.json'))) {
  console.error('peer:fixtures records from llama.cpp: install it first with `npm run peer:install`.');
  process.exit(2);
}
const files = process.argv.slice(2).length
  ? process.argv.slice(2)
  : readdirSync(path.join(root, 'test'))
      .filter((f) => f.endsWith('.test.ts') && readFileSync(path.join(root, 'test', f), 'utf8').includes('new LlamaCppReference('))
      .map((f) => `test/${f}`);
console.log(`recording llama.cpp's outputs for ${files.join(', ')}`);
const r = spawnSync(process.execPath, [path.join(root, 'node_modules/vitest/vitest.mjs'), 'run', ...files], {
  cwd: root,
  stdio: 'inherit',
  // One libuv pool thread: llama.cpp's AsyncWorkers otherwise hop threads and run ~3x slower.
  env: { ...process.env, TESSERA_RECORD_LLAMACPP: '1', UV_THREADPOOL_SIZE: '1' },
});
if (r.status !== 0) console.error('recording failed: test/fixtures/llamacpp/ may be partly rewritten (git diff / git checkout it)');
else console.log('recorded: review and commit test/fixtures/llamacpp/');
process.exit(r.status ?? 1);
