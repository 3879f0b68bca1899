// Misuse of every class (type, dtype, shape, length, out-of-range ids, block tables outside the
// pool, bad options) throws TypeError/RangeError naming the argument, on both backends, and
// nothing reaches native code unchecked.
import { describe, expect, it } from 'vitest';
import { getBackend, Tensor } from '../src/index.js';
import { nativeAvailable, randTensor, rng } from './helpers.js';

const backends = nativeAvailable ? (['js', 'cpu'] as const) : (['js'] as const);

describe.each(backends)('validation on %s', (name) => {
  const be = getBackend(name);
  const r = rng(3);
  const x = randTensor([2, 8], r), w = randTensor([4, 8], r);

  it('wrong kinds and dtypes are TypeErrors naming the argument', () => {
    expect(() => be.linear(x.data as never, w)).toThrow(new TypeError('Expected a Tensor for x but received Float32Array(16)'));
    expect(() => be.linear(x, new Tensor('i8', [4, 8]))).toThrow(new TypeError('Expected dtype f32 or f16 or bf16 or q8_0 or q4_0 for w but received i8'));
    expect(() => be.linear(new Tensor('f16', [2, 8]), w)).toThrow(/Expected dtype f32 for x but received f16/);
    expect(() => be.embedding(w, Tensor.from('f32', [1], [0]))).toThrow(new TypeError('Expected dtype i32 for ids but received f32'));
    expect(() => be.gelu(x, 'fast' as never)).toThrow(new TypeError(`Expected one of 'tanh', 'none' for approximate but received "fast"`));
    expect(() => be.rope(randTensor([2, 1, 4], r), Tensor.from('i32', [2], [0, 1]), { style: 'gptj' as never })).toThrow(TypeError);
    expect(() => be.flashAttention(randTensor([1, 1, 4], r), randTensor([1, 1, 4], r), randTensor([1, 1, 4], r), { causal: 1 as never })).toThrow(
      new TypeError('Expected a boolean for options.causal but received 1'),
    );
    expect(() => be.rmsNorm(x, randTensor([8], r), Number.NaN)).toThrow(new TypeError('Expected a finite number for eps but received NaN'));
  });

  it('wrong shapes are RangeErrors naming the argument', () => {
    expect(() => be.linear(randTensor([2, 7], r), w)).toThrow(new RangeError("Expected x's last dimension to equal w's K = 8 but received 7"));
    expect(() => be.linear(x, w, randTensor([5], r))).toThrow(new RangeError('Expected shape [4] for bias but received [5]'));
    expect(() => be.linear(x, randTensor([4, 8, 1], r))).toThrow(new RangeError('Expected a rank-2 tensor for w but received shape [4, 8, 1]'));
    expect(() => be.rmsNorm(x, randTensor([7], r))).toThrow(new RangeError('Expected shape [8] for weight but received [7]'));
    expect(() => be.swiglu(x, randTensor([2, 9], r))).toThrow(/Expected up to have the shape of gate \[2, 8\] but received \[2, 9\]/);
    expect(() => be.add(x, randTensor([3], r))).toThrow(RangeError);
    const q = randTensor([3, 6, 16], r);
    expect(() => be.flashAttention(q, randTensor([5, 4, 16], r), randTensor([5, 4, 16], r))).toThrow(
      new RangeError("Expected q's heads (6) to be a multiple of k's heads (4)"),
    );
    expect(() => be.flashAttention(q, randTensor([5, 3, 8], r), randTensor([5, 3, 8], r))).toThrow(/head dim to equal q's \(16\)/);
    expect(() => be.flashAttention(q, randTensor([5, 3, 16], r), randTensor([4, 3, 16], r))).toThrow(/Expected v to have the shape of k/);
    expect(() => be.flashAttention(q, randTensor([5, 3, 16], r), randTensor([5, 3, 16], r), { mask: randTensor([3, 4], r) })).toThrow(
      new RangeError('Expected shape [3, 5] for options.mask but received [3, 4]'),
    );
    expect(() => be.flashAttention(randTensor([1, 1, 600], r), randTensor([1, 1, 600], r), randTensor([1, 1, 600], r))).toThrow(
      new RangeError('Expected a head dim in [1, 512] but received 600'),
    );
    expect(() => be.rope(randTensor([2, 1, 8], r), Tensor.from('i32', [2], [0, 1]), { rotaryDim: 5 })).toThrow(
      new RangeError('Expected an even options.rotaryDim but received 5'),
    );
    expect(() => be.rope(randTensor([2, 1, 8], r), Tensor.from('i32', [3], [0, 1, 2]))).toThrow(/for positions but received \[3\]/);
  });

  it('tensor data of the wrong length or type cannot be built', () => {
    expect(() => new Tensor('f32', [2, 3], new Float32Array(5))).toThrow(new RangeError('Expected 6 elements for data of shape [2, 3] but received 5'));
    expect(() => new Tensor('f16', [2], new Float32Array(2) as never)).toThrow(new TypeError('Expected Uint16Array for f16 tensor data but received Float32Array(2)'));
    expect(() => new Tensor('f32', [2, -1])).toThrow(RangeError);
    expect(() => new Tensor('f64' as never, [2])).toThrow(TypeError);
  });

  it('out-of-range ids, targets, slots and k are RangeErrors', () => {
    expect(() => be.embedding(w, Tensor.from('i32', [3], [0, 4, 1]))).toThrow(new RangeError('Expected ids in [0, 4) but received 4 at index 1'));
    expect(() => be.embedding(w, Tensor.from('i32', [1], [-1]))).toThrow(/received -1 at index 0/);
    expect(() => be.crossEntropy(x, Tensor.from('i32', [2], [0, 8]))).toThrow(
      new RangeError('Expected targets in [0, 8) or -100 (ignoreIndex) but received 8 at index 1'),
    );
    expect(() => be.topK(x, 9)).toThrow(new RangeError('Expected k in [1, 8] but received 9'));
    expect(() => be.moeRoute(x, 0)).toThrow(new RangeError('Expected k in [1, 8] but received 0'));
    const kc = randTensor([2, 4, 1, 8], r), vc = randTensor([2, 4, 1, 8], r);
    expect(() => be.pagedKvWrite(kc, vc, randTensor([1, 1, 8], r), randTensor([1, 1, 8], r), Tensor.from('i32', [1], [8]))).toThrow(
      new RangeError('Expected slots in [0, 8) but received 8 at index 0'),
    );
  });

  it('block tables pointing outside the pool and inconsistent batches are RangeErrors', () => {
    const kc = randTensor([3, 4, 1, 8], r), vc = randTensor([3, 4, 1, 8], r);
    const q = randTensor([2, 2, 8], r);
    const batch = (tables: number[], lens: number[], starts: number[]) => ({
      blockTables: Tensor.from('i32', [2, 2], tables),
      contextLens: Tensor.from('i32', [2], lens),
      queryStart: Tensor.from('i32', [3], starts),
    });
    expect(() => be.pagedAttention(q, kc, vc, batch([0, 1, 2, 3], [5, 5], [0, 1, 2]))).toThrow(
      new RangeError('Expected batch.blockTables[1][1] in [0, 3) (the block pool) but received 3'),
    );
    expect(() => be.pagedAttention(q, kc, vc, batch([0, -1, 2, 1], [5, 2], [0, 1, 2]))).toThrow(/blockTables\[0\]\[1\].*received -1/);
    expect(() => be.pagedAttention(q, kc, vc, batch([0, 1, 2, 1], [9, 2], [0, 1, 2]))).toThrow(
      new RangeError('Expected batch.contextLens[0] in [1, 8] but received 9'),
    );
    expect(() => be.pagedAttention(q, kc, vc, batch([0, 1, 2, 1], [3, 2], [0, 1, 3]))).toThrow(/queryStart\[2\] to equal q's T = 2/);
    expect(() => be.pagedAttention(q, kc, vc, batch([0, 1, 2, 1], [3, 2], [0, 3, 2]))).toThrow(/queryStart to be non-decreasing but received 2 after 3 at index 2/);
    // Unused table entries (beyond a sequence's length) may hold anything.
    expect(() => be.pagedAttention(q, kc, vc, batch([0, 99, 2, -5], [3, 2], [0, 1, 2]))).not.toThrow();
  });

  it('a disposed tensor cannot be used; dispose twice is safe', () => {
    const t = randTensor([2, 8], r);
    t.dispose();
    t.dispose();
    expect(() => be.silu(t)).toThrow(/Tensor x has been disposed/);
    expect(() => t.data).toThrow(/has been disposed/);
  });

  it('MoE routing objects are checked before use', () => {
    const route = be.moeRoute(randTensor([3, 4], r), 2);
    const bad = { ...route, order: Tensor.from('i32', [6], [0, 1, 2, 3, 4, 4]) };
    expect(() => be.moeScatter(randTensor([6, 5], r), bad)).toThrow(/routing.order to be a permutation but 4 repeats/);
    expect(() => be.moeScatter(randTensor([5, 5], r), route)).toThrow(/T \* k = 6 rows but received 5/);
    expect(() => be.moeGather(randTensor([4, 5], r), route)).toThrow(/for routing.weights but received \[3, 2\]/);
  });
});

describe.runIf(nativeAvailable)('the native addon re-checks what guards memory', () => {
  it('rejects wrong lengths and typed-array kinds with the op name', async () => {
    const { loadNative } = await import('../src/backend/cpu/native.js');
    const n = loadNative()!;
    const x = new Float32Array(6), w = new Float32Array(6), y = new Float32Array(4);
    expect(() => n.linear(x, w, 0, null, y, 2, 2, 4)).toThrow("linear: 'x' has 6 elements, expected 8");
    expect(() => n.linear(x, new Uint16Array(6), 0, null, y, 2, 2, 3)).toThrow("linear: expected a Float32Array for 'w'");
    expect(() => n.linear(x, w, 8, null, y, 2, 2, 3)).toThrow(/linear: 'wtype' = 8 is outside \[0, 7\]/);
    expect(() => n.linear(x, w, 0, null, y, 2, 2, 2.5)).toThrow(/expected an integer for 'K'/);
    expect(() => n.embedding(w, 0, 3, 2, new Int32Array([3]), new Float32Array(2))).toThrow(/embedding: id 3 at index 0 is outside \[0, 3\)/);
    const kc = new Float32Array(2 * 4 * 8);
    expect(() =>
      n.pagedAttention(new Float32Array(8), kc, kc, new Int32Array([5]), new Int32Array([1]), new Int32Array([0, 1]), new Float32Array(8), 1, 1, 2, 4, 1, 1, 8, 1, null, 0, 0),
    ).toThrow(/pagedAttention: blockTables\[0\]\[0\] = 5 points outside the pool/);
    expect(() => n.pagedKvWrite(kc, kc.slice(), new Float32Array(8), new Float32Array(8), new Int32Array([-1]), 1, 8, 8)).toThrow(/slot -1/);
    expect(() => n.linear(x, w, 0, null, y, 2 ** 40, 2 ** 40, 2)).toThrow(/linear: .*(overflow|elements)/);
  });
});

describe.each(backends)('out tensors on %s', (name) => {
  const be = getBackend(name);
  const r = rng(21);

  it('write the result into out (same values as a fresh result), in place where allowed', () => {
    const x = randTensor([3, 16], r), w = randTensor([5, 16], r), g = randTensor([3, 16], r), u = randTensor([3, 16], r);
    const y = new Tensor('f32', [3, 5]);
    expect(be.linear(x, w, null, y)).toBe(y);
    expect(Array.from(y.data)).toEqual(Array.from(be.linear(x, w).data));
    const want = Array.from(be.add(g, u).data);
    expect(be.add(g, u, g)).toBe(g); // a += b
    expect(Array.from(g.data)).toEqual(want);
    const q = randTensor([4, 2, 8], r), pos = Tensor.from('i32', [4], [0, 1, 2, 3]);
    const rq = Array.from(be.rope(q, pos).data);
    be.rope(q, pos, { out: q });
    expect(Array.from(q.data)).toEqual(rq);
    const n = randTensor([3, 16], r);
    const nw = randTensor([16], r);
    const rn = Array.from(be.rmsNorm(n, nw).data);
    be.rmsNorm(n, nw, 1e-5, n);
    expect(Array.from(n.data)).toEqual(rn);
  });

  it('reject an out of the wrong shape or dtype, or one overlapping an input', () => {
    const x = randTensor([3, 16], r), w = randTensor([5, 16], r);
    expect(() => be.linear(x, w, null, new Tensor('f32', [3, 4]))).toThrow(new RangeError('Expected shape [3, 5] for out but received [3, 4]'));
    expect(() => be.linear(x, w, null, new Tensor('f16', [3, 5]) as never)).toThrow(/Expected dtype f32 for out but received f16/);
    const big = new Float32Array(64);
    const xin = new Tensor('f32', [2, 16], big.subarray(0, 32));
    const part = new Tensor('f32', [2, 5], big.subarray(20, 30));
    expect(() => be.linear(xin, w, null, part)).toThrow(/Expected out not to overlap an input of this op/);
    expect(() => be.softmax(x, 1, x)).toThrow(/overlap/); // softmax is not in-place
    const q = randTensor([2, 1, 8], r);
    expect(() => be.flashAttention(q, q, q, { out: q })).toThrow(/overlap/);
  });
});
