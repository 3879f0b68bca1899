/**
 * The resumable download of one blob: streamed to `<blob>.incomplete` (never held in memory),
 * continued with a Range request after an interruption, its bytes checked against the ETag
 * (sha256 for LFS files, git's blob sha1 otherwise) before it is renamed into place.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open, rename, statfs, truncate } from 'node:fs/promises';
import path from 'node:path';
import { HubError } from './errors.js';
import { Deadline, hubFetch, networkError, statusError, type FileMeta, type HubClient } from './http.js';

export interface BlobTarget {
  /** blobs/<etag> */
  blob: string;
  /** A lock file private to tessera (Python's huggingface_hub locks <etag>.lock beside it). */
  lock: string;
  /** How messages name the file: `owner/repo path`. */
  label: string;
  repo: string;
}

export interface DownloadOptions {
  /** Further attempts after a network failure, each resuming where the last stopped. */
  retries: number;
  /** Wait before the first retry, doubled each time (at most 10 s). */
  retryDelayMs: number;
  /** Bytes on disk so far (resumed bytes included) and the file's size. */
  onBytes?: (done: number, total: number, resumedFrom: number) => void;
}

/** What the bytes must hash to, from the ETag: sha256 (64 hex) or git's sha1 of "blob <size>\0" + bytes (40 hex). */
class ContentCheck {
  #h: Hash;
  constructor(readonly etag: string, readonly size: number, readonly algo: 'sha256' | 'sha1') {
    this.#h = createHash(algo);
    if (algo === 'sha1') this.#h.update(`blob ${size}\0`);
  }
  static for(etag: string, size: number): ContentCheck | null {
    return /^[0-9a-f]{64}$/.test(etag) ? new ContentCheck(etag, size, 'sha256') : /^[0-9a-f]{40}$/.test(etag) ? new ContentCheck(etag, size, 'sha1') : null;
  }
  update(b: Uint8Array): void {
    this.#h.update(b);
  }
  digest(): string {
    return this.#h.digest('hex');
  }
  fresh(): ContentCheck {
    return new ContentCheck(this.etag, this.size, this.algo);
  }
}

/** Downloads in this process, by blob path: a second pull of the same file waits for the first. */
const inflight = new Map<string, Promise<void>>();

export async function downloadBlob(c: HubClient, meta: FileMeta, t: BlobTarget, o: DownloadOptions): Promise<void> {
  const running = inflight.get(t.blob);
  if (running) return running;
  const p = withLock(t, () => download(c, meta, t, o)).finally(() => inflight.delete(t.blob));
  inflight.set(t.blob, p);
  return p;
}

function fileSize(f: string): number {
  try {
    return statSync(f).size;
  } catch {
    return -1;
  }
}

function diskError(err: unknown, t: BlobTarget, incomplete: string, done: number, total: number): HubError {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOSPC' || e.code === 'EDQUOT')
    return new HubError('disk', `disk full while writing ${t.label} to ${incomplete} (${done} of ${total} bytes); free space and pull again to resume`, null, { cause: err });
  return new HubError('disk', `cannot write ${incomplete}: ${e.message}`, null, { cause: err });
}

async function withLock<T>(t: BlobTarget, fn: () => Promise<T>): Promise<T> {
  mkdirSync(path.dirname(t.lock), { recursive: true });
  for (let tries = 0; ; tries++) {
    try {
      writeFileSync(t.lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 0) throw diskError(err, t, t.lock, 0, 0);
      const pid = Number(readFileSync(t.lock, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
        throw new HubError('busy', `another process (pid ${pid}) is downloading ${t.label}; wait for it to finish (or remove ${t.lock} if it is gone)`);
      rmSync(t.lock, { force: true }); // left by a process that died
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(t.lock, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Hashes the bytes already in a partial file (resuming needs the hash of what came before). */
async function hashFile(f: string, check: ContentCheck): Promise<void> {
  for await (const chunk of createReadStream(f, { highWaterMark: 1 << 20 })) check.update(chunk as Buffer);
}

/** The hash of the bytes in `incomplete` so far: `hashed` bytes have gone into `check`. */
interface HashState {
  check: ContentCheck | null;
  hashed: number;
}

async function download(c: HubClient, meta: FileMeta, t: BlobTarget, o: DownloadOptions): Promise<void> {
  if (fileSize(t.blob) === meta.size) return; // another pull finished it while this one waited
  const incomplete = `${t.blob}.incomplete`;
  mkdirSync(path.dirname(t.blob), { recursive: true });
  const base = ContentCheck.for(meta.etag, meta.size);
  const h: HashState = { check: base, hashed: base ? -1 : 0 };
  const resumedFrom = Math.max(0, fileSize(incomplete));
  for (let attempt = 0; ; attempt++) {
    let offset = fileSize(incomplete);
    if (offset > meta.size) {
      await truncate(incomplete, 0);
      offset = 0;
    }
    if (offset < 0) offset = 0;
    await checkSpace(t, incomplete, meta.size - offset);
    if (base && h.hashed !== offset) {
      h.check = base.fresh();
      if (offset > 0) await hashFile(incomplete, h.check);
      h.hashed = offset;
    }
    let written = offset;
    try {
      if (offset < meta.size) written = await fetchInto(c, meta, t, incomplete, offset, h, o, resumedFrom);
    } catch (err) {
      if (c.signal?.aborted) throw c.signal.reason;
      if (!(err instanceof HubError && err.kind === 'network')) throw err;
      const done = Math.max(0, fileSize(incomplete));
      if (attempt >= o.retries)
        throw new HubError('network', `download of ${t.label} stopped at ${done} of ${meta.size} bytes: ${err.message}; the partial file is kept (${incomplete}): pull again to resume`, err.status, { cause: err });
      await sleep(Math.min(10_000, o.retryDelayMs * 2 ** attempt), c.signal);
      continue;
    }
    if (written !== meta.size) continue;
    if (h.check) {
      const got = h.check.digest();
      if (got !== meta.etag) {
        rmSync(incomplete, { force: true });
        throw new HubError('protocol', `${t.label}: the downloaded bytes have ${h.check.algo} ${got}, not the ETag ${meta.etag} the hub gave; the download was removed`);
      }
    }
    await rename(incomplete, t.blob);
    return;
  }
}

async function checkSpace(t: BlobTarget, file: string, need: number): Promise<void> {
  let free: number;
  try {
    const s = await statfs(path.dirname(file));
    free = s.bavail * s.bsize;
  } catch {
    return; // statfs unsupported: the write reports ENOSPC instead
  }
  if (free < need)
    throw new HubError('disk', `not enough disk space for ${t.label}: ${fmtBytes(need)} needed, ${fmtBytes(free)} free in ${path.dirname(file)}`);
}

export function fmtBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

/**
 * One GET from `offset` (a Range request when > 0) appended to `incomplete`. Returns the bytes on
 * disk after it. A server that ignores the Range (200) restarts the file from zero.
 */
async function fetchInto(c: HubClient, meta: FileMeta, t: BlobTarget, incomplete: string, offset: number, h: HashState, o: DownloadOptions, resumedFrom: number): Promise<number> {
  const d = new Deadline(c.timeoutMs, c.signal);
  try {
    const { res, url } = await hubFetch(c, meta.url, { method: 'GET', headers: offset > 0 ? { range: `bytes=${offset}-` } : {} }, d);
    if (res.status === 416 && offset > 0) {
      // The server has fewer bytes than the partial file: it is not this file; start over.
      await res.body?.cancel().catch(() => {});
      await truncate(incomplete, 0);
      throw new HubError('network', `${new URL(url).origin} refused the range from byte ${offset}; restarting`);
    }
    if (res.status !== 200 && res.status !== 206) throw await statusError(res, c, { repo: t.repo, file: t.label });
    let at = offset;
    if (res.status === 200 && offset > 0) {
      await truncate(incomplete, 0); // the server ignored the Range: the body is the whole file
      at = 0;
      if (h.check) h.check = h.check.fresh();
      h.hashed = 0;
    }
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== offset || (m[3] !== '*' && Number(m[3]) !== meta.size)) {
        await res.body?.cancel().catch(() => {});
        await truncate(incomplete, 0);
        throw new HubError('network', `${new URL(url).origin} answered the range from byte ${offset} with Content-Range ${JSON.stringify(res.headers.get('content-range'))}; restarting`);
      }
    }
    const expect = meta.size - at;
    const cl = res.headers.get('content-length');
    if (cl !== null && Number(cl) !== expect) {
      await res.body?.cancel().catch(() => {});
      throw new HubError('protocol', `${new URL(url).origin} announced ${cl} bytes for ${t.label} from byte ${at}, but the hub gave its size as ${meta.size}`);
    }
    let fh;
    try {
      fh = await open(incomplete, 'a');
    } catch (err) {
      await res.body?.cancel().catch(() => {});
      throw diskError(err, t, incomplete, at, meta.size);
    }
    let lastReport = 0;
    o.onBytes?.(at, meta.size, resumedFrom);
    try {
      try {
        for await (const chunk of res.body ?? []) {
          d.touch();
          if (at + chunk.byteLength > meta.size) {
            d.controller.abort();
            throw new HubError('protocol', `${new URL(url).origin} sent more than the ${meta.size} bytes of ${t.label}`);
          }
          try {
            await fh.write(chunk);
          } catch (err) {
            d.controller.abort();
            throw diskError(err, t, incomplete, at, meta.size);
          }
          h.check?.update(chunk);
          at += chunk.byteLength;
          h.hashed = at;
          const now = Date.now();
          if (now - lastReport >= 100) {
            lastReport = now;
            o.onBytes?.(at, meta.size, resumedFrom);
          }
        }
      } catch (err) {
        if (err instanceof HubError) throw err;
        throw networkError(err, url, c, d, true);
      }
      if (at < meta.size) throw new HubError('network', `the connection closed after ${at} of ${meta.size} bytes`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    o.onBytes?.(at, meta.size, resumedFrom);
    return at;
  } finally {
    d.clear();
  }
}
