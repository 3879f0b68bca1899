// The Hugging Face hub client (src/hub) and `tessera pull` / `-m hf:...` against a local server
// that answers as huggingface.co does: /{repo}/resolve/{rev}/{path} (HEAD and GET; LFS files
// redirect to a "CDN" on another origin with X-Linked-Etag / X-Linked-Size / X-Repo-Commit; small
// files answer 200 with their git blob sha1 as ETag), /api/models/{repo}/revision/{rev}
// ({sha, siblings}), X-Error-Code on 401/403/404, Range requests on the CDN. Every downloaded file
// is compared with its source by sha256; the hostile cases check what was written where.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HubError, parseHfUri, pullModel, type PullOptions } from '../src/hub/index.js';
import { loadModelFile } from '../src/model/load.js';
import { getBackend } from '../src/backend/index.js';
import { Engine } from '../src/engine/engine.js';
import { downloadProgress, resolveHubArgs } from '../src/cli/pull.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = readFileSync(path.join(root, 'models/stories260K/stories260K.gguf'));
const Q8 = readFileSync(path.join(root, 'test/fixtures/stories260K/stories260K-Q8_0.gguf'));
const Q4 = readFileSync(path.join(root, 'test/fixtures/stories260K/stories260K-Q4_0.gguf'));
const SHAKE = path.join(root, 'test/fixtures/shakespeare-draft/hf');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Uint8Array) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const commitHash = () => randomBytes(20).toString('hex');

interface Repo {
  commit: string;
  files: Map<string, Buffer>;
  /** Needs this token (401 RepoNotFound without it, as the hub answers for private repos). */
  privateToken?: string;
  gated?: boolean;
  /** Extra names in the API's file list that resolve does not serve (hostile listings). */
  extraSiblings?: string[];
}

interface Logged { server: 'hub' | 'cdn'; method: string; url: string; range?: string; auth?: string }

/** Knobs for a hostile or flaky server; each test sets what it needs and `reset()` clears them. */
interface Behaviour {
  /** CDN: after this many body bytes, destroy the socket (once per entry; the count is consumed). */
  dropAfter: number[];
  /** CDN: answer 200 with the whole file to a Range request. */
  ignoreRange: boolean;
  /** CDN: announce this many more bytes in Content-Length than it sends. */
  extraLength: number;
  /** CDN: send bytes forever (chunked, no length). */
  endless: boolean;
  /** CDN: send this many bytes, then nothing (the connection stays open). */
  stallAfter?: number;
  /** CDN: serve other bytes of the same length. */
  corrupt: boolean;
  /** hub: X-Linked-Size smaller by this much. */
  sizeLie: number;
  /** hub: resolve redirects to itself. */
  loop: boolean;
  /** hub: this X-Repo-Commit / X-Linked-Etag instead of the real ones. */
  commitHeader?: string;
  etagHeader?: string;
}

class MockHub {
  repos = new Map<string, Repo>();
  log: Logged[] = [];
  b: Behaviour = this.fresh();
  hub!: http.Server;
  cdn!: http.Server;
  hubUrl = '';
  cdnUrl = '';
  private blobs = new Map<string, Buffer>();

  fresh(): Behaviour {
    return { dropAfter: [], ignoreRange: false, extraLength: 0, endless: false, corrupt: false, sizeLie: 0, loop: false };
  }
  reset(): void {
    this.b = this.fresh();
    this.log = [];
  }
  add(repo: string, files: Record<string, Buffer>, extra: Partial<Repo> = {}): Repo {
    const r: Repo = { commit: commitHash(), files: new Map(Object.entries(files)), ...extra };
    for (const data of r.files.values()) this.blobs.set(sha256(data), data);
    this.repos.set(repo, r);
    return r;
  }
  /** Files over 1 KiB are LFS files (served from the CDN), as on the hub. */
  isLfs(data: Buffer): boolean {
    return data.length > 1024;
  }
  requests(filter: Partial<Logged>): Logged[] {
    return this.log.filter((l) => Object.entries(filter).every(([k, v]) => (l as unknown as Record<string, unknown>)[k] === v));
  }

  async start(): Promise<void> {
    this.hub = http.createServer((q, s) => this.onHub(q, s));
    this.cdn = http.createServer((q, s) => this.onCdn(q, s));
    for (const srv of [this.hub, this.cdn]) await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    this.hubUrl = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
  }
  async stop(): Promise<void> {
    for (const srv of [this.hub, this.cdn]) {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  }

  private record(server: 'hub' | 'cdn', q: http.IncomingMessage): void {
    this.log.push({ server, method: q.method!, url: q.url!, range: q.headers.range, auth: q.headers.authorization });
  }

  private error(s: http.ServerResponse, status: number, code: string, message: string): void {
    s.writeHead(status, { 'x-error-code': code, 'x-error-message': message, 'content-type': 'application/json' });
    s.end(JSON.stringify({ error: message }));
  }

  /** The repo if the request may read it, else the hub's answer has been sent. */
  private access(q: http.IncomingMessage, s: http.ServerResponse, name: string): Repo | null {
    const r = this.repos.get(name);
    const auth = q.headers.authorization;
    if (!r || (r.privateToken !== undefined && auth !== `Bearer ${r.privateToken}`)) {
      this.error(s, 401, 'RepoNotFound', 'Repository not found');
      return null;
    }
    if (r.gated && auth === undefined) {
      this.error(s, 401, 'GatedRepo', `Access to model ${name} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      return null;
    }
    if (r.gated) {
      this.error(s, 403, 'GatedRepo', `Access to model ${name} is restricted and you are not in the authorized list.`);
      return null;
    }
    return r;
  }

  private onHub(q: http.IncomingMessage, s: http.ServerResponse): void {
    this.record('hub', q);
    const url = new URL(q.url!, this.hubUrl);
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (parts[0] === 'api' && parts[1] === 'models') {
      // /api/models/{owner}/{repo}[/revision/{rev}]
      const name = `${parts[2]}/${parts[3]}`;
      const r = this.access(q, s, name);
      if (!r) return;
      const rev = parts[4] === 'revision' ? parts.slice(5).join('/') : 'main';
      if (rev !== 'main' && rev !== r.commit) return this.error(s, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
      const siblings = [...r.files.keys(), ...(r.extraSiblings ?? [])].map((rfilename) => ({ rfilename }));
      s.writeHead(200, { 'content-type': 'application/json' });
      s.end(JSON.stringify({ _id: '0', id: name, modelId: name, sha: r.commit, private: r.privateToken !== undefined, gated: r.gated ?? false, tags: ['gguf'], siblings }));
      return;
    }
    // /{owner}/{repo}/resolve/{rev}/{path}
    if (parts[2] !== 'resolve' || parts.length < 5) return this.error(s, 404, 'EntryNotFound', 'not a resolve URL');
    const name = `${parts[0]}/${parts[1]}`;
    if (this.b.loop) {
      s.writeHead(302, { location: url.pathname });
      return void s.end();
    }
    const r = this.access(q, s, name);
    if (!r) return;
    const rev = parts[3]!;
    if (rev !== 'main' && rev !== r.commit) return this.error(s, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    const file = parts.slice(4).join('/');
    const data = r.files.get(file);
    if (!data) return this.error(s, 404, 'EntryNotFound', `${file} does not exist on "${rev}"`);
    const commit = this.b.commitHeader ?? r.commit;
    if (this.isLfs(data)) {
      const sha = sha256(data);
      s.writeHead(302, {
        location: `${this.cdnUrl}/repos/${sha}?download=true`,
        'x-repo-commit': commit,
        'x-linked-etag': `"${this.b.etagHeader ?? sha}"`,
        'x-linked-size': String(data.length - this.b.sizeLie),
        etag: `"${gitSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\n`))}"`,
      });
      return void s.end();
    }
    const headers = { 'x-repo-commit': commit, etag: `"${this.b.etagHeader ?? gitSha1(data)}"`, 'content-length': String(data.length), 'accept-ranges': 'bytes' };
    s.writeHead(200, headers);
    s.end(q.method === 'HEAD' ? undefined : data);
  }

  private onCdn(q: http.IncomingMessage, s: http.ServerResponse): void {
    this.record('cdn', q);
    const sha = new URL(q.url!, this.cdnUrl).pathname.split('/').pop()!;
    let data = this.blobs.get(sha);
    if (!data) {
      s.writeHead(404);
      return void s.end();
    }
    if (this.b.corrupt) data = Buffer.from(data.map((x) => x ^ 0x5a));
    if (this.b.endless) {
      s.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = () => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      s.on('close', () => s.removeAllListeners('drain'));
      return pump();
    }
    const m = /^bytes=(\d+)-$/.exec(q.headers.range ?? '');
    const start = m && !this.b.ignoreRange ? Number(m[1]) : 0;
    if (start >= data.length && start > 0) {
      s.writeHead(416, { 'content-range': `bytes */${data.length}` });
      return void s.end();
    }
    const body = data.subarray(start);
    s.writeHead(start > 0 ? 206 : 200, {
      'content-length': String(body.length + this.b.extraLength),
      ...(start > 0 ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
      'accept-ranges': 'bytes',
      etag: `"${sha}"`,
    });
    if (q.method === 'HEAD') return void s.end();
    if (this.b.stallAfter !== undefined) return void s.write(body.subarray(0, this.b.stallAfter));
    const drop = this.b.dropAfter.shift();
    if (drop !== undefined) {
      s.write(body.subarray(0, drop), () => setTimeout(() => s.socket?.destroy(), 20));
      return;
    }
    if (this.b.extraLength) {
      s.write(body, () => setTimeout(() => s.socket?.destroy(), 20));
      return;
    }
    s.end(body);
  }
}

const hub = new MockHub();
const work = mkdtempSync(path.join(tmpdir(), 'tessera-hub-'));
let cacheN = 0;
/** A fresh cache directory inside `work` (each test its own unless it shares on purpose). */
const newCache = () => path.join(work, `cache-${cacheN++}`);
const opts = (cacheDir: string, more: PullOptions = {}): PullOptions => ({ endpoint: hub.hubUrl, cacheDir, token: null, offline: false, retries: 0, retryDelayMs: 10, timeoutMs: 5000, ...more });

/** Every path under dir (files and links), relative, to prove nothing landed outside the cache. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** The rejection of p, handled as it happens (vitest sees no unhandled rejection). */
async function rejection(p: Promise<unknown>): Promise<HubError> {
  const r = await p.then(() => null, (e: unknown) => e);
  expect(r, 'expected the pull to fail').toBeInstanceOf(HubError);
  return r as HubError;
}

let stories: Repo;
/** A local URL nothing listens on (a server's port, closed again). */
let closedUrl = '';
beforeAll(async () => {
  await hub.start();
  const tmp = http.createServer();
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
  closedUrl = `http://127.0.0.1:${(tmp.address() as AddressInfo).port}`;
  await new Promise((r) => tmp.close(r));
  stories = hub.add('tessera-test/stories260K', {
    'stories260K.gguf': STORIES,
    'README.md': Buffer.from('# stories260K\nMIT\n'),
  });
  hub.add('tessera-test/stories260K-GGUF', {
    'stories260K-Q8_0.gguf': Q8,
    'stories260K-Q4_0.gguf': Q4,
    'quants/extra/stories260K-F32.gguf': STORIES,
  });
  hub.add('tessera-test/private', { 'm.gguf': STORIES }, { privateToken: 'hf_secret' });
  hub.add('tessera-test/gated', { 'm.gguf': STORIES }, { gated: true });
  const dir: Record<string, Buffer> = {};
  for (const f of readdirSync(SHAKE)) dir[f] = readFileSync(path.join(SHAKE, f));
  hub.add('tessera-test/shakespeare', { ...dir, 'pytorch_model.bin': Buffer.from('not read'), 'original/params.json': Buffer.from('{}') });
  // The same model sharded: an index naming one shard under another name.
  const sharded: Record<string, Buffer> = { ...dir };
  delete sharded['model.safetensors'];
  const header = JSON.parse(dir['model.safetensors']!.subarray(8, 8 + Number(dir['model.safetensors']!.readBigUInt64LE(0))).toString('utf8')) as Record<string, unknown>;
  const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, 'model-00001-of-00001.safetensors']));
  sharded['model.safetensors.index.json'] = Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap }));
  sharded['model-00001-of-00001.safetensors'] = dir['model.safetensors']!;
  hub.add('tessera-test/shakespeare-sharded', sharded);
  hub.add('tessera-test/evil-list', { 'config.json': dir['config.json']!, 'tokenizer.json': dir['tokenizer.json']!, 'a.gguf': STORIES }, { extraSiblings: ['../../x.gguf'] });
});
afterAll(() => hub.stop());

describe('hf: URIs', () => {
  it('reads node-llama-cpp, llama.cpp and huggingface_hub shapes', () => {
    expect(parseHfUri('hf:owner/repo/dir/model-Q4_0.gguf')).toEqual({ owner: 'owner', name: 'repo', repo: 'owner/repo', path: 'dir/model-Q4_0.gguf', quant: null, revision: 'main' });
    expect(parseHfUri('hf:owner/repo/model.gguf#v1.0')).toMatchObject({ path: 'model.gguf', revision: 'v1.0' });
    expect(parseHfUri('hf:owner/repo:Q8_0')).toMatchObject({ path: null, quant: 'Q8_0', revision: 'main' });
    expect(parseHfUri('hf:owner/Repo.v2-GGUF:q4_k_m#refs/pr/1')).toMatchObject({ name: 'Repo.v2-GGUF', quant: 'q4_k_m', revision: 'refs/pr/1' });
    expect(parseHfUri('hf://owner/repo@dev/model.gguf')).toMatchObject({ path: 'model.gguf', revision: 'dev' });
    expect(parseHfUri('hf:owner/repo')).toMatchObject({ path: null, quant: null });
  });

  it.each([
    ['hf:owner', /names no repository/],
    ['hf:owner/repo/../../x.gguf', /not a safe relative path/],
    ['hf:owner/repo/a//b.gguf', /not a safe relative path/],
    ['hf:own..er/repo/x.gguf', /not a Hugging Face name/],
    ['hf:owner/re--po', /not a Hugging Face name/],
    ['hf:owner/repo:Q4/x.gguf', /both a file and a quantisation/],
    ['hf:owner/repo@a/x.gguf#b', /revision twice/],
    ['hf:owner/repo#../main', /not a branch, tag or commit/],
    ['owner/repo', /expected an hf: URI/],
  ])('refuses %s', (uri, msg) => {
    expect(() => parseHfUri(uri)).toThrow(msg);
  });
});

describe('pullModel against a local hub', () => {
  const cache = newCache();

  it('pulls a GGUF file into the Hugging Face cache layout, byte for byte', async () => {
    hub.reset();
    const seen: number[] = [];
    const r = await pullModel('hf:tessera-test/stories260K/stories260K.gguf', opts(cache, { token: 'hf_any', onProgress: (p) => seen.push(p.bytes) }));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    const repoDir = path.join(cache, 'models--tessera-test--stories260K');
    expect(r.path).toBe(path.join(repoDir, 'snapshots', stories.commit, 'stories260K.gguf'));
    expect(r).toMatchObject({ commit: stories.commit, revision: 'main', downloadedBytes: STORIES.length, files: ['stories260K.gguf'] });
    // snapshots/<commit>/<file> is a relative link to blobs/<sha256>, refs/main holds the commit (huggingface_hub's layout).
    expect(lstatSync(r.path).isSymbolicLink()).toBe(true);
    expect(readlinkSync(r.path)).toBe(`../../blobs/${sha256(STORIES)}`);
    expect(readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(stories.commit);
    expect(tree(path.join(repoDir, 'blobs'))).toEqual([sha256(STORIES)]);
    expect(seen.at(-1)).toBe(STORIES.length);
    // The token went to the hub, never to the CDN on another origin.
    expect(hub.requests({ server: 'hub' }).every((l) => l.auth === 'Bearer hf_any')).toBe(true);
    expect(hub.requests({ server: 'cdn' }).map((l) => l.auth)).toEqual([undefined]);
  });

  it('a second pull downloads nothing and gives the same path', async () => {
    hub.reset();
    const r = await pullModel('hf:tessera-test/stories260K/stories260K.gguf', opts(cache));
    expect(r.downloadedBytes).toBe(0);
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(hub.log.map((l) => `${l.server} ${l.method}`)).toEqual(['hub HEAD']);
  });

  it('a commit revision that is cached makes no request at all', async () => {
    hub.reset();
    const r = await pullModel(`hf:tessera-test/stories260K/stories260K.gguf#${stories.commit}`, opts(cache));
    expect(r.commit).toBe(stories.commit);
    expect(hub.log).toEqual([]);
  });

  it('offline: the cache answers, or the error says it is not cached', async () => {
    hub.reset();
    const r = await pullModel('hf:tessera-test/stories260K/stories260K.gguf', opts(cache, { offline: true }));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    const e = await rejection(pullModel('hf:tessera-test/stories260K/README.md', opts(cache, { offline: true })));
    expect(e.kind).toBe('offline');
    expect(e.message).toMatch(/HF_HUB_OFFLINE is set and hf:tessera-test\/stories260K\/README\.md is not in the cache/);
    expect(hub.log).toEqual([]);
  });

  it('an unreachable hub falls back to the cached revision with a warning', async () => {
    const warnings: string[] = [];
    const r = await pullModel('hf:tessera-test/stories260K/stories260K.gguf', opts(cache, { endpoint: closedUrl, onWarning: (m) => warnings.push(m) }));
    expect(r.commit).toBe(stories.commit);
    expect(warnings.join()).toMatch(`cannot reach ${closedUrl}: ECONNREFUSED; using the cached hf:tessera-test/stories260K/stories260K.gguf (${stories.commit.slice(0, 12)})`);
  });

  it('small files come straight from the hub, checked against their git blob sha1', async () => {
    hub.reset();
    const r = await pullModel('hf:tessera-test/stories260K/README.md', opts(cache));
    expect(readFileSync(r.path, 'utf8')).toBe('# stories260K\nMIT\n');
    expect(realpathSync(r.path)).toBe(path.join(cache, 'models--tessera-test--stories260K', 'blobs', gitSha1(Buffer.from('# stories260K\nMIT\n'))));
    expect(hub.requests({ server: 'cdn' })).toEqual([]);
  });

  it('picks the GGUF file of a quantisation (hf:owner/repo:QUANT)', async () => {
    hub.reset();
    const r = await pullModel('hf:tessera-test/stories260K-GGUF:q8_0', opts(cache));
    expect(path.basename(r.path)).toBe('stories260K-Q8_0.gguf');
    expect(sha256(readFileSync(r.path))).toBe(sha256(Q8));
    const f32 = await pullModel('hf:tessera-test/stories260K-GGUF:F32', opts(cache));
    expect(f32.files).toEqual(['quants/extra/stories260K-F32.gguf']);
    expect(sha256(readFileSync(f32.path))).toBe(sha256(STORIES));
    const e = await rejection(pullModel('hf:tessera-test/stories260K-GGUF:Q5_K_M', opts(cache)));
    expect(e.message).toMatch(/no GGUF file of tessera-test\/stories260K-GGUF is named for Q5_K_M \(its GGUF files: .*stories260K-Q4_0\.gguf/);
    const many = await rejection(pullModel('hf:tessera-test/stories260K-GGUF', opts(cache)));
    expect(many.message).toMatch(/has 3 GGUF files; choose one with hf:tessera-test\/stories260K-GGUF:QUANT/);
    // Offline, the quantisation is found among the cached files.
    const off = await pullModel('hf:tessera-test/stories260K-GGUF:Q8_0', opts(cache, { offline: true }));
    expect(off.path).toBe(r.path);
  });

  it('pulls a Hugging Face model directory that loads like the original', async () => {
    hub.reset();
    for (const repo of ['tessera-test/shakespeare', 'tessera-test/shakespeare-sharded']) {
      const r = await pullModel(`hf:${repo}`, opts(cache));
      expect(statSync(r.path).isDirectory()).toBe(true);
      const src = hub.repos.get(repo)!.files;
      expect(r.files.sort()).toEqual([...src.keys()].filter((f) => f.endsWith('.json') || f.endsWith('.safetensors')).filter((f) => f !== 'original/params.json').sort());
      for (const f of r.files) expect(sha256(readFileSync(path.join(r.path, f))), f).toBe(sha256(src.get(f)!));
      expect(existsSync(path.join(r.path, 'pytorch_model.bin'))).toBe(false);
      const js = getBackend('js');
      const a = loadModelFile(r.path, js), b = loadModelFile(SHAKE, js);
      expect(a.model.config).toEqual(b.model.config);
      expect(a.tokenizer.encode('To be, or not to be')).toEqual(b.tokenizer.encode('To be, or not to be'));
      const again = await pullModel(`hf:${repo}`, opts(cache, { offline: true }));
      expect(again.path).toBe(r.path);
    }
  });

  it('401, 403 and 404 say what is wrong and what to do', async () => {
    hub.reset();
    const priv = await rejection(pullModel('hf:tessera-test/private/m.gguf', opts(cache)));
    expect(priv).toMatchObject({ kind: 'auth', status: 401 });
    expect(priv.message).toMatch(/tessera-test\/private was not found or is private \(401\): if it exists, set HF_TOKEN/);
    const badToken = await rejection(pullModel('hf:tessera-test/private/m.gguf', opts(cache, { token: 'hf_wrong' })));
    expect(badToken.message).toMatch(/refused the token in HF_TOKEN/);
    const ok = await pullModel('hf:tessera-test/private/m.gguf', opts(cache, { token: 'hf_secret' }));
    expect(sha256(readFileSync(ok.path))).toBe(sha256(STORIES));
    const gated = await rejection(pullModel('hf:tessera-test/gated/m.gguf', opts(cache)));
    expect(gated.message).toMatch(/tessera-test\/gated is a gated model: accept its terms at http:\/\/127\.0\.0\.1:\d+\/tessera-test\/gated .*set HF_TOKEN/);
    const gated403 = await rejection(pullModel('hf:tessera-test/gated/m.gguf', opts(cache, { token: 'hf_x' })));
    expect(gated403).toMatchObject({ kind: 'auth', status: 403 });
    const file = await rejection(pullModel('hf:tessera-test/stories260K/nope.gguf', opts(cache)));
    expect(file).toMatchObject({ kind: 'not-found', status: 404 });
    expect(file.message).toMatch(/file "nope\.gguf" not found in tessera-test\/stories260K/);
    const rev = await rejection(pullModel('hf:tessera-test/stories260K/stories260K.gguf#v9', opts(cache)));
    expect(rev.message).toMatch(/revision "v9" not found in tessera-test\/stories260K/);
    const down = await rejection(pullModel('hf:tessera-test/stories260K/README.md', opts(newCache(), { endpoint: closedUrl })));
    expect(down).toMatchObject({ kind: 'network' });
    expect(down.message).toBe(`cannot reach ${closedUrl}: ECONNREFUSED`);
  });
});

describe('resuming', () => {
  const uri = 'hf:tessera-test/stories260K/stories260K.gguf';
  const blobs = (c: string) => path.join(c, 'models--tessera-test--stories260K', 'blobs');

  it('a dropped connection keeps the partial file; the next pull continues it with a Range request', async () => {
    hub.reset();
    const cache = newCache();
    const cut = 400_000;
    hub.b.dropAfter = [cut];
    const e = await rejection(pullModel(uri, opts(cache)));
    expect(e.kind).toBe('network');
    const partial = path.join(blobs(cache), `${sha256(STORIES)}.incomplete`);
    // What reached the disk before the drop: the whole `cut` on a quiet host, possibly less on a loaded one
    // (bytes in flight when the socket closed are lost); the resume must start exactly there.
    const kept = statSync(partial).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(cut);
    expect(e.message).toMatch(new RegExp(`stopped at ${kept} of ${STORIES.length} bytes: the connection to http://127.0.0.1:\\d+ was lost .*; the partial file is kept .*: pull again to resume`));
    const seen: { bytes: number; resumedFrom: number }[] = [];
    const r = await pullModel(uri, opts(cache, { onProgress: (p) => seen.push(p) }));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(hub.requests({ server: 'cdn', method: 'GET' }).map((l) => l.range)).toEqual([undefined, `bytes=${kept}-`]);
    expect(seen[0]).toMatchObject({ bytes: kept, resumedFrom: kept });
    expect(existsSync(partial)).toBe(false);
    expect(r.downloadedBytes).toBe(STORIES.length);
  });

  it('retries within one pull, each attempt resuming where the last stopped', async () => {
    hub.reset();
    const cache = newCache();
    hub.b.dropAfter = [100_000, 300_000];
    const r = await pullModel(uri, opts(cache, { retries: 3 }));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    // Each attempt resumes where the last one's bytes ended (at most 100000, then at most 300000 more).
    const ranges = hub.requests({ server: 'cdn', method: 'GET' }).map((l) => l.range);
    expect(ranges).toHaveLength(3);
    expect(ranges[0]).toBeUndefined();
    const [a, b] = ranges.slice(1).map((x) => Number(/^bytes=(\d+)-$/.exec(x ?? '')?.[1]));
    expect(a).toBeGreaterThan(0);
    expect(a).toBeLessThanOrEqual(100_000);
    expect(b).toBeGreaterThan(a!);
    expect(b).toBeLessThanOrEqual(a! + 300_000);
  });

  it('a server that ignores Range restarts the file cleanly', async () => {
    hub.reset();
    const cache = newCache();
    hub.b.dropAfter = [500_000];
    await rejection(pullModel(uri, opts(cache)));
    const kept = statSync(path.join(blobs(cache), `${sha256(STORIES)}.incomplete`)).size;
    expect(kept).toBeGreaterThan(0);
    hub.b.ignoreRange = true;
    const r = await pullModel(uri, opts(cache));
    expect(hub.requests({ server: 'cdn', method: 'GET' }).map((l) => l.range)).toEqual([undefined, `bytes=${kept}-`]);
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(statSync(r.path).size).toBe(STORIES.length);
  });

  it('a partial file of another version is not resumed (blobs are named by their hash)', async () => {
    hub.reset();
    const cache = newCache();
    mkdirSync(blobs(cache), { recursive: true });
    writeFileSync(path.join(blobs(cache), `${'0'.repeat(64)}.incomplete`), Buffer.alloc(1000, 1));
    const r = await pullModel(uri, opts(cache));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(hub.requests({ server: 'cdn', method: 'GET' }).map((l) => l.range)).toEqual([undefined]);
  });

  it('another live process downloading the same blob is reported; a dead one\'s lock is taken over', async () => {
    hub.reset();
    const cache = newCache();
    const locks = path.join(cache, '.locks', 'models--tessera-test--stories260K');
    mkdirSync(locks, { recursive: true });
    const lock = path.join(locks, `${sha256(STORIES)}.tessera.lock`);
    writeFileSync(lock, String(process.ppid));
    const e = await rejection(pullModel(uri, opts(cache)));
    expect(e.kind).toBe('busy');
    expect(e.message).toMatch(new RegExp(`another process \\(pid ${process.ppid}\\) is downloading tessera-test/stories260K stories260K\\.gguf`));
    writeFileSync(lock, '4194303'); // above Linux's default pid_max: no such process
    const r = await pullModel(uri, opts(cache));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(existsSync(lock)).toBe(false);
  });

  it('two pulls of the same file in one process share one download', async () => {
    hub.reset();
    const cache = newCache();
    const [a, b] = await Promise.all([pullModel(uri, opts(cache)), pullModel(uri, opts(cache))]);
    expect(a.path).toBe(b.path);
    expect(sha256(readFileSync(a.path))).toBe(sha256(STORIES));
    expect(hub.requests({ server: 'cdn', method: 'GET' })).toHaveLength(1);
  });

  it('an abort, or a server that stops sending, keeps the partial file', async () => {
    hub.reset();
    const cache = newCache();
    hub.b.stallAfter = 200_000;
    const ac = new AbortController();
    const reason = new Error('stop');
    const partial = path.join(blobs(cache), `${sha256(STORIES)}.incomplete`);
    const p = pullModel(uri, opts(cache, { signal: ac.signal, onProgress: (x) => { if (x.bytes > 0) ac.abort(reason); } }));
    expect(await p.then(() => null, (e: unknown) => e)).toBe(reason);
    const cut = statSync(partial).size;
    expect(cut).toBeGreaterThan(0);
    expect(cut).toBeLessThanOrEqual(200_000);
    hub.b.stallAfter = 100_000;
    const e = await rejection(pullModel(uri, opts(cache, { timeoutMs: 1000 })));
    const cut2 = statSync(partial).size; // cut + 100000 unless a loaded host starved the stream for a second
    expect(cut2).toBeGreaterThan(cut);
    expect(cut2).toBeLessThanOrEqual(cut + 100_000);
    expect(e.message).toMatch(`stopped at ${cut2} of ${STORIES.length} bytes: no data from ${hub.cdnUrl} for 1 s`);
    hub.b.stallAfter = undefined;
    const r = await pullModel(uri, opts(cache));
    expect(sha256(readFileSync(r.path))).toBe(sha256(STORIES));
    expect(hub.requests({ server: 'cdn', method: 'GET' }).map((l) => l.range)).toEqual([undefined, `bytes=${cut}-`, `bytes=${cut2}-`]);
  });
});

describe('a hostile server', () => {
  const uri = 'hf:tessera-test/stories260K/stories260K.gguf';

  /** Runs a pull that must fail, and returns its error and every path the cache and its parent gained. */
  async function hostile(u: string, setup: (b: Behaviour) => void, more: PullOptions = {}): Promise<{ e: HubError; cache: string; files: string[]; outside: string[] }> {
    hub.reset();
    setup(hub.b);
    const base = mkdtempSync(path.join(work, 'hostile-'));
    const cache = path.join(base, 'a', 'b', 'cache');
    const e = await rejection(pullModel(u, opts(cache, more)));
    const outside = tree(base).filter((p) => !p.startsWith(path.join('a', 'b', 'cache')) && p !== 'a' && p !== path.join('a', 'b'));
    return { e, cache, files: tree(cache), outside };
  }

  it('a Content-Length that disagrees with the hub\'s size', async () => {
    const { e } = await hostile(uri, (b) => { b.extraLength = 100; });
    expect(e.kind).toBe('protocol');
    expect(e.message).toMatch(`announced ${STORIES.length + 100} bytes for tessera-test/stories260K stories260K.gguf from byte 0, but the hub gave its size as ${STORIES.length}`);
  });

  it('an endless body is cut at the announced size', async () => {
    const { e, cache, files } = await hostile(uri, (b) => { b.endless = true; });
    expect(e.message).toMatch(`sent more than the ${STORIES.length} bytes of tessera-test/stories260K stories260K.gguf`);
    const partial = files.find((f) => f.endsWith('.incomplete'));
    expect(statSync(path.join(cache, partial!)).size).toBeLessThanOrEqual(STORIES.length);
  });

  it('an X-Linked-Size that disagrees with the CDN', async () => {
    const { e } = await hostile(uri, (b) => { b.sizeLie = 1000; });
    expect(e.message).toMatch(`announced ${STORIES.length} bytes for tessera-test/stories260K stories260K.gguf from byte 0, but the hub gave its size as ${STORIES.length - 1000}`);
  });

  it('bytes that do not match the ETag are removed, not renamed into the cache', async () => {
    const { e, files } = await hostile(uri, (b) => { b.corrupt = true; });
    expect(e.message).toMatch(/the downloaded bytes have sha256 [0-9a-f]{64}, not the ETag [0-9a-f]{64} the hub gave; the download was removed/);
    expect(files.filter((f) => f.includes('blobs') && !f.endsWith('blobs'))).toEqual([]);
    expect(files.filter((f) => f.includes('snapshots') && f.endsWith('.gguf'))).toEqual([]);
  });

  it('a redirect loop', async () => {
    const { e } = await hostile(uri, (b) => { b.loop = true; });
    expect(e.message).toMatch(/redirect loop: http:\/\/127\.0\.0\.1:\d+\/tessera-test\/stories260K\/resolve\/main\/stories260K\.gguf redirects back to itself/);
  });

  it('path traversal in a listed file name, a commit or an ETag writes nothing outside the cache', async () => {
    const list = await hostile('hf:tessera-test/evil-list:Q4', () => {});
    expect(list.e.message).toMatch(/tessera-test\/evil-list's file list has an unsafe file name "\.\.\/\.\.\/x\.gguf"/);
    const commit = await hostile(uri, (b) => { b.commitHeader = '../../../../x'; });
    expect(commit.e.message).toMatch(/X-Repo-Commit "\.\.\/\.\.\/\.\.\/\.\.\/x", not a commit hash/);
    const etag = await hostile(uri, (b) => { b.etagHeader = '../../../../x'; });
    expect(etag.e.message).toMatch(/ETag "\.\.\/\.\.\/\.\.\/\.\.\/x", not a hash/);
    for (const r of [list, commit, etag]) {
      expect(r.outside).toEqual([]);
      expect(r.files.filter((f) => f.endsWith('x') || f.endsWith('x.gguf'))).toEqual([]);
    }
  });
});

/** bin/tessera.js (dist) with the hub's environment; async, so the server in this process keeps answering. */
function cli(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/tessera.js'), ...args], {
      env: { ...process.env, HF_HUB_OFFLINE: '', HF_TOKEN: '', HF_HOME: path.join(work, 'hf-home'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

describe('the CLI pieces', () => {
  const event = (bytes: number) => ({ file: 'm.gguf', bytes, total: 1000, resumedFrom: 0, fileIndex: 0, fileCount: 1 });

  it('progress: a redrawn bar with bytes/total on a terminal, plain lines every 10% in a log', () => {
    const tty: string[] = [], log: string[] = [];
    const a = downloadProgress({ isTTY: true, write: (x: string) => tty.push(x) });
    const b = downloadProgress({ isTTY: false, write: (x: string) => log.push(x) });
    for (const n of [0, 50, 120, 150, 340, 1000]) {
      a(event(n));
      b(event(n));
    }
    expect(tty).toHaveLength(6);
    expect(tty.every((x) => x.startsWith('\rm.gguf ['))).toBe(true);
    expect(tty[4]).toMatch(/^\rm\.gguf \[#{8}\.{16}\] 340 B\/1000 B 34%/);
    expect(tty[5]).toMatch(/\[#{24}\] 1000 B\/1000 B 100%.*\n$/);
    // The start, each new tenth (0 is the start line's), the end; no line for 150 (same tenth as 120).
    expect(log.map((x) => x.replace(/ [\d.]+ MiB\/s/, ''))).toEqual([
      'downloading m.gguf (1000 B)\n', 'm.gguf: 120 B/1000 B 12%\n', 'm.gguf: 340 B/1000 B 34%\n', 'm.gguf: 1000 B/1000 B 100%\n',
    ]);
  });

  it('resolveHubArgs replaces the models given as hf: URIs and nothing else', async () => {
    hub.reset();
    const saved = { ...process.env };
    Object.assign(process.env, { HF_ENDPOINT: hub.hubUrl, HF_HUB_CACHE: newCache(), HF_TOKEN: '', HF_HUB_OFFLINE: '', HF_HOME: path.join(work, 'hf-home') });
    try {
      const args = ['-p', 'hf:not/a-model', '-m', 'hf:tessera-test/stories260K/stories260K.gguf', '--draft-model=hf:tessera-test/stories260K-GGUF:Q4_0', '-n', '4'];
      const out = await resolveHubArgs('generate', args);
      expect(out[0]).toBe('-p');
      expect(out[1]).toBe('hf:not/a-model');
      expect(sha256(readFileSync(out[3]!))).toBe(sha256(STORIES));
      expect(out[4]!.startsWith('--draft-model=')).toBe(true);
      expect(sha256(readFileSync(out[4]!.slice('--draft-model='.length)))).toBe(sha256(Q4));
      expect(out.slice(5)).toEqual(['-n', '4']);
      expect(await resolveHubArgs('generate', ['-m', 'hf:tessera-test/nothing-here/x.gguf', '--help'])).toEqual(['-m', 'hf:tessera-test/nothing-here/x.gguf', '--help']);
      expect(hub.requests({ url: '/tessera-test/nothing-here/resolve/main/x.gguf' })).toEqual([]);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

describe('Engine.load with hf: URIs', () => {
  it('pulls the model (and an hf: draft model) and generates what the local file generates', async () => {
    hub.reset();
    const saved = { ...process.env };
    Object.assign(process.env, { HF_ENDPOINT: hub.hubUrl, HF_HUB_CACHE: newCache(), HF_TOKEN: '', HF_HUB_OFFLINE: '', HF_HOME: path.join(work, 'hf-home') });
    const opts = { maxTokens: 12, temperature: 0 };
    try {
      const remote = await Engine.load('hf:tessera-test/stories260K/stories260K.gguf', { backend: 'js', draftModel: 'hf:tessera-test/stories260K-GGUF:Q4_0' });
      const fromHub = await remote.generate('Once upon a time', opts).finally(() => remote.dispose());
      const local = await Engine.load(path.join(root, 'models/stories260K/stories260K.gguf'), { backend: 'js' });
      const fromFile = await local.generate('Once upon a time', opts).finally(() => local.dispose());
      expect(fromHub.text).toBe(fromFile.text);
      expect(fromHub.speculation?.proposed ?? 0).toBeGreaterThan(0); // the pulled draft model was used
      expect(hub.requests({ url: '/tessera-test/stories260K/resolve/main/stories260K.gguf' }).length).toBeGreaterThan(0);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

describe('tessera pull and -m hf:', () => {
  const cache = newCache();
  const env = () => ({ HF_ENDPOINT: hub.hubUrl, HF_HUB_CACHE: cache });
  const local = path.join(root, 'models/stories260K/stories260K.gguf');
  const gen = ['-p', 'Once upon a time', '-n', '12', '--temperature', '0', '--backend', 'js'];

  it('generate -m hf:... pulls once and generates what the local file generates', async () => {
    hub.reset();
    const want = await cli(['generate', '-m', local, ...gen], {});
    expect(want.status, want.stderr).toBe(0);
    const got = await cli(['generate', '-m', 'hf:tessera-test/stories260K/stories260K.gguf', ...gen], env());
    expect(got.status, got.stderr).toBe(0);
    expect(got.stdout).toBe(want.stdout);
    // stderr is not a terminal: plain progress lines.
    expect(got.stderr).toMatch(/^downloading stories260K\.gguf \(1\.1 MiB\)\n(stories260K\.gguf: [\d.]+ [KM]iB\/1\.1 MiB \d+%.*\n)*stories260K\.gguf: 1\.1 MiB\/1\.1 MiB 100%/);
    const again = await cli(['generate', `--model=hf:tessera-test/stories260K/stories260K.gguf`, ...gen], env());
    expect(again.stdout).toBe(want.stdout);
    expect(again.stderr).not.toMatch(/downloading/);
    expect(hub.requests({ server: 'cdn', method: 'GET' })).toHaveLength(1);
  });

  it('pull prints the cached path; errors are one line', async () => {
    hub.reset();
    const r = await cli(['pull', 'hf:tessera-test/stories260K/stories260K.gguf'], env());
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${path.join(cache, 'models--tessera-test--stories260K', 'snapshots', stories.commit, 'stories260K.gguf')}\n`);
    expect(r.stderr).toMatch(/hf:tessera-test\/stories260K\/stories260K\.gguf is cached/);
    const json = await cli(['pull', '--json', '-q', 'hf:tessera-test/stories260K-GGUF:Q4_0'], env());
    expect(JSON.parse(json.stdout)).toMatchObject({ repo: 'tessera-test/stories260K-GGUF', files: ['stories260K-Q4_0.gguf'] });
    const missing = await cli(['tokenize', '-m', 'hf:tessera-test/private/m.gguf', '-p', 'hi'], env());
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^tessera: tessera-test\/private was not found or is private \(401\): if it exists, set HF_TOKEN/);
    const bad = await cli(['pull', 'hf:x/../y'], env());
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/not a Hugging Face name/);
    const offline = await cli(['inspect', 'hf:tessera-test/stories260K-GGUF:F16'], { ...env(), HF_HUB_OFFLINE: '1' });
    expect(offline.status).toBe(1);
    expect(offline.stderr).toMatch(/HF_HUB_OFFLINE is set and hf:tessera-test\/stories260K-GGUF:F16 is not in the cache/);
  });
});
