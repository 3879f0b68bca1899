/** Tokenizers: GGUF (SentencePiece BPE, byte-level BPE, WordPiece) and Hugging Face tokenizer.json BPE. */
export { Tokenizer, type EncodeOptions } from './tokenizer.js';
export { StreamDecoder, type DecodeOptions } from './decoder.js';
export { ChatTemplateError, DEFAULT_TEMPLATE_LIMITS, type ChatMessage, type ChatTemplateOptions, type ChatTemplateLimits, type ChatTemplateFailure } from './chat-template.js';
export type { HuggingFaceSource } from './hf-json.js';
export { TOKEN_TYPE, type TokenType } from './vocab.js';
export { BYTE_TO_CHAR, CHAR_TO_BYTE } from './unicode.js';
