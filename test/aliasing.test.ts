// Memory shared between what an op writes and what it reads, and the edge inputs both backends
// must treat alike (issue 18, items 2 and 8).
//  - Backend: for every op that takes caller memory to write, each output placed over each other
//    array of the call (views of one ArrayBuffer at some offset) is a RangeError naming the op and
//    both arguments, on js and cpu, before any kernel runs: nothing the call reads is changed.
//    Exact in-place use stays allowed where documented (elementwise ops, rmsNorm, rope).
//  - The native addon, called directly, refuses the same for every op it exports.
//  - CudaDevice (host logic, a minimal fake addon): the same rule on device buffers.
//  - softmax rows with NaN / ±Infinity, detached, resized and SharedArrayBuffer-backed tensors:
//    one behaviour on both backends, from one table.
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/backend/cpu/native.js';
import { CudaDevice, type CudaAddon } from '../src/backend/cuda/device.js';
import { getBackend, type Backend } from '../src/backend/index.js';
import { STORAGE_CTOR, type DType } from '../src/tensor/dtype.js';
import { IntWeight } from '../src/tensor/int-weight.js';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeAvailable, randTensor, rng } from './helpers.js';
import { softmaxRef } from './reference.js';

const backends = nativeAvailable ? (['js', 'cpu'] as const) : (['js'] as const);

const i32 = (shape: number[], v: number[]) => Tensor.from('i32', shape, v);

type Named = Record<string, Tensor>;
interface OpCase {
  op: string;
  /** Every array of the call, by the name the op's errors use; outputs included. */
  make: () => Named;
  outputs: string[];
  /** [output, input] pairs documented to work exactly in place. */
  inPlace?: [string, string][];
  call: (be: Backend, t: Named) => unknown;
}

function cases(): OpCase[] {
  const r = rng(18);
  const f = (shape: number[]) => randTensor(shape, r);
  const attn = (op: 'flashAttention' | 'attentionNaive'): OpCase => ({
    op,
    make: () => ({ q: f([3, 2, 8]), k: f([5, 1, 8]), v: f([5, 1, 8]), 'options.mask': f([3, 5]), 'options.alibiSlopes': f([2]), 'options.out': f([3, 2, 8]) }),
    outputs: ['options.out'],
    call: (be, t) => be[op](t.q!, t.k!, t.v!, { mask: t['options.mask'], alibiSlopes: t['options.alibiSlopes'], out: t['options.out'] }),
  });
  return [
    {
      op: 'linear',
      make: () => ({ x: f([3, 16]), w: f([5, 16]), bias: f([5]), out: f([3, 5]) }),
      outputs: ['out'],
      call: (be, t) => be.linear(t.x!, t.w!, t.bias, t.out),
    },
    {
      op: 'linear',
      make: () => ({ x: f([3, 32]), w: Tensor.from('q8_0', [5, 32], Array.from({ length: 160 }, () => r() - 0.5)), out: f([3, 5]) }),
      outputs: ['out'],
      call: (be, t) => be.linear(t.x!, t.w!, null, t.out),
    },
    {
      op: 'rmsNorm',
      make: () => ({ x: f([3, 16]), weight: f([16]), out: f([3, 16]) }),
      outputs: ['out'],
      inPlace: [['out', 'x']],
      call: (be, t) => be.rmsNorm(t.x!, t.weight!, 1e-5, t.out),
    },
    {
      op: 'layerNorm',
      make: () => ({ x: f([3, 16]), weight: f([16]), bias: f([16]), out: f([3, 16]) }),
      outputs: ['out'],
      call: (be, t) => be.layerNorm(t.x!, t.weight, t.bias, 1e-5, t.out),
    },
    {
      op: 'add',
      make: () => ({ a: f([3, 16]), b: f([16]), out: f([3, 16]) }),
      outputs: ['out'],
      inPlace: [['out', 'a'], ['out', 'b']],
      call: (be, t) => be.add(t.a!, t.b!, t.out),
    },
    {
      op: 'mul',
      make: () => ({ a: f([3, 16]), b: f([3, 16]), out: f([3, 16]) }),
      outputs: ['out'],
      inPlace: [['out', 'a'], ['out', 'b']],
      call: (be, t) => be.mul(t.a!, t.b!, t.out),
    },
    { op: 'silu', make: () => ({ x: f([3, 16]), out: f([3, 16]) }), outputs: ['out'], inPlace: [['out', 'x']], call: (be, t) => be.silu(t.x!, t.out) },
    { op: 'gelu', make: () => ({ x: f([3, 16]), out: f([3, 16]) }), outputs: ['out'], inPlace: [['out', 'x']], call: (be, t) => be.gelu(t.x!, 'none', t.out) },
    {
      op: 'swiglu',
      make: () => ({ gate: f([3, 16]), up: f([3, 16]), out: f([3, 16]) }),
      outputs: ['out'],
      inPlace: [['out', 'gate'], ['out', 'up']],
      call: (be, t) => be.swiglu(t.gate!, t.up!, t.out),
    },
    { op: 'softmax', make: () => ({ x: f([3, 16]), out: f([3, 16]) }), outputs: ['out'], call: (be, t) => be.softmax(t.x!, 1, t.out) },
    { op: 'logSoftmax', make: () => ({ x: f([3, 16]), out: f([3, 16]) }), outputs: ['out'], call: (be, t) => be.logSoftmax(t.x!, 1, t.out) },
    {
      op: 'embedding',
      make: () => ({ table: f([6, 8]), ids: i32([3], [5, 0, 2]), out: f([3, 8]) }),
      outputs: ['out'],
      call: (be, t) => be.embedding(t.table!, t.ids!, t.out),
    },
    {
      op: 'rope',
      make: () => ({ x: f([4, 2, 8]), positions: i32([4], [3, 1, 4, 1]), 'options.out': f([4, 2, 8]) }),
      outputs: ['options.out'],
      inPlace: [['options.out', 'x']],
      call: (be, t) => be.rope(t.x!, t.positions!, { out: t['options.out'] }),
    },
    attn('flashAttention'),
    attn('attentionNaive'),
    {
      op: 'pagedAttention',
      make: () => ({
        q: f([3, 2, 8]), kCache: f([3, 4, 1, 8]), vCache: f([3, 4, 1, 8]),
        'batch.blockTables': i32([2, 2], [2, 0, 1, 1]), 'batch.contextLens': i32([2], [6, 3]), 'batch.queryStart': i32([3], [0, 2, 3]),
        'options.alibiSlopes': f([2]), 'options.out': f([3, 2, 8]),
      }),
      outputs: ['options.out'],
      call: (be, t) =>
        be.pagedAttention(t.q!, t.kCache!, t.vCache!, { blockTables: t['batch.blockTables']!, contextLens: t['batch.contextLens']!, queryStart: t['batch.queryStart']! },
          { alibiSlopes: t['options.alibiSlopes'], out: t['options.out'] }),
    },
    {
      op: 'pagedKvWrite',
      make: () => ({ kCache: f([3, 4, 1, 8]), vCache: f([3, 4, 1, 8]), k: f([2, 1, 8]), v: f([2, 1, 8]), slots: i32([2], [9, 4]) }),
      outputs: ['kCache', 'vCache'],
      call: (be, t) => be.pagedKvWrite(t.kCache!, t.vCache!, t.k!, t.v!, t.slots!),
    },
  ];
}

/** Copies of `t` with `a` at byte `offA` and `b` at byte `offB` of one new ArrayBuffer (a's values kept, b's copied where they do not overlap). */
function share(t: Named, a: string, offA: number, b: string, offB: number): Named {
  const ta = t[a]!, tb = t[b]!;
  const buf = new ArrayBuffer(Math.ceil(Math.max(offA + ta.byteLength, offB + tb.byteLength) / 8) * 8);
  const view = (x: Tensor, off: number) => {
    const Ctor = STORAGE_CTOR[x.dtype as DType] as unknown as new (b: ArrayBuffer, o: number, n: number) => Tensor['data'];
    return new Tensor(x.dtype, x.shape, new Ctor(buf, off, x.data.length));
  };
  const nb = view(tb, offB);
  (nb.data as Float32Array).set(tb.data as Float32Array);
  const na = view(ta, offA);
  (na.data as Float32Array).set(ta.data as Float32Array); // a (the input) keeps its values
  return { ...t, [a]: na, [b]: nb };
}

const bytes = (t: Tensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice();

describe.each(backends)('aliased outputs on %s', (name) => {
  const be = getBackend(name);

  for (const c of cases()) {
    it(`${c.op}: each output over each other array is refused, naming both, before anything is written`, () => {
      const base = c.make();
      expect(() => c.call(be, base)).not.toThrow(); // the case itself is valid
      for (const o of c.outputs) {
        for (const i of Object.keys(base)) {
          if (i === o) continue;
          const t = c.make();
          // Exact in-place pairs are allowed: the refused form is a partial overlap (4 bytes off).
          const inPlace = c.inPlace?.some(([a, b]) => a === o && b === i) ?? false;
          const s = share(t, i, 0, o, inPlace || t[i]!.byteLength === t[o]!.byteLength ? 4 : 0);
          const before = bytes(s[i]!);
          const want = c.outputs.includes(i)
            ? new RangeError(`Expected ${c.outputs[Math.min(c.outputs.indexOf(o), c.outputs.indexOf(i))]} not to overlap ${c.outputs[Math.max(c.outputs.indexOf(o), c.outputs.indexOf(i))]} but they share memory and ${c.op} writes both`)
            : new RangeError(`Expected ${o} not to overlap an input of this op but it shares memory with ${i} in ${c.op}${inPlace ? ` (in place, ${o} must cover ${i} exactly)` : ''}`);
          expect(() => c.call(be, s), `${o} over ${i}`).toThrow(want);
          expect(bytes(s[i]!), `${i} unchanged`).toEqual(before);
        }
      }
    });
  }

  it('exact in-place use, where documented, gives the out-of-place result', () => {
    for (const c of cases()) {
      for (const [o, i] of c.inPlace ?? []) {
        const t = c.make();
        if (t[o]!.byteLength !== t[i]!.byteLength) continue; // a broadcast operand cannot be covered exactly
        const fresh = { ...t, [o]: new Tensor('f32', t[o]!.shape) };
        c.call(be, fresh);
        const want = Array.from(fresh[o]!.data as Float32Array);
        const same = { ...t, [o]: new Tensor('f32', t[i]!.shape, t[i]!.data as Float32Array) };
        c.call(be, same);
        expect(Array.from(same[i]!.data as Float32Array), `${c.op} ${o} = ${i}`).toEqual(want);
      }
    }
  });

  it('linear with an integer weight: out over any part of the weight is refused', () => {
    const r = rng(5);
    const N = 20, K = 40;
    const w = IntWeight.fromInt8(Int8Array.from({ length: N * K }, () => Math.floor(r() * 255) - 127), Float32Array.from({ length: N }, () => 0.01 + r() * 0.01), N, K);
    const x = randTensor([1, K], r);
    const want = Array.from(be.linear(x, w).data);
    const p = w.parts;
    const tried: string[] = [];
    for (const [part, arr] of [['w.qweight', p.qweight], ['w.groupBlocks', p.groupBlocks], ['w.meta', p.meta], ['w.colScale', p.colScale]] as const) {
      const off = arr ? Math.ceil(arr.byteOffset / 4) * 4 : 0;
      if (!arr || off + 4 * N > arr.byteOffset + arr.byteLength) continue; // too small to hold out (1, N)
      tried.push(part);
      const before = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength).slice();
      const out = new Tensor('f32', [1, N], new Float32Array(arr.buffer, off, N));
      expect(() => be.linear(x, w, null, out)).toThrow(new RangeError(`Expected out not to overlap an input of this op but it shares memory with ${part} in linear`));
      expect(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength)).toEqual(before);
    }
    expect(tried).toEqual(['w.qweight', 'w.meta', 'w.colScale']);
    expect(Array.from(be.linear(x, w).data)).toEqual(want);
  });
});

/** The native ops as exported, with every typed-array argument named as the addon names it. */
interface NativeCase {
  op: string;
  args: () => unknown[];
  names: (string | null)[];
  outputs: string[];
  inPlace?: [string, string][];
  /** Ops that take a named plan (rope): the plan built from the positional args above. */
  plan?: (args: unknown[]) => unknown[];
}

function nativeCases(): NativeCase[] {
  const r = rng(7);
  const f = (n: number) => Float32Array.from({ length: n }, () => r() * 2 - 1);
  const iw = IntWeight.fromInt8(Int8Array.from({ length: 20 * 40 }, () => Math.floor(r() * 255) - 127), Float32Array.from({ length: 20 }, () => 0.01), 20, 40).parts;
  const attn = (op: string): NativeCase => ({
    op,
    args: () => [f(48), f(40), f(40), f(48), 3, 5, 2, 1, 8, 0.3, false, 0, f(2), 0, 0, f(15)],
    names: ['q', 'k', 'v', 'o', null, null, null, null, null, null, null, null, 'alibi', null, null, 'mask'],
    outputs: ['o'],
  });
  return [
    { op: 'linear', args: () => [f(48), f(80), 0, f(5), f(15), 3, 5, 16], names: ['x', 'w', null, 'bias', 'y'], outputs: ['y'] },
    {
      op: 'linearInt',
      args: () => [f(80), iw.qweight.slice(), iw.bits, iw.perm?.slice() ?? null, iw.groupBlocks.slice(), iw.meta.slice(), iw.colScale?.slice() ?? null, f(20), f(40), 2, 20, 40,
        iw.groupBlocks.length - 1, iw.fixedZero, iw.roundDxF16],
      names: ['x', 'qweight', null, 'perm', 'groupBlocks', 'meta', 'colScale', 'bias', 'y'],
      outputs: ['y'],
    },
    { op: 'rmsNorm', args: () => [f(48), f(16), f(48), 3, 16, 1e-5], names: ['x', 'weight', 'y'], outputs: ['y'], inPlace: [['y', 'x']] },
    { op: 'layerNorm', args: () => [f(48), f(16), f(16), f(48), 3, 16, 1e-5], names: ['x', 'weight', 'bias', 'y'], outputs: ['y'] },
    { op: 'softmax', args: () => [f(48), f(48), 3, 16, 1, false], names: ['x', 'y'], outputs: ['y'] },
    { op: 'activation', args: () => [f(48), f(48), 0], names: ['x', 'y'], outputs: ['y'], inPlace: [['y', 'x']] },
    { op: 'swiglu', args: () => [f(48), f(48), f(48)], names: ['gate', 'up', 'y'], outputs: ['y'], inPlace: [['y', 'gate'], ['y', 'up']] },
    { op: 'binary', args: () => [f(48), f(16), f(48), 0], names: ['a', 'b', 'y'], outputs: ['y'], inPlace: [['y', 'a'], ['y', 'b']] },
    { op: 'embedding', args: () => [f(48), 0, 6, 8, new Int32Array([5, 0, 2]), f(24)], names: ['table', null, null, null, 'ids', 'out'], outputs: ['out'] },
    {
      op: 'rope',
      args: () => [f(64), f(64), new Int32Array([3, 1, 4, 1]), f(4)],
      names: ['x', 'y', 'positions', 'freqFactors'],
      outputs: ['y'],
      inPlace: [['y', 'x']],
      plan: ([x, y, positions, freqFactors]) => [
        { x, y, positions, freqFactors, T: 4, H: 2, D: 8, rotDim: 8, theta: 10000, freqScale: 1, neox: true, extFactor: 0, corrLow: 0, corrHigh: 0, attnFactor: 1 },
      ],
    },
    attn('flashAttention'),
    attn('attentionNaive'),
    {
      op: 'pagedAttention',
      args: () => [f(48), f(96), f(96), new Int32Array([2, 0, 1, 1]), new Int32Array([6, 3]), new Int32Array([0, 2, 3]), f(48), 2, 2, 3, 4, 2, 1, 8, 0.3, f(2), 0, 0],
      names: ['q', 'kCache', 'vCache', 'blockTables', 'contextLens', 'queryStart', 'o', null, null, null, null, null, null, null, null, 'alibi'],
      outputs: ['o'],
    },
    {
      op: 'pagedKvWrite',
      args: () => [f(96), f(96), f(16), f(16), new Int32Array([9, 4]), 2, 12, 8],
      names: ['kCache', 'vCache', 'k', 'v', 'slots'],
      outputs: ['kCache', 'vCache'],
    },
    {
      op: 'moeRoute',
      args: () => [f(12), 3, 4, 2, true, f(6), new Int32Array(6), new Int32Array(5), new Int32Array(6)],
      names: ['logits', null, null, null, null, 'weights', 'experts', 'expertOffsets', 'order'],
      outputs: ['weights', 'experts', 'expertOffsets', 'order'],
    },
    { op: 'moeGather', args: () => [f(15), 3, 5, new Int32Array([1, 0, 3, 2, 5, 4]), 2, f(30)], names: ['x', null, null, 'order', null, 'out'], outputs: ['out'] },
    {
      op: 'moeScatter',
      args: () => [f(30), new Int32Array([1, 0, 3, 2, 5, 4]), f(6), 3, 2, 5, f(15)],
      names: ['y', 'order', 'weights', null, null, null, 'out'],
      outputs: ['out'],
    },
    { op: 'topk', args: () => [f(48), 3, 16, 4, f(12), new Int32Array(12)], names: ['x', null, null, null, 'values', 'indices'], outputs: ['values', 'indices'] },
    { op: 'crossEntropy', args: () => [f(48), 3, 16, new Int32Array([1, 15, 0]), -100, f(3)], names: ['logits', null, null, 'targets', null, 'nll'], outputs: ['nll'] },
  ];
}

function shareArgs(args: unknown[], a: number, offA: number, b: number, offB: number): unknown[] {
  const va = args[a] as Float32Array, vb = args[b] as Float32Array;
  const buf = new ArrayBuffer(Math.ceil(Math.max(offA + va.byteLength, offB + vb.byteLength) / 8) * 8);
  const Ca = va.constructor as new (b: ArrayBuffer, o: number, n: number) => Float32Array;
  const Cb = vb.constructor as new (b: ArrayBuffer, o: number, n: number) => Float32Array;
  const nb = new Cb(buf, offB, vb.length);
  nb.set(vb);
  const na = new Ca(buf, offA, va.length);
  na.set(va);
  const out = [...args];
  out[a] = na;
  out[b] = nb;
  return out;
}

describe.runIf(nativeAvailable)('the native addon refuses aliased outputs itself', () => {
  const n = loadNative() as unknown as Record<string, (...a: unknown[]) => unknown>;

  for (const c of nativeCases()) {
    it(`${c.op}: each output over each other array`, () => {
      const call = (args: unknown[]) => n[c.op]!(...(c.plan ? c.plan(args) : args));
      expect(() => call(c.args())).not.toThrow();
      for (const o of c.outputs) {
        const oi = c.names.indexOf(o);
        c.names.forEach((iname, ii) => {
          if (iname === null || ii === oi) return;
          const args = c.args();
          if (args[ii] === null) return;
          const inPlace = c.inPlace?.some(([a, b]) => a === o && b === iname) ?? false;
          const same = (args[ii] as ArrayBufferView).byteLength === (args[oi] as ArrayBufferView).byteLength;
          const s = shareArgs(args, ii, 0, oi, inPlace || same ? 4 : 0);
          const v = s[ii] as ArrayBufferView;
          const before = new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
          const both = c.outputs.includes(iname);
          const [first, second] = c.names.indexOf(iname) < oi ? [iname, o] : [o, iname];
          expect(() => call(s), `${o} over ${iname}`).toThrow(
            both ? `${c.op}: '${first}' and '${second}' overlap in memory and both are written` : `${c.op}: output '${o}' overlaps input '${iname}' in memory`,
          );
          expect(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), `${iname} unchanged`).toEqual(before);
        });
      }
      for (const [o, i] of c.inPlace ?? []) {
        const args = c.args();
        const oi = c.names.indexOf(o), ii = c.names.indexOf(i);
        if ((args[oi] as ArrayBufferView).byteLength !== (args[ii] as ArrayBufferView).byteLength) continue;
        args[oi] = args[ii];
        expect(() => call(args), `${o} = ${i} in place`).not.toThrow();
      }
    });
  }

  it('pagedKvWrite with the slots inside the K cache (the fuzzer case) leaves the cache untouched', () => {
    const kc = new Float32Array(2 * 4 * 8), vc = new Float32Array(2 * 4 * 8);
    const slots = new Int32Array(kc.buffer, 0, 1);
    slots[0] = 7; // row 7 of the cache: a write there overwrites nothing of slots, but row 0 would
    const k = Float32Array.from({ length: 8 }, (_, i) => 1e30 * (i + 1));
    expect(() => n.pagedKvWrite!(kc, vc, k, k.slice(), slots, 1, 8, 8)).toThrow("pagedKvWrite: output 'kCache' overlaps input 'slots' in memory");
    expect(slots[0]).toBe(7);
  });

  it('SharedArrayBuffer and detached arrays get messages naming the argument', () => {
    const sab = new Float32Array(new SharedArrayBuffer(16));
    expect(() => n.activation!(sab, new Float32Array(4), 0)).toThrow("activation: 'x' is backed by a SharedArrayBuffer; native kernels read only ArrayBuffer memory");
    const det = new Float32Array(4);
    structuredClone(det.buffer, { transfer: [det.buffer] });
    expect(() => n.activation!(new Float32Array(4), det, 0)).toThrow("activation: 'y' is detached (its ArrayBuffer was transferred)");
  });
});

describe('CudaDevice refuses an output that is one of its inputs (host logic)', () => {
  /** Allocation only: every op that reached the addon would be recorded. */
  function allocOnly(): CudaAddon & { calls: string[] } {
    let next = 0x1000n;
    const calls: string[] = [];
    const op = (name: string) => () => void calls.push(name);
    return {
      calls,
      info: () => ({ compiled: true, runtimeVersion: 13000, devices: 1, error: null, name: 'Fake GPU', computeCapability: '9.0', memoryBytes: 1e9, multiprocessors: 1 }),
      alloc: () => (next += 0x1000n),
      free: () => {},
      upload: () => {},
      download: () => {},
      synchronize: () => {},
      flashAttention: op('flashAttention'),
      flashWorkspaceFloats: () => 0,
      pagedAttention: op('pagedAttention'),
      gptqLinear: op('gptqLinear'),
      moeRoute: op('moeRoute'),
      rmsNorm: op('rmsNorm'),
      rope: op('rope'),
      swiglu: op('swiglu'),
      add: op('add'),
      embedding: op('embedding'),
      pagedKvWrite: op('pagedKvWrite'),
      convert: op('convert'),
    };
  }

  it('pagedAttention, pagedKvWrite, rmsNorm and embedding; in place stays allowed where documented', () => {
    const a = allocOnly();
    const d = CudaDevice.open(a);
    const q = d.empty('f32', [3, 2, 8]), kc = d.empty('f32', [3, 4, 1, 8]), vc = d.empty('f32', [3, 4, 1, 8]);
    const batch = { blockTables: i32([2, 2], [2, 0, 1, 1]), contextLens: i32([2], [6, 3]), queryStart: i32([3], [0, 2, 3]) };
    expect(() => d.pagedAttention(q, kc, vc, batch, { out: q })).toThrow(new RangeError('Expected out not to overlap an input of this op but it shares memory with q in pagedAttention'));
    const k = d.empty('f32', [2, 1, 8]), slots = d.empty('i32', [2]);
    expect(() => d.pagedKvWrite(kc, kc, k, k, slots)).toThrow(new RangeError('Expected kCache not to overlap vCache but they share memory and pagedKvWrite writes both'));
    const x = d.empty('f32', [3, 16]), w = d.empty('f32', [16]);
    expect(() => d.rmsNorm(w, w, 1e-5, w)).toThrow(/shares memory with weight in rmsNorm/);
    const table = d.empty('f32', [3, 8]), ids = d.empty('i32', [3]);
    expect(() => d.embedding(table, ids, table)).toThrow(/shares memory with table in embedding/);
    expect(a.calls).toEqual([]);
    d.rmsNorm(x, w, 1e-5, x);
    d.add(x, x, x);
    d.swiglu(x, d.empty('f32', [3, 16]), x);
    expect(a.calls).toEqual(['rmsNorm', 'add', 'swiglu']);
    d.dispose();
  });
});

/** Softmax as PyTorch and ggml define it on the edge rows (s = scale * x, in double):
 *  a NaN or +Infinity in s makes the whole row NaN; an all -Infinity row is 0 (log: NaN). */
function softmaxEdgeRef(x: Float32Array, cols: number, scale: number, log: boolean): Float64Array {
  const y = softmaxRef(x, cols, scale, log);
  for (let r = 0; r < x.length / cols; r++) {
    const s = Array.from(x.subarray(r * cols, (r + 1) * cols), (v) => v * scale);
    if (s.some((v) => Number.isNaN(v) || v === Infinity)) y.fill(NaN, r * cols, (r + 1) * cols);
    else if (s.every((v) => v === -Infinity)) y.fill(log ? NaN : 0, r * cols, (r + 1) * cols);
  }
  return y;
}

describe('edge inputs: one behaviour on every backend', () => {
  const cols = 37; // a vector body and a scalar tail on every ISA
  const r = rng(8);
  const rows: [string, (row: Float32Array) => void][] = [
    ['finite', () => {}],
    ['NaN in the vector body', (row) => void (row[3] = NaN)],
    ['NaN in the tail', (row) => void (row[36] = NaN)],
    ['+Infinity', (row) => void (row[20] = Infinity)],
    ['-Infinity among finite values', (row) => void (row[5] = -Infinity)],
    ['all -Infinity', (row) => row.fill(-Infinity)],
    ['NaN among -Infinity', (row) => { row.fill(-Infinity); row[33] = NaN; }],
    ['large spread', (row) => { row[0] = 80; row[1] = -80; }],
  ];
  const x = new Float32Array(rows.length * cols);
  rows.forEach(([, edit], i) => {
    const row = x.subarray(i * cols, (i + 1) * cols);
    for (let j = 0; j < cols; j++) row[j] = (r() * 2 - 1) * 4;
    edit(row);
  });

  it.each(backends.flatMap((b) => [1, -1, 0.5, 0].flatMap((scale) => [false, true].map((log) => [b, scale, log] as const))))(
    'softmax on %s, scale %d, log %s: NaN or +Infinity in a row make that row NaN; other rows as the float64 reference',
    (name, scale, log) => {
      const be = getBackend(name);
      const t = new Tensor('f32', [rows.length, cols], x.slice());
      const y = (log ? be.logSoftmax(t, scale) : be.softmax(t, scale)).data;
      const want = softmaxEdgeRef(x, cols, scale, log);
      rows.forEach(([what], i) => {
        for (let j = i * cols; j < (i + 1) * cols; j++) {
          const [got, ref] = [y[j]!, want[j]!];
          if (Number.isNaN(ref) || !Number.isFinite(ref)) expect(got, `${what} [${j - i * cols}]`).toBe(ref);
          else expect(Math.abs(got - ref), `${what} [${j - i * cols}]`).toBeLessThan(1e-5 * Math.max(1, Math.abs(ref)));
        }
      });
    },
  );

  /** Broken storage: each maker gives a tensor of shape [2, 4] (f32) or [4] (i32) whose data no longer covers it. */
  const broken: [string, (dtype: 'f32' | 'i32') => Tensor, string][] = [
    ['detached', (dtype) => {
      const t = dtype === 'f32' ? new Tensor('f32', [2, 4]) : i32([4], [0, 1, 2, 3]);
      structuredClone(t.data.buffer, { transfer: [t.data.buffer as ArrayBuffer] });
      return t;
    }, "Expected NAME's data to be usable but its ArrayBuffer was detached (transferred)"],
    ['shrunk', (dtype) => {
      const ab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(32, { maxByteLength: 64 });
      const t = dtype === 'f32' ? new Tensor('f32', [2, 4], new Float32Array(ab, 0, 8)) : new Tensor('i32', [4], new Int32Array(ab, 0, 4));
      ab.resize(8);
      return t;
    }, 'Expected SIZE elements of data for NAME of shape [SHAPE] but received 0: its ArrayBuffer was resized'],
    ['grown (a length-tracking view)', (dtype) => {
      const ab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(dtype === 'f32' ? 32 : 16, { maxByteLength: 64 });
      const t = dtype === 'f32' ? new Tensor('f32', [2, 4], new Float32Array(ab)) : new Tensor('i32', [4], new Int32Array(ab));
      ab.resize(64);
      return t;
    }, 'Expected SIZE elements of data for NAME of shape [SHAPE] but received 16: its ArrayBuffer was resized'],
    ['SharedArrayBuffer-backed', (dtype) => (dtype === 'f32' ? new Tensor('f32', [2, 4], new Float32Array(new SharedArrayBuffer(32))) : new Tensor('i32', [4], new Int32Array(new SharedArrayBuffer(16)))),
      "Expected NAME's data over an ArrayBuffer but received TYPE(LEN) over a SharedArrayBuffer (another thread could change it while a kernel reads it; copy it into an ArrayBuffer)"],
  ];

  it.each(backends.flatMap((b) => broken.map(([what, make, msg]) => [b, what, make, msg] as const)))('%s: a %s tensor is a TypeError naming the argument', (name, what, make, msg) => {
    const be = getBackend(name);
    const fill = (n: string, t: Tensor) =>
      msg.replaceAll('NAME', n).replace('SIZE', String(t.size)).replace('SHAPE', t.shape.join(', ')).replace('TYPE', t.dtype === 'f32' ? 'Float32Array' : 'Int32Array')
        .replace('LEN', String(t.size));
    const x = make('f32');
    expect(() => be.silu(x)).toThrow(new TypeError(fill('x', x)));
    const out = make('f32');
    expect(() => be.silu(randTensor([2, 4], r), out)).toThrow(new TypeError(fill('out', out)));
    const ids = make('i32');
    expect(() => be.embedding(randTensor([4, 3], r), ids)).toThrow(new TypeError(fill('ids', ids)));
    const slots = make('i32');
    expect(() => be.pagedKvWrite(randTensor([2, 2, 1, 4], r), randTensor([2, 2, 1, 4], r), randTensor([4, 1, 4], r), randTensor([4, 1, 4], r), slots)).toThrow(
      new TypeError(fill('slots', slots)),
    );
    void what;
  });

  it.each(backends)('%s: an option getter that detaches an input after it was checked is caught before the kernel', (name) => {
    const be = getBackend(name);
    const x = randTensor([2, 1, 8], r);
    const options = {
      get theta() {
        structuredClone(x.data.buffer, { transfer: [x.data.buffer as ArrayBuffer] });
        return 10000;
      },
    };
    expect(() => be.rope(x, i32([2], [0, 1]), options)).toThrow(new TypeError("Expected x's data to be usable but its ArrayBuffer was detached (transferred)"));
  });
});
