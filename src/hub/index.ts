/** A Hugging Face hub client: `hf:` URIs, the shared HF cache, resumable downloads. */
export { pullModel, type PullOptions, type PullProgress, type PullResult } from './pull.js';
export { parseHfUri, formatHfUri, isHfUri, type HfUri } from './uri.js';
export { HubError, type HubErrorKind } from './errors.js';
export { defaultCacheDir } from './cache.js';
