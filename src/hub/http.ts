/**
 * HTTP to a Hugging Face hub (or a mirror at HF_ENDPOINT): requests with their own redirect handling
 * (bounded, loop-checked, the token sent only to the hub's own origin), hub status codes turned into
 * errors that say what to do, file metadata from HEAD /resolve/ and the repo's file list.
 */
import { parseJson } from '../formats/json.js';
import { HubError } from './errors.js';
import { checkRelativePath, COMMIT_HASH } from './uri.js';

export interface HubClient {
  /** Base URL of the hub (HF_ENDPOINT), no trailing slash. */
  endpoint: string;
  /** Bearer token (HF_TOKEN), or null. */
  token: string | null;
  /** Longest wait for a response or for the next bytes of a body, in ms. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Where a file's bytes come from and what they must be. */
export interface FileMeta {
  /** The commit the revision resolved to (X-Repo-Commit). */
  commit: string;
  /** X-Linked-Etag (LFS: the sha256 of the contents) or ETag (git blob sha1): the blob's name in the cache. */
  etag: string;
  /** Bytes (X-Linked-Size or Content-Length). */
  size: number;
  /** Where to GET it (the CDN location of a redirect, or the resolve URL itself). */
  url: string;
}

const MAX_REDIRECTS = 10;
/** Largest JSON answer read from the API (a model's file list is a few kB; refuse endless bodies). */
const MAX_JSON_BYTES = 16 * 2 ** 20;

export function resolveUrl(c: HubClient, repo: string, revision: string, file: string): string {
  return `${c.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

function origin(u: string): string {
  return new URL(u).origin;
}

/** A timer that aborts a request when nothing has arrived for timeoutMs; `touch()` when bytes arrive. */
export class Deadline {
  readonly controller = new AbortController();
  readonly signal: AbortSignal;
  #timer: NodeJS.Timeout | undefined;
  constructor(private readonly ms: number, outer?: AbortSignal) {
    this.signal = outer ? AbortSignal.any([outer, this.controller.signal]) : this.controller.signal;
    this.touch();
  }
  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.controller.abort(), this.ms);
  }
  get timedOut(): boolean {
    return this.controller.signal.aborted;
  }
  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** A fetch failure as a HubError (the caller's abort passes through as it is); `body`: it happened while reading the body. */
export function networkError(err: unknown, url: string, c: HubClient, d?: Deadline, body = false): unknown {
  if (c.signal?.aborted) return c.signal.reason;
  if (err instanceof HubError) return err;
  if (d?.timedOut) return new HubError('network', `no data from ${origin(url)} for ${c.timeoutMs / 1000} s`, null, { cause: err });
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (err as Error).message;
  return new HubError('network', body ? `the connection to ${origin(url)} was lost (${why})` : `cannot reach ${origin(url)}: ${why}`, null, { cause: err });
}

/** The hub's error answer as a message that says what to do. */
export async function statusError(res: Response, c: HubClient, what: { repo: string; revision?: string; file?: string }): Promise<HubError> {
  const code = res.headers.get('x-error-code');
  const serverMsg = res.headers.get('x-error-message');
  await res.body?.cancel().catch(() => {});
  const s = res.status;
  const repo = `${what.repo}${what.revision && what.revision !== 'main' ? ` (revision ${what.revision})` : ''}`;
  const detail = serverMsg ? ` (the hub says: ${serverMsg.slice(0, 300)})` : '';
  if (code === 'GatedRepo' || (s === 403 && /gated/i.test(serverMsg ?? '')))
    return new HubError('auth', `${what.repo} is a gated model: accept its terms at ${c.endpoint}/${what.repo} while logged in, then set HF_TOKEN to a token of that account${c.token ? ' (the HF_TOKEN given has no access yet)' : ''}${detail}`, s);
  if (s === 401 || s === 403) {
    return new HubError('auth', c.token
      ? `${c.endpoint} refused the token in HF_TOKEN for ${repo} (${s}): the token is invalid or cannot read this repository${detail}`
      : `${repo} was not found or is private (${s}): if it exists, set HF_TOKEN to a token that can read it${detail}`, s);
  }
  if (s === 404) {
    if (code === 'RepoNotFound') return new HubError('not-found', `repository ${what.repo} not found at ${c.endpoint}${detail}`, s);
    if (code === 'RevisionNotFound') return new HubError('not-found', `revision ${JSON.stringify(what.revision)} not found in ${what.repo}${detail}`, s);
    return new HubError('not-found', what.file !== undefined
      ? `file ${JSON.stringify(what.file)} not found in ${repo}${detail}`
      : `${repo} not found at ${c.endpoint}${detail}`, s);
  }
  if (s === 429) return new HubError('network', `${c.endpoint} is rate-limiting requests (429); wait and try again${c.token ? '' : ', or set HF_TOKEN for higher limits'}`, s);
  return new HubError(s >= 500 ? 'network' : 'protocol', `${c.endpoint} answered ${s} ${res.statusText} for ${repo}${what.file !== undefined ? ` ${what.file}` : ''}${detail}`, s);
}

/**
 * fetch with redirects followed here: at most 10, no loops, http(s) only, the token sent only to the
 * hub's origin. `stopAtMetadata` returns unfollowed the first redirect that carries X-Repo-Commit or
 * leaves the origin: a HEAD reads the file's metadata from the hub's redirect to its CDN, as
 * huggingface_hub does (the CDN's answer would not have it), and follows a renamed repo's redirect.
 */
export async function hubFetch(c: HubClient, url: string, init: { method: 'GET' | 'HEAD'; headers?: Record<string, string>; stopAtMetadata?: boolean }, d: Deadline): Promise<{ res: Response; url: string }> {
  const seen = new Set<string>();
  const hub = origin(c.endpoint);
  for (let hop = 0; ; hop++) {
    seen.add(url);
    const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'tessera', ...init.headers };
    if (c.token && origin(url) === hub) headers.authorization = `Bearer ${c.token}`;
    let res: Response;
    try {
      res = await fetch(url, { method: init.method, headers, redirect: 'manual', signal: d.signal });
    } catch (err) {
      throw networkError(err, url, c, d);
    }
    d.touch();
    if (res.status < 300 || res.status >= 400 || res.status === 304) return { res, url };
    const loc = res.headers.get('location');
    if (!loc) return { res, url };
    let next: URL;
    try {
      next = new URL(loc, url);
    } catch {
      await res.body?.cancel().catch(() => {});
      throw new HubError('protocol', `${origin(url)} redirected to an invalid URL ${JSON.stringify(loc.slice(0, 200))}`);
    }
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      await res.body?.cancel().catch(() => {});
      throw new HubError('protocol', `${origin(url)} redirected to a ${next.protocol} URL; only http and https are followed`);
    }
    if (init.stopAtMetadata && (next.origin !== origin(url) || res.headers.has('x-repo-commit'))) return { res, url };
    await res.body?.cancel().catch(() => {});
    if (seen.has(next.href)) throw new HubError('protocol', `redirect loop: ${next.href} redirects back to itself`);
    if (hop + 1 >= MAX_REDIRECTS) throw new HubError('protocol', `more than ${MAX_REDIRECTS} redirects starting at ${[...seen][0]}`);
    url = next.href;
  }
}

/** ETag header value without W/ and quotes. */
function etagOf(v: string | null): string | null {
  if (v === null) return null;
  return v.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** Safe as a file name in blobs/: the hub's hashes (hex) and what mirrors send (word characters, '-', '.'). */
const ETAG = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** HEAD /{repo}/resolve/{revision}/{file}: the commit, blob name, size and download URL of a file. */
export async function fileMeta(c: HubClient, repo: string, revision: string, file: string): Promise<FileMeta> {
  const url = resolveUrl(c, repo, revision, file);
  const d = new Deadline(c.timeoutMs, c.signal);
  try {
    const { res, url: at } = await hubFetch(c, url, { method: 'HEAD', stopAtMetadata: true }, d);
    await res.body?.cancel().catch(() => {});
    if (res.status >= 400) throw await statusError(res, c, { repo, revision, file });
    const commit = res.headers.get('x-repo-commit');
    if (commit === null || !COMMIT_HASH.test(commit))
      throw new HubError('protocol', `${origin(at)} sent ${commit === null ? 'no X-Repo-Commit header' : `X-Repo-Commit ${JSON.stringify(commit.slice(0, 80))}, not a commit hash,`} for ${repo} ${file} (is HF_ENDPOINT a Hugging Face hub?)`);
    const etag = etagOf(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
    if (etag === null || !ETAG.test(etag))
      throw new HubError('protocol', `${origin(at)} sent ${etag === null ? 'no ETag' : `ETag ${JSON.stringify(etag.slice(0, 80))}, not a hash,`} for ${repo} ${file}`);
    const sizeText = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    const size = sizeText !== null && /^\d{1,15}$/.test(sizeText) ? Number(sizeText) : NaN;
    if (!Number.isSafeInteger(size)) throw new HubError('protocol', `${origin(at)} sent no file size (X-Linked-Size or Content-Length) for ${repo} ${file}`);
    const loc = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
    return { commit, etag, size, url: loc !== null ? new URL(loc, at).href : at };
  } finally {
    d.clear();
  }
}

/** A JSON answer of the hub's API, its size bounded. */
async function getJson(c: HubClient, url: string, what: { repo: string; revision?: string }): Promise<unknown> {
  const d = new Deadline(c.timeoutMs, c.signal);
  try {
    const { res } = await hubFetch(c, url, { method: 'GET', headers: { accept: 'application/json' } }, d);
    if (res.status !== 200) throw await statusError(res, c, what);
    const chunks: Uint8Array[] = [];
    let n = 0;
    try {
      for await (const chunk of res.body ?? []) {
        d.touch();
        n += chunk.byteLength;
        if (n > MAX_JSON_BYTES) {
          d.controller.abort();
          throw new HubError('protocol', `${url} sent more than ${MAX_JSON_BYTES / 2 ** 20} MiB of JSON`);
        }
        chunks.push(chunk);
      }
    } catch (err) {
      throw networkError(err, url, c, d, true);
    }
    try {
      return parseJson(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      throw new HubError('protocol', `${url} did not answer JSON (${(err as Error).message})`);
    }
  } finally {
    d.clear();
  }
}

export interface RepoInfo {
  /** The commit the revision points to. */
  commit: string;
  /** Every file in the repo at that commit ('/'-separated paths). */
  files: string[];
}

/** GET /api/models/{repo}/revision/{revision}: the commit and the file list (siblings), names checked. */
export async function repoInfo(c: HubClient, repo: string, revision: string): Promise<RepoInfo> {
  const url = `${c.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
  const j = await getJson(c, url, { repo, revision }) as { sha?: unknown; siblings?: unknown };
  if (j === null || typeof j !== 'object' || typeof j.sha !== 'string' || !COMMIT_HASH.test(j.sha) || !Array.isArray(j.siblings))
    throw new HubError('protocol', `${url} is not a model's info (expected {sha, siblings: [{rfilename}]})`);
  const files = j.siblings.map((s: unknown) => {
    const f = (s as { rfilename?: unknown } | null)?.rfilename;
    if (typeof f !== 'string') throw new HubError('protocol', `${url} lists a file without a name`);
    try {
      return checkRelativePath(f, 'file name');
    } catch (err) {
      throw new HubError('protocol', `${repo}'s file list has an unsafe ${(err as Error).message}`);
    }
  });
  return { commit: j.sha, files };
}
