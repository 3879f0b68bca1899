/** What generation needs from a tokenizer (Tokenizer implements it; tests may pass a small stand-in). */
export interface StreamDecoder {
  push(id: number): string;
  flush(): string;
}

export interface TextTokenizer {
  encode(text: string, options?: { addBos?: boolean; parseSpecial?: boolean }): number[];
  createStreamDecoder(options?: { skipSpecial?: boolean }): StreamDecoder;
  /** Tokens that end generation (EOS, EOT, ...). */
  readonly eogIds: ReadonlySet<number>;
}
