/** Errors of the Hugging Face hub client: what went wrong, with the repo, file or URL at fault. */

/**
 * Why a pull failed. `kind` lets callers branch without parsing the message:
 * `auth` (401/403: private or gated, set HF_TOKEN), `not-found` (repo, revision or file),
 * `offline` (HF_HUB_OFFLINE and not cached), `network` (connection, timeout; a partial file is kept),
 * `protocol` (the server answered something a hub does not: redirect loops, sizes, hashes, unsafe names),
 * `disk` (no space, unwritable cache), `busy` (another process is downloading the same file),
 * `usage` (a malformed hf: URI or option).
 */
export type HubErrorKind = 'auth' | 'not-found' | 'offline' | 'network' | 'protocol' | 'disk' | 'busy' | 'usage';

export class HubError extends Error {
  override name = 'HubError';
  readonly kind: HubErrorKind;
  /** The HTTP status when the error is a server's answer, else null. */
  readonly status: number | null;
  constructor(kind: HubErrorKind, message: string, status: number | null = null, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.status = status;
  }
}
