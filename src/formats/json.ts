/**
 * JSON from model files (config.json, tokenizer.json, index and header JSON). JSON.parse takes
 * seconds on a few megabytes of nested brackets (a 10 MB config.json of `[[[[...` took 3.2 s), and
 * no model file nests deeper than a handful of levels, so nesting is bounded before parsing.
 */

/** Deepest nesting of arrays and objects accepted. tokenizer.json's deepest is about 6. */
export const MAX_JSON_DEPTH = 64;

/** JSON.parse, after a linear scan that refuses nesting deeper than maxDepth with a SyntaxError. */
export function parseJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > maxDepth) throw new SyntaxError(`nested deeper than ${maxDepth} levels at position ${i}`);
    } else if (c === 93 || c === 125) depth--;
  }
  return JSON.parse(text);
}
