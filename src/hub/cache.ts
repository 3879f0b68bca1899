/**
 * The Hugging Face cache layout, shared with Python's huggingface_hub:
 *
 *   <cache>/models--OWNER--REPO/blobs/<etag>                  file contents, named by ETag (sha256 for LFS files, git sha1 otherwise)
 *   <cache>/models--OWNER--REPO/blobs/<etag>.incomplete       a download in progress (resumed with a Range request)
 *   <cache>/models--OWNER--REPO/snapshots/<commit>/<path>     relative symlink to ../../blobs/<etag>
 *   <cache>/models--OWNER--REPO/refs/<branch or tag>          the commit hash it pointed to at the last pull
 *
 * <cache> is HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
 */
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { HubError } from './errors.js';
import { COMMIT_HASH, checkRelativePath } from './uri.js';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const hub = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (hub) return hub;
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** `path` joined under `dir`, refused if it would leave it (the names were checked already; this is the last guard). */
export function inside(dir: string, rel: string, what: string): string {
  checkRelativePath(rel, what);
  const full = path.resolve(dir, ...rel.split('/'));
  const back = path.relative(path.resolve(dir), full);
  if (back === '' || back.startsWith('..') || path.isAbsolute(back)) throw new HubError('protocol', `${what} ${JSON.stringify(rel)} leaves ${dir}`);
  return full;
}

export class RepoCache {
  readonly dir: string;
  constructor(cacheDir: string, repo: string) {
    this.dir = path.join(cacheDir, `models--${repo.replace('/', '--')}`);
  }

  blob(etag: string): string {
    return inside(path.join(this.dir, 'blobs'), etag, 'ETag');
  }

  snapshotDir(commit: string): string {
    if (!COMMIT_HASH.test(commit)) throw new HubError('protocol', `commit ${JSON.stringify(commit)} is not a 40-digit hash`);
    return path.join(this.dir, 'snapshots', commit);
  }

  pointer(commit: string, file: string): string {
    return inside(this.snapshotDir(commit), file, 'file');
  }

  /** The commit a revision pointed to at the last pull (a commit hash is its own), or null if never pulled. */
  commitOf(revision: string): string | null {
    if (COMMIT_HASH.test(revision)) return revision;
    let s: string;
    try {
      s = readFileSync(inside(path.join(this.dir, 'refs'), revision, 'revision'), 'utf8').trim();
    } catch {
      return null;
    }
    return COMMIT_HASH.test(s) ? s : null;
  }

  setRef(revision: string, commit: string): void {
    if (revision === commit) return;
    const ref = inside(path.join(this.dir, 'refs'), revision, 'revision');
    mkdirSync(path.dirname(ref), { recursive: true });
    const tmp = `${ref}.${process.pid}.tmp`;
    writeFileSync(tmp, commit);
    renameSync(tmp, ref);
  }

  /** snapshots/<commit>/<file> -> ../../blobs/<etag> (a copy where the file system refuses links). */
  link(commit: string, file: string, etag: string): string {
    const ptr = this.pointer(commit, file);
    const blob = this.blob(etag);
    mkdirSync(path.dirname(ptr), { recursive: true });
    if (lstatExists(ptr)) rmSync(ptr, { force: true });
    try {
      symlinkSync(path.relative(path.dirname(ptr), blob), ptr);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM' && (err as NodeJS.ErrnoException).code !== 'ENOTSUP') throw err;
      copyFileSync(blob, ptr);
    }
    return ptr;
  }

  /** The cached file of a snapshot, if the link and its blob are both there. */
  cached(commit: string, file: string): string | null {
    const p = this.pointer(commit, file);
    return existsSync(p) ? p : null; // existsSync follows the link: a dangling one is not cached
  }
}

function lstatExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
