/**
 * pullModel: an `hf:` URI to a local path in the Hugging Face cache, downloading what is missing.
 * A GGUF URI gives the file's path; a model directory gives the snapshot directory (config.json,
 * tokenizer files and the safetensors weights tessera reads). Settings come from the options, else
 * from huggingface_hub's environment variables: HF_ENDPOINT, HF_TOKEN (or the token file that
 * `huggingface-cli login` writes), HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { parseJson } from '../formats/json.js';
import { defaultCacheDir, inside, RepoCache } from './cache.js';
import { downloadBlob } from './download.js';
import { HubError } from './errors.js';
import { fileMeta, repoInfo, type HubClient } from './http.js';
import { checkRelativePath, COMMIT_HASH, formatHfUri, parseHfUri, type HfUri } from './uri.js';

export interface PullProgress {
  /** The file being downloaded (path in the repo). */
  file: string;
  /** Its bytes on disk so far, resumed bytes included. */
  bytes: number;
  /** Its size. */
  total: number;
  /** Bytes that were already on disk from an interrupted pull when this one started. */
  resumedFrom: number;
  /** Which download of this pull it is (0-based) and how many the pull needs. */
  fileIndex: number;
  fileCount: number;
}

export interface PullOptions {
  /** Branch, tag or commit; overrides the URI's `#rev` / `@rev`. Default main. */
  revision?: string;
  /** Cache root. Default HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Hub base URL. Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Access token. Default HF_TOKEN, else the token file of `huggingface-cli login`. */
  token?: string | null;
  /** Use only the cache. Default: HF_HUB_OFFLINE is 1/true/yes/on. */
  offline?: boolean;
  /** Called as bytes arrive (about every 100 ms per file). */
  onProgress?: (p: PullProgress) => void;
  /** Called with things worth telling the user (e.g. the hub was unreachable and the cached copy is used). */
  onWarning?: (message: string) => void;
  /** Aborting keeps the partial file: the next pull resumes it. */
  signal?: AbortSignal;
  /** Attempts after a network failure within this pull, each resuming with a Range request. Default 5. */
  retries?: number;
  /** Wait before the first retry in ms, doubled each time up to 10 s. Default 1000. */
  retryDelayMs?: number;
  /** Longest wait for an answer or for the next bytes, in ms. Default 60000. */
  timeoutMs?: number;
}

export interface PullResult {
  /** The local path to load: a file in snapshots/<commit>/, or the snapshot directory of a model directory. */
  path: string;
  /** The URI in canonical form. */
  uri: string;
  repo: string;
  revision: string;
  commit: string;
  /** The repo files the path is made of. */
  files: string[];
  /** Bytes downloaded by this pull (0 when everything was cached). */
  downloadedBytes: number;
}

/** Files a model directory needs besides its weights; config.json and tokenizer.json are required. */
const DIR_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'quantize_config.json'];
const REQUIRED = ['config.json', 'tokenizer.json'];

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());
}

function envToken(env: NodeJS.ProcessEnv): string | null {
  const t = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (t) return t.trim();
  const file = env.HF_TOKEN_PATH || path.join(env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'huggingface'), 'token');
  try {
    return readFileSync(file, 'utf8').trim() || null;
  } catch {
    return null;
  }
}

function endpointOf(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new HubError('usage', `HF_ENDPOINT ${JSON.stringify(v)} is not a URL (e.g. https://huggingface.co)`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new HubError('usage', `HF_ENDPOINT ${JSON.stringify(v)} is not an http(s) URL`);
  return u.href.replace(/\/+$/, '');
}

const isGguf = (f: string) => /\.gguf$/i.test(f) && !/^mmproj/i.test(path.posix.basename(f));
const SPLIT = /-\d{5}-of-\d{5}\.gguf$/i;

/** The GGUF file of `files` named by a quantisation (a word of its name: model-Q4_0.gguf, model.q8_0.gguf). */
function pickGguf(files: string[], u: HfUri, quant: string): string {
  const ggufs = files.filter(isGguf);
  const q = quant.toLowerCase();
  const hits = ggufs.filter((f) => path.posix.basename(f).slice(0, -5).toLowerCase().split(/[-.]/).includes(q));
  const list = ggufs.length ? ggufs.slice(0, 20).join(', ') + (ggufs.length > 20 ? `, … ${ggufs.length} files` : '') : 'none';
  if (hits.length === 0) throw new HubError('not-found', `no GGUF file of ${u.repo} is named for ${quant} (its GGUF files: ${list})`);
  if (hits.every((f) => SPLIT.test(f))) throw new HubError('usage', `${u.repo}'s ${quant} model is split into ${hits.length} files (${hits[0]}, …); tessera reads single-file GGUF models`);
  const single = hits.filter((f) => !SPLIT.test(f));
  if (single.length > 1) throw new HubError('usage', `${single.length} GGUF files of ${u.repo} match ${quant} (${single.join(', ')}); name one: hf:${u.repo}/FILE`);
  return single[0]!;
}

type Plan = { kind: 'file'; file: string } | { kind: 'dir' };

/** What a URI without a file name means for this repo: a model directory, or its only GGUF file. */
function planFor(files: string[], u: HfUri): Plan {
  if (u.path !== null) return { kind: 'file', file: u.path };
  if (u.quant !== null) return { kind: 'file', file: pickGguf(files, u, u.quant) };
  const set = new Set(files);
  if (set.has('config.json') && (set.has('model.safetensors') || set.has('model.safetensors.index.json'))) return { kind: 'dir' };
  const ggufs = files.filter(isGguf);
  if (ggufs.length === 1) return { kind: 'file', file: ggufs[0]! };
  if (ggufs.length > 1)
    throw new HubError('usage', `${u.repo} has ${ggufs.length} GGUF files; choose one with hf:${u.repo}:QUANT (e.g. :Q8_0) or hf:${u.repo}/FILE (${ggufs.slice(0, 12).join(', ')}${ggufs.length > 12 ? ', …' : ''})`);
  if (set.has('config.json') && files.some((f) => /\.(bin|pt|pth)$/.test(f)))
    throw new HubError('usage', `${u.repo} has PyTorch .bin weights but no model.safetensors; tessera reads safetensors (or GGUF)`);
  throw new HubError('usage', `${u.repo} has no GGUF file and no config.json with safetensors weights; tessera cannot load it`);
}

/** The shard files a safetensors index names (plain file names in the directory). */
function shardsOf(indexFile: string, repo: string): string[] {
  let j: unknown;
  try {
    j = parseJson(readFileSync(indexFile, 'utf8'));
  } catch (err) {
    throw new HubError('protocol', `${repo} model.safetensors.index.json is not JSON (${(err as Error).message})`);
  }
  const wm = (j as { weight_map?: unknown } | null)?.weight_map;
  if (wm === null || typeof wm !== 'object' || Array.isArray(wm)) throw new HubError('protocol', `${repo} model.safetensors.index.json has no weight_map object`);
  const shards = new Set<string>();
  for (const v of Object.values(wm)) {
    if (typeof v !== 'string' || v.includes('/')) throw new HubError('protocol', `${repo} model.safetensors.index.json names a shard that is not a file name in the repo (${JSON.stringify(v)})`);
    shards.add(checkRelativePath(v, 'shard'));
  }
  return [...shards];
}

/** The files of a model directory pull that the snapshot has (or null if one is missing). */
function dirFilesIn(snapshot: string, files: string[] | null): string[] | null {
  const have = (f: string) => existsSync(path.join(snapshot, f));
  if (!REQUIRED.every(have)) return null;
  const out = DIR_FILES.filter((f) => (files ? files.includes(f) : have(f)));
  if (have('model.safetensors')) return [...out, 'model.safetensors'];
  if (!have('model.safetensors.index.json')) return null;
  const shards = shardsOf(path.join(snapshot, 'model.safetensors.index.json'), snapshot);
  return shards.every(have) ? [...out, 'model.safetensors.index.json', ...shards] : null;
}

function walkGguf(dir: string, rel = ''): string[] {
  let entries;
  try {
    entries = readdirSync(path.join(dir, rel), { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? walkGguf(dir, r) : isGguf(r) && existsSync(path.join(dir, r)) ? [r] : [];
  });
}

/** The cached answer for a URI at a revision, without the network; null if not cached. */
function fromCache(cache: RepoCache, u: HfUri, revision: string): PullResult | null {
  const commit = cache.commitOf(revision);
  if (commit === null) return null;
  const snapshot = cache.snapshotDir(commit);
  const result = (p: string, files: string[]): PullResult => ({ path: p, uri: formatHfUri({ ...u, revision }), repo: u.repo, revision, commit, files, downloadedBytes: 0 });
  if (u.path !== null) {
    const p = cache.cached(commit, u.path);
    return p ? result(p, [u.path]) : null;
  }
  if (u.quant !== null) {
    let f: string;
    try {
      f = pickGguf(walkGguf(snapshot), u, u.quant);
    } catch {
      return null;
    }
    return result(cache.pointer(commit, f), [f]);
  }
  const dir = dirFilesIn(snapshot, null);
  if (dir) return result(snapshot, dir);
  const ggufs = walkGguf(snapshot);
  return ggufs.length === 1 ? result(cache.pointer(commit, ggufs[0]!), ggufs) : null;
}

/**
 * Resolves an `hf:` URI to a local path, downloading into the Hugging Face cache what is not there.
 * A second pull of a cached file costs one HEAD request (to learn the revision's commit; none with
 * a commit hash or offline) and downloads nothing.
 */
export async function pullModel(uri: string, options: PullOptions = {}): Promise<PullResult> {
  const u = parseHfUri(uri);
  const env = process.env;
  const revision = options.revision !== undefined ? parseHfUri(`hf:${u.repo}#${options.revision}`).revision : u.revision;
  const cacheDir = options.cacheDir ?? defaultCacheDir(env);
  const cache = new RepoCache(cacheDir, u.repo);
  const offline = options.offline ?? truthy(env.HF_HUB_OFFLINE);
  const shown = formatHfUri({ ...u, revision });
  if (offline || COMMIT_HASH.test(revision)) {
    const hit = fromCache(cache, u, revision);
    if (hit) return hit;
    if (offline) throw new HubError('offline', `HF_HUB_OFFLINE is set and ${shown} is not in the cache (${cache.dir}); pull it once while online`);
  }
  const c: HubClient = {
    endpoint: endpointOf(options.endpoint ?? (env.HF_ENDPOINT || 'https://huggingface.co')),
    token: options.token !== undefined ? options.token : envToken(env),
    timeoutMs: options.timeoutMs ?? 60_000,
    signal: options.signal,
  };
  try {
    return await pullOnline(c, cache, u, revision, shown, options);
  } catch (err) {
    // The hub unreachable but the revision pulled before: use what the cache has, as huggingface_hub does.
    if (err instanceof HubError && err.kind === 'network' && err.status === null && !options.signal?.aborted) {
      const hit = fromCache(cache, u, revision);
      if (hit) {
        options.onWarning?.(`${err.message}; using the cached ${shown} (${hit.commit.slice(0, 12)})`);
        return hit;
      }
    }
    throw err;
  }
}

async function pullOnline(c: HubClient, cache: RepoCache, u: HfUri, revision: string, shown: string, o: PullOptions): Promise<PullResult> {
  let plan: Plan;
  let commit: string;
  let listed: string[] | null = null;
  if (u.path !== null) {
    plan = { kind: 'file', file: u.path };
    commit = '';
  } else {
    const info = await repoInfo(c, u.repo, revision);
    commit = info.commit;
    listed = info.files;
    plan = planFor(info.files, u);
  }
  let downloaded = 0;
  const get = async (file: string, at: string, index: number, count: number): Promise<{ path: string; commit: string }> => {
    if (COMMIT_HASH.test(at)) {
      const hit = cache.cached(at, file);
      if (hit) return { path: hit, commit: at }; // a commit's files never change: no request
    }
    const meta = await fileMeta(c, u.repo, at, file);
    if (COMMIT_HASH.test(at) && meta.commit !== at)
      throw new HubError('protocol', `${c.endpoint} answered commit ${meta.commit} for ${u.repo} ${file} at commit ${at}`);
    const have = cache.cached(meta.commit, file);
    if (have) return { path: have, commit: meta.commit };
    const blob = cache.blob(meta.etag);
    await downloadBlob(c, meta, {
      blob,
      lock: inside(path.join(path.dirname(cache.dir), '.locks', path.basename(cache.dir)), `${meta.etag}.tessera.lock`, 'lock'),
      label: `${u.repo} ${file}`,
      repo: u.repo,
    }, {
      retries: o.retries ?? 5,
      retryDelayMs: o.retryDelayMs ?? 1000,
      onBytes: (bytes, total, resumedFrom) => {
        o.onProgress?.({ file, bytes, total, resumedFrom, fileIndex: index, fileCount: count });
      },
    });
    downloaded += meta.size;
    return { path: cache.link(meta.commit, file, meta.etag), commit: meta.commit };
  };

  if (plan.kind === 'file') {
    const r = await get(plan.file, commit || revision, 0, 1);
    cache.setRef(revision, r.commit);
    return { path: r.path, uri: shown, repo: u.repo, revision, commit: r.commit, files: [plan.file], downloadedBytes: downloaded };
  }

  const files = listed!;
  for (const f of REQUIRED) if (!files.includes(f)) throw new HubError('not-found', `${u.repo} has no ${f}; tessera needs config.json and tokenizer.json beside the safetensors weights`);
  const wanted = DIR_FILES.filter((f) => files.includes(f));
  const weights = files.includes('model.safetensors') ? ['model.safetensors'] : ['model.safetensors.index.json'];
  const all = [...wanted, ...weights];
  for (let i = 0; i < all.length; i++) await get(all[i]!, commit, i, all.length);
  if (weights[0] === 'model.safetensors.index.json') {
    const shards = shardsOf(cache.pointer(commit, 'model.safetensors.index.json'), u.repo);
    const missing = shards.filter((s) => !files.includes(s));
    if (missing.length) throw new HubError('not-found', `${u.repo} model.safetensors.index.json names shards the repo does not have: ${missing.slice(0, 5).join(', ')}`);
    for (let i = 0; i < shards.length; i++) await get(shards[i]!, commit, all.length + i, all.length + shards.length);
    all.push(...shards);
  }
  cache.setRef(revision, commit);
  return { path: cache.snapshotDir(commit), uri: shown, repo: u.repo, revision, commit, files: all, downloadedBytes: downloaded };
}
