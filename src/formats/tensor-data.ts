/**
 * Tensor bytes out of a model file, shared by the GGUF and safetensors readers: mapped in place
 * (the native addon's mapFileRange: copy-on-write, unmapped when the last view is collected, as
 * llama.cpp mmaps its model files) where the addon is built, else read into a fresh ArrayBuffer.
 * Either way each call returns its own ArrayBuffer holding exactly the tensor's bytes.
 *
 * TESSERA_NO_MMAP=1 forces reading (a file on a network file system, or one that may be
 * truncated while in use: a mapped page past a file's new end faults with SIGBUS).
 */
import { closeSync, fchmodSync, fstatSync, fsyncSync, openSync, readSync, realpathSync, renameSync, statSync, unlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { loadNative } from '../backend/cpu/native.js';
import { ModelFileError } from './errors.js';

/** What identifies the bytes a header was parsed from: a later read of another file is an error. */
export interface FileIdentity {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

export function fileIdentity(st: Stats): FileIdentity {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

/** Whether tensor data is mapped rather than read (the addon is built and TESSERA_NO_MMAP is not 1). */
export function mappingEnabled(): boolean {
  return process.env.TESSERA_NO_MMAP !== '1' && loadNative() !== null;
}

/**
 * Bytes [offset, offset + length) of `file`, for `what` (e.g. "tensor 'blk.0.attn_q.weight'").
 * `align` is the element alignment the caller's typed-array view needs: a range whose offset is
 * not a multiple of it is read (copied) instead of mapped, so native code never sees a
 * misaligned float. `id`, when given, must still describe the file.
 */
export function fileBytes(file: string, id: FileIdentity | undefined, offset: number, length: number, align: number, what: string): Uint8Array {
  const name = path.basename(file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new ModelFileError(name, `cannot open to read ${what}: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (id && (st.dev !== id.dev || st.ino !== id.ino || st.size !== id.size || st.mtimeMs !== id.mtimeMs))
      throw new ModelFileError(name, `the file changed since its header was read (reading ${what}); read the header again`);
    if (offset + length > st.size)
      throw new ModelFileError(name, `${what} (${length} bytes at offset ${offset}) extends past the end of the file (${st.size} bytes)`);
    if (length === 0) return new Uint8Array(0);
    const native = mappingEnabled() ? loadNative() : null;
    if (native && offset % align === 0) {
      try {
        return new Uint8Array(native.mapFileRange(fd, offset, length));
      } catch {
        // Mapping is impossible here (a file system or runtime without it): read instead.
      }
    }
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, Math.min(length - done, 1 << 30), offset + done);
      if (n <= 0) throw new ModelFileError(name, `short read of ${what} at offset ${offset + done}`);
      done += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** Whether `bytes` is a view of a mapped file range (not a copy). */
export function isMappedBytes(bytes: ArrayBufferView): boolean {
  const native = loadNative();
  return native !== null && bytes.buffer instanceof ArrayBuffer && native.isMapped(bytes.buffer);
}

/**
 * Drops the resident pages of mapped bytes that have been consumed (repacked or dequantised into
 * other memory), so the process does not hold both copies until the view is collected. The bytes
 * stay readable (the file's contents fault back in). No-op for bytes that were read.
 */
export function releaseBytes(bytes: Uint8Array): void {
  if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) return;
  const native = loadNative();
  if (native && bytes.buffer instanceof ArrayBuffer) native.discardMapped(bytes.buffer);
}

/** Half-open byte ranges must not overlap: returns the first overlapping pair (sorted by start). */
export function firstOverlap<T extends { offset: number; byteLength: number }>(ranges: readonly T[]): [T, T] | null {
  const sorted = ranges.filter((r) => r.byteLength > 0).sort((a, b) => a.offset - b.offset);
  let last: T | undefined;
  for (const r of sorted) {
    if (last && r.offset < last.offset + last.byteLength) return [last, r];
    if (!last || r.offset + r.byteLength > last.offset + last.byteLength) last = r;
  }
  return null;
}

/**
 * Writes `file` through a temporary file renamed over it, so a file that is mapped (by this or
 * another process) keeps its old bytes instead of being truncated under the mapping, and a failed
 * write leaves no partial file behind.
 */
export function writeFileReplacing(file: string, write: (fd: number) => void): void {
  // A link is followed (the file it names is replaced, the link stays) and the old file's mode kept.
  let target = file, mode: number | undefined;
  try {
    target = realpathSync(file);
    mode = statSync(target).mode & 0o7777;
  } catch {
    // a new file
  }
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    try {
      write(fd);
      if (mode !== undefined) fchmodSync(fd, mode);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, target);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or never created
    }
    throw err;
  }
}
