/**
 * `hf:` model URIs. The shapes are node-llama-cpp's and llama.cpp's, plus huggingface_hub's
 * `@revision`:
 *
 *   hf:OWNER/REPO/PATH/FILE.gguf[#REV]   one file (node-llama-cpp)
 *   hf:OWNER/REPO:QUANT[#REV]            the GGUF file of the repo whose name has QUANT as a word
 *                                        (llama.cpp's `-hf owner/repo:quant`, node-llama-cpp's `hf:owner/repo:quant`)
 *   hf:OWNER/REPO[#REV]                  a Hugging Face model directory (config.json, tokenizer, safetensors),
 *                                        or the repo's only GGUF file
 *   hf:OWNER/REPO@REV[/PATH]             the revision as huggingface_hub's HfFileSystem writes it
 *
 * `hf://` is accepted for `hf:`. REV is a branch, tag or commit hash (default main).
 */
import { HubError } from './errors.js';

export interface HfUri {
  owner: string;
  name: string;
  /** `owner/name`. */
  repo: string;
  /** A file in the repo ('/'-separated), or null for the repo itself. */
  path: string | null;
  /** The quantisation a GGUF file is chosen by (`:Q4_0`), or null. */
  quant: string | null;
  /** Branch, tag or commit hash. */
  revision: string;
}

/** Hub repo owner and name rules (huggingface_hub's validate_repo_id): word characters, '-', '.'; no '--' or '..'. */
const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;
const QUANT = /^[A-Za-z0-9_]{1,32}$/;
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

export function isHfUri(s: string): boolean {
  return s.startsWith('hf:');
}

function checkName(s: string, what: string, uri: string): string {
  if (!NAME.test(s) || s.includes('--') || s.includes('..'))
    throw new HubError('usage', `${what} ${JSON.stringify(s)} in ${uri} is not a Hugging Face name (letters, digits, '-', '_', '.'; e.g. hf:owner/repo/file.gguf)`);
  return s;
}

/**
 * A '/'-separated relative path that stays inside the directory it is joined to: no empty, '.' or
 * '..' segments, no backslashes, control characters or leading '/'. `what` names it in the error.
 */
export function checkRelativePath(p: string, what: string): string {
  const segs = p.split('/');
  if (p.length === 0 || p.length > 1024 || /[\\\x00-\x1f\x7f]/.test(p) || segs.some((s) => s === '' || s === '.' || s === '..' || s.length > 255))
    throw new HubError('protocol', `${what} ${JSON.stringify(p)} is not a safe relative path (no '..', '.', empty segments, backslashes or control characters)`);
  return p;
}

export function checkRevision(rev: string, uri: string): string {
  try {
    return checkRelativePath(rev, 'revision');
  } catch {
    throw new HubError('usage', `revision ${JSON.stringify(rev)} in ${uri} is not a branch, tag or commit hash`);
  }
}

export function parseHfUri(uri: string): HfUri {
  if (!isHfUri(uri)) throw new HubError('usage', `expected an hf: URI (hf:owner/repo/file.gguf) but received ${JSON.stringify(uri)}`);
  let rest = uri.slice(uri.startsWith('hf://') ? 5 : 3);
  let revision: string | null = null;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    revision = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
  }
  const [owner = '', repoPart = '', ...pathParts] = rest.split('/');
  if (owner === '' || repoPart === '') throw new HubError('usage', `${JSON.stringify(uri)} names no repository (expected hf:owner/repo, hf:owner/repo/file.gguf or hf:owner/repo:QUANT)`);
  let name = repoPart;
  let quant: string | null = null;
  const at = name.indexOf('@');
  if (at >= 0) {
    if (revision !== null) throw new HubError('usage', `${uri} gives the revision twice (@ and #)`);
    revision = name.slice(at + 1);
    name = name.slice(0, at);
  }
  const colon = name.indexOf(':');
  if (colon >= 0) {
    quant = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!QUANT.test(quant)) throw new HubError('usage', `quantisation ${JSON.stringify(quant)} in ${uri} is not a quantisation name (e.g. Q4_0, Q8_0, F16)`);
  }
  checkName(owner, 'owner', uri);
  checkName(name, 'repository', uri);
  const joined = pathParts.join('/').replace(/\/$/, '');
  const path = joined === '' ? null : joined;
  if (path !== null && quant !== null) throw new HubError('usage', `${uri} gives both a file and a quantisation; give one (hf:owner/repo/file.gguf or hf:owner/repo:QUANT)`);
  if (path !== null) {
    try {
      checkRelativePath(path, 'file');
    } catch (err) {
      throw new HubError('usage', `${(err as Error).message} in ${uri}`);
    }
  }
  if (revision === '') revision = null;
  return { owner, name, repo: `${owner}/${name}`, path, quant, revision: revision === null ? 'main' : checkRevision(revision, uri) };
}

/** The canonical spelling of a parsed URI (node-llama-cpp's, revision after '#'). */
export function formatHfUri(u: HfUri): string {
  return `hf:${u.repo}${u.path !== null ? `/${u.path}` : ''}${u.quant !== null ? `:${u.quant}` : ''}${u.revision !== 'main' ? `#${u.revision}` : ''}`;
}
