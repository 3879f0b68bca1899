/** llama2.c checkpoints and tokenizer.bin at the field level, for mutation. */
import type { IntField } from '../mutate.js';

export const LLAMA2C_HEADER = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];

/** The 7 int32 header fields (and a few weights, whose values matter for finiteness). */
export function llama2cFields(b: Uint8Array): IntField[] {
  const out: IntField[] = LLAMA2C_HEADER.map((what, i) => ({ off: i * 4, width: 4, what }));
  return out.filter((f) => f.off + 4 <= b.length);
}

/** tokenizer.bin: max_token_length, then per token f32 score, i32 length, bytes. */
export function llama2cTokenizerFields(b: Uint8Array): IntField[] {
  const out: IntField[] = [];
  if (b.length < 4) return out;
  out.push({ off: 0, width: 4, what: 'max_token_length' });
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 4, i = 0;
  while (p + 8 <= b.length) {
    out.push({ off: p, width: 4, what: `score ${i}` }, { off: p + 4, width: 4, what: `len ${i}` });
    const len = dv.getInt32(p + 4, true);
    if (len < 0 || p + 8 + len > b.length) break;
    p += 8 + len;
    i++;
  }
  return out;
}
