// safetensors: sharded checkpoints equal the single file; hostile headers fail with clear errors.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelFileError } from '../src/formats/errors.js';
import { writeSafetensors as writeSt } from './helpers.js';
import { loadSafetensor, openSafetensorsDir, readSafetensorsHeader } from '../src/formats/safetensors.js';

const root = path.resolve(import.meta.dirname, '..');
const HF = path.join(root, 'test/fixtures/shakespeare-draft/hf');
const tmp = mkdtempSync(path.join(tmpdir(), 'tessera-st-'));

describe('safetensors', () => {
  it('a sharded checkpoint reads the same tensors as the single file', () => {
    const single = readSafetensorsHeader(path.join(HF, 'model.safetensors'));
    const names = [...single.tensors.keys()];
    const dir = path.join(tmp, 'sharded');
    mkdirSync(dir);
    const shards = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
    const weightMap: Record<string, string> = {};
    shards.forEach((ns, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSt(path.join(dir, file), ns.map((n) => {
        const e = single.tensors.get(n)!;
        return { name: n, dtype: e.dtype, shape: e.shape, bytes: new Uint8Array(loadSafetensor(e).data.buffer) };
      }));
      for (const n of ns) weightMap[n] = file;
    });
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const sharded = openSafetensorsDir(dir);
    expect([...sharded.keys()].sort()).toEqual([...names].sort());
    for (const n of names) expect(loadSafetensor(sharded.get(n)!).data).toEqual(loadSafetensor(single.tensors.get(n)!).data);
  });

  it.each([
    ['header longer than the file', (f: string) => writeFileSync(f, Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), Buffer.from('{}')])), /header length 4294967295 exceeds the file/],
    ['truncated length', (f: string) => writeFileSync(f, Buffer.from([1, 2, 3])), /truncated: 3 bytes/],
    ['header not JSON', (f: string) => writeSt(f, [], '{"a": '), /header is not valid JSON/],
    ['header not an object', (f: string) => writeSt(f, [], '[1,2]'), /header is not a JSON object/],
    ['unknown dtype', (f: string) => writeSt(f, [{ name: 'w', dtype: 'F8', shape: [2], bytes: new Uint8Array(2) }]), /tensor 'w': unknown dtype "F8"/],
    ['bad shape', (f: string) => writeSt(f, [], JSON.stringify({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } })), /tensor 'w': invalid shape \[-1\]/],
    ['size mismatch', (f: string) => writeSt(f, [], JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } })), /data_offsets span 8 bytes but F32 \[3\] needs 12/],
    ['data past the end', (f: string) => writeSt(f, [], JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } })), /truncated: tensor 'w' ends at byte/],
    ['offsets reversed', (f: string) => writeSt(f, [], JSON.stringify({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } })), /invalid data_offsets \[8,4\]/],
    ['two tensors over the same bytes', (f: string) => writeSt(f, [{ name: 'pad', dtype: 'U8', shape: [16], bytes: new Uint8Array(16) }],
      JSON.stringify({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } })),
      /tensors 'a' \(data_offsets \[0, 16\]\) and 'b' \(data_offsets \[0, 4\]\) overlap/],
    ['a tensor reaching into the next', (f: string) => writeSt(f, [{ name: 'pad', dtype: 'U8', shape: [24], bytes: new Uint8Array(24) }],
      JSON.stringify({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [16, 24] }, c: { dtype: 'U8', shape: [2], data_offsets: [15, 17] } })),
      /tensors 'a' \(data_offsets \[0, 16\]\) and 'c' \(data_offsets \[15, 17\]\) overlap/],
  ])('%s', (_n, make, msg) => {
    const f = path.join(tmp, 'bad.safetensors');
    make(f);
    expect(() => readSafetensorsHeader(f)).toThrow(msg);
    expect(() => readSafetensorsHeader(f)).toThrow(ModelFileError);
  });

  it('many tensors over the same bytes are rejected before any is read', () => {
    const header: Record<string, unknown> = {};
    for (let i = 0; i < 1442; i++) header[`t${i}`] = { dtype: 'F32', shape: [64, 64], data_offsets: [0, 16384] };
    const f = path.join(tmp, 'same-offset.safetensors');
    writeSt(f, [{ name: 'x', dtype: 'U8', shape: [16384], bytes: new Uint8Array(16384) }], JSON.stringify(header));
    expect(() => readSafetensorsHeader(f)).toThrow(/same-offset.safetensors: tensors 't\d+' \(data_offsets \[0, 16384\]\) and 't\d+' \(data_offsets \[0, 16384\]\) overlap/);
  });

  it('empty tensors may share an offset, and tensors may leave gaps', () => {
    const f = path.join(tmp, 'gaps.safetensors');
    const bytes = new Uint8Array(24).map((_, i) => i);
    writeSt(f, [{ name: 'x', dtype: 'U8', shape: [24], bytes }], JSON.stringify({
      e1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, e2: { dtype: 'F32', shape: [0, 3], data_offsets: [4, 4] },
      a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [8], data_offsets: [12, 20] },
    }));
    const st = readSafetensorsHeader(f);
    expect(Array.from(loadSafetensor(st.tensors.get('b')!).data)).toEqual([12, 13, 14, 15, 16, 17, 18, 19]);
    expect(loadSafetensor(st.tensors.get('e2')!).data.length).toBe(0);
  });

  it('an index pointing at a missing tensor or a path outside the directory is rejected', () => {
    const dir = path.join(tmp, 'badindex');
    mkdirSync(dir);
    copyFileSync(path.join(HF, 'model.safetensors'), path.join(dir, 'a.safetensors'));
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'nope.weight': 'a.safetensors' } }));
    expect(() => openSafetensorsDir(dir)).toThrow(/a.safetensors: tensor 'nope.weight' listed in the index is not in the shard/);
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: '../../etc/passwd' } }));
    expect(() => openSafetensorsDir(dir)).toThrow(/is not a shard file name/);
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), readFileSync(path.join(HF, 'config.json')).subarray(0, 20));
    expect(() => openSafetensorsDir(dir)).toThrow(/model.safetensors.index.json: not valid JSON/);
    // Deep nesting is refused before JSON.parse spends seconds on it (a fuzzed config.json of 5M brackets took 3.2 s).
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), `{"weight_map": ${'['.repeat(2_000_000)}${']'.repeat(2_000_000)}}`);
    expect(() => openSafetensorsDir(dir)).toThrow(/model.safetensors.index.json: not valid JSON \(nested deeper than 64 levels at position 78\)/);
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), `{"weight_map": {"a": "[[[[{{{{\\"[[[["}, "b": ${'['.repeat(63)}${']'.repeat(63)}}`);
    expect(() => openSafetensorsDir(dir)).toThrow(/\[\[\[\[{{{{"\[\[\[\[: cannot open/); // brackets in strings and 63 levels pass the depth check: the shard is looked for
    for (const [json, msg] of [['null', /expected a JSON object but received null/], ['[1]', /expected a JSON object but received an array/], ['{"weight_map": null}', /missing weight_map/], ['{"weight_map": []}', /missing weight_map/]] as const) {
      writeFileSync(path.join(dir, 'model.safetensors.index.json'), json);
      expect(() => openSafetensorsDir(dir)).toThrow(ModelFileError);
      expect(() => openSafetensorsDir(dir)).toThrow(msg);
    }
  });
});
