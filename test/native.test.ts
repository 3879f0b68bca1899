// Loading: fallback to js when the addon is missing or broken, TESSERA_ISA / TESSERA_THREADS,
// run-time ISA and thread changes, and the CLI's report of the chosen path.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend, runtimeInfo, setIsa, setThreads, Tensor } from '../src/index.js';
import { linearRef } from './reference.js';
import { nativeAvailable, randTensor, relL2, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

function probe(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'test/fixtures/probe.ts')], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return { out: JSON.parse(r.stdout) as { backend: string; info: ReturnType<typeof runtimeInfo>; y: number[] }, stderr: r.stderr };
}

describe('loading the native addon', () => {
  it('falls back to the js backend, saying why once, when the addon file is missing', () => {
    const { out, stderr } = probe({ TESSERA_ADDON: '/nonexistent/tessera.node' });
    expect(out.backend).toBe('js');
    expect(out.y).toEqual([1, 6]);
    expect(out.info.native).toBe(false);
    expect(out.info.nativeError).toContain('/nonexistent/tessera.node (not found)');
    expect(stderr.match(/using the pure-TypeScript 'js' backend: native addon unavailable/g)?.length).toBe(1);
  });

  it('falls back when the addon file is not a loadable library', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-'));
    const bogus = path.join(dir, 'tessera.node');
    writeFileSync(bogus, 'not a shared object');
    const { out } = probe({ TESSERA_ADDON: bogus });
    expect(out.backend).toBe('js');
    expect(out.info.nativeError).toContain(bogus);
    expect(out.y).toEqual([1, 6]);
  });

  it.runIf(nativeAvailable)('honours TESSERA_ISA and TESSERA_THREADS, and warns on an unknown ISA', () => {
    for (const isa of runtimeInfo().isas) {
      const { out } = probe({ TESSERA_ISA: isa, TESSERA_THREADS: '1' });
      expect(out.backend).toBe('cpu');
      expect(out.info.isa).toBe(isa);
      expect(out.info.threads).toBe(1);
      expect(out.y).toEqual([1, 6]);
    }
    const { out, stderr } = probe({ TESSERA_ISA: 'neon' });
    expect(out.info.isa).toBe(runtimeInfo().isa);
    expect(stderr).toContain('TESSERA_ISA=neon is not one of scalar|avx2|avx512');
  });
});

describe.runIf(nativeAvailable)('run-time controls', () => {
  it('setIsa and setThreads change the path without changing results', () => {
    const r = rng(11);
    const x = randTensor([9, 70], r), w = randTensor([33, 70], r);
    const want = linearRef(x.data, w.data, null, 9, 33, 70);
    const cpu = getBackend('cpu');
    const start = runtimeInfo();
    try {
      for (const threads of [1, 3, start.threads]) {
        setThreads(threads);
        expect(runtimeInfo().threads).toBe(threads);
        for (const isa of start.isas) {
          setIsa(isa);
          expect(runtimeInfo().isa).toBe(isa);
          expect(relL2(cpu.linear(x, w).data, want)).toBeLessThan(1e-5);
        }
      }
    } finally {
      setIsa(start.isa!);
      setThreads(start.threads);
    }
    expect(() => setIsa('sse' as never)).toThrow(TypeError);
    expect(() => setThreads(0)).toThrow(RangeError);
  });

  it('getBackend rejects unknown names', () => {
    expect(() => getBackend('metal' as never)).toThrow(/Expected a backend name/);
    expect(getBackend('cpu').linear(Tensor.from('f32', [1, 1], [2]), Tensor.from('f32', [1, 1], [3])).data[0]).toBe(6);
  });
});

describe('CLI', () => {
  it('tessera info --json and --version report the kernel path', () => {
    const bin = path.join(root, 'bin/tessera.js');
    const info = spawnSync(process.execPath, [bin, 'info', '--json'], { encoding: 'utf8' });
    expect(info.status).toBe(0);
    const j = JSON.parse(info.stdout);
    expect(j.native).toBe(nativeAvailable);
    if (nativeAvailable) expect(j.isas).toContain(j.isa);
    expect(typeof j.cuda.available).toBe('boolean');
    if (!j.cuda.available) expect(j.cuda.reason.length).toBeGreaterThan(0);
    const v = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    expect(v.stdout).toMatch(nativeAvailable ? /^tessera \d+\.\d+\.\d+ \(cpu, (scalar|avx2|avx512|avx512vnni), \d+ threads\)/ : /js backend/);
    const bad = spawnSync(process.execPath, [bin, 'frobnicate'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("unknown command 'frobnicate'");
    const help = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    expect(help.stdout).toContain('TESSERA_ISA=scalar|avx2|avx512');
  });
});
