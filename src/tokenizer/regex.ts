/**
 * Oniguruma / Rust-regex patterns (Hugging Face tokenizer.json, llama.cpp pre-tokenizers) parsed
 * into a syntax tree, each node carrying the JS `u`-mode source it becomes: `\s` becomes
 * llama.cpp's whitespace set, `(?i:...)` is case-expanded (ASCII, classes included), possessive
 * quantifiers become greedy, a class nested in a class is merged into it (`[^(\s|[.,])]`,
 * BLOOM), and a lone trailing run `C+$` gets a lookbehind so that a search tries each run once.
 * regex-safety.ts analyses the same tree, so what is checked is what runs.
 */
import { WHITESPACE_CLASS } from './unicode.js';

/** Inclusive code point range. */
export type Range = readonly [number, number];

/** One member of a character class: code point ranges or a Unicode property (`\p{...}` name), either possibly negated. */
export type ClassItem = { kind: 'ranges'; ranges: Range[]; neg: boolean } | { kind: 'prop'; name: string; neg: boolean };

/** The code points one step of the regex can consume: `neg` xor (some item holds). `js` is its JS source. */
export interface CharSet {
  js: string;
  neg: boolean;
  items: ClassItem[];
}

interface Span {
  /** Offsets into the original pattern, for error messages. */
  start: number;
  end: number;
  /** JS source of this node. */
  js: string;
}
export type RegexNode =
  | (Span & { type: 'char'; set: CharSet })
  | (Span & { type: 'seq'; items: RegexNode[] })
  | (Span & { type: 'alt'; branches: RegexNode[] })
  | (Span & { type: 'group'; body: RegexNode })
  | (Span & { type: 'look'; body: RegexNode; behind: boolean })
  | (Span & { type: 'assert' })
  | (Span & { type: 'backref' })
  | (Span & { type: 'repeat'; body: RegexNode; min: number; max: number });

export interface ParsedRegex {
  pattern: string;
  root: RegexNode;
  /** The JS source to compile with flags `gu`. */
  js: string;
}

/** Groups nested deeper than this are refused rather than risking the stack. */
const MAX_DEPTH = 200;

const range = (lo: number, hi = lo): Range => [lo, hi];
/** What `.` matches in JS without the `s` flag: anything but a line terminator. */
const LINE_TERMINATORS = [range(0x0a), range(0x0d), range(0x2028, 0x2029)];
const DIGITS = [range(0x30, 0x39)];
const WORD = [range(0x30, 0x39), range(0x41, 0x5a), range(0x5f), range(0x61, 0x7a)];
/** JS `\s` (ECMAScript WhiteSpace and LineTerminator), which `\S` inside a class keeps. */
const JS_SPACE = [range(0x09, 0x0d), range(0x20), range(0xa0), range(0x1680), range(0x2000, 0x200a), range(0x2028, 0x2029), range(0x202f), range(0x205f), range(0x3000), range(0xfeff)];
/** Any code point: a backreference or an escape this parser does not model. */
export const ANY_CHAR: CharSet = { js: '[^]', neg: true, items: [] };

const SYNTAX_CHARS = '^$\\.*+?()[]{}|/';
const SCRIPTS_WITHOUT_PREFIX = new Set(['Han', 'Hiragana', 'Katakana', 'Hangul']);
const isAsciiLetter = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const swapCase = (c: number) => c ^ 0x20;

/**
 * Parses a pattern; throws a SyntaxError naming the offset for what this translation cannot
 * carry to JS. Patterns it accepts may still be refused by the RegExp constructor.
 */
export function parseRegex(pattern: string): ParsedRegex {
  const p = new Parser(pattern);
  const root = p.alternation(false, 0);
  if (p.pos < pattern.length) throw p.error(`Expected '(' before this ')' but received none`);
  return { pattern, root, js: trailingRun(root) ?? root.js };
}

/**
 * `C+$` alone (DeepSeek's `\s+$`) matches only the run of C that ends the text, but a
 * backtracking search tries it from every position of every run of C: quadratic in a run's
 * length (40k spaces then a digit took 1.6 s). `(?<!C)C+$` matches the same text and starts
 * only where a run starts.
 */
function trailingRun(root: RegexNode): string | undefined {
  if (root.type !== 'seq' || root.items.length !== 2) return undefined;
  const [loop, end] = root.items as [RegexNode, RegexNode];
  if (loop.type !== 'repeat' || loop.max !== Infinity || end.type !== 'assert' || end.js !== '$') return undefined;
  let c = loop.body;
  while (c.type === 'group') c = c.body;
  return c.type === 'char' ? `(?<!${c.set.js})${root.js}` : undefined;
}

/** The llama.cpp whitespace class, parsed once from its JS class body. */
let whitespace: Range[] | undefined;
function whitespaceRanges(): Range[] {
  if (!whitespace) {
    const set = new Parser(`[${WHITESPACE_CLASS}]`).atom(false, 0) as { set: CharSet };
    whitespace = (set.set.items[0] as { ranges: Range[] }).ranges;
  }
  return whitespace;
}

class Parser {
  pos = 0;
  constructor(readonly src: string) {}

  error(msg: string, at = this.pos): SyntaxError {
    return new SyntaxError(`${msg} at offset ${at} of ${JSON.stringify(this.src.length > 80 ? this.src.slice(0, 80) + '...' : this.src)}`);
  }

  private peek(k = 0): string | undefined {
    return this.src[this.pos + k];
  }

  /** `a|b|...` up to a ')' or the end. */
  alternation(fold: boolean, depth: number): RegexNode {
    const start = this.pos;
    const branches = [this.sequence(fold, depth)];
    while (this.peek() === '|') {
      this.pos++;
      branches.push(this.sequence(fold, depth));
    }
    if (branches.length === 1) return branches[0]!;
    return { type: 'alt', branches, start, end: this.pos, js: branches.map((b) => b.js).join('|') };
  }

  private sequence(fold: boolean, depth: number): RegexNode {
    const start = this.pos;
    const items: RegexNode[] = [];
    while (this.pos < this.src.length && this.peek() !== '|' && this.peek() !== ')') items.push(this.quantified(fold, depth));
    if (items.length === 1) return items[0]!;
    return { type: 'seq', items, start, end: this.pos, js: items.map((i) => i.js).join('') };
  }

  private quantified(fold: boolean, depth: number): RegexNode {
    const start = this.pos;
    const body = this.atom(fold, depth);
    const q = this.quantifier();
    if (!q) return body;
    const lazy = this.peek() === '?';
    // Possessive (`a++`): JS has none; greedy matches the same strings on tokenizer patterns.
    if (lazy || this.peek() === '+') this.pos++;
    if (this.quantifierAhead()) throw this.error(`Expected one quantifier after ${JSON.stringify(this.src.slice(start, this.pos))} but received another`);
    return { type: 'repeat', body, min: q.min, max: q.max, start, end: this.pos, js: body.js + q.text + (lazy ? '?' : '') };
  }

  private quantifierAhead(): boolean {
    const c = this.peek();
    return c === '*' || c === '+' || c === '?' || (c === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.pos)));
  }

  private quantifier(): { min: number; max: number; text: string } | undefined {
    const c = this.peek();
    if (c === '*' || c === '+' || c === '?') {
      this.pos++;
      return { min: c === '+' ? 1 : 0, max: c === '?' ? 1 : Infinity, text: c };
    }
    if (c !== '{') return undefined;
    const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos));
    // Not a quantifier: a literal '{', which JS's u mode then refuses.
    if (!m) return undefined;
    this.pos += m[0].length;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
    return { min, max, text: m[0] };
  }

  atom(fold: boolean, depth: number): RegexNode {
    const start = this.pos;
    const c = this.src.codePointAt(this.pos)!;
    const ch = String.fromCodePoint(c);
    const char = (set: CharSet): RegexNode => ({ type: 'char', set, start, end: this.pos, js: set.js });
    switch (ch) {
      case '(':
        return this.group(fold, depth);
      case '[': {
        return char(this.charClass(fold, depth));
      }
      case '\\':
        return this.escape(fold);
      case '.':
        this.pos++;
        return char({ js: '.', neg: true, items: [{ kind: 'ranges', ranges: LINE_TERMINATORS, neg: false }] });
      case '^':
      case '$':
        this.pos++;
        return { type: 'assert', start, end: this.pos, js: ch };
      case '*':
      case '+':
      case '?':
        throw this.error(`Expected something to repeat before '${ch}' but received nothing`);
    }
    if (this.quantifierAhead()) throw this.error(`Expected something to repeat before '${this.src.slice(this.pos).match(/^\{[^}]*\}/)![0]}' but received nothing`);
    this.pos += ch.length;
    if (fold && isAsciiLetter(c)) {
      const lo = String.fromCharCode(c | 0x20), up = String.fromCharCode(c & ~0x20);
      return char({ js: `[${lo}${up}]`, neg: false, items: [{ kind: 'ranges', ranges: [range(c), range(swapCase(c))], neg: false }] });
    }
    return char({ js: ch, neg: false, items: [{ kind: 'ranges', ranges: [range(c)], neg: false }] });
  }

  private group(fold: boolean, depth: number): RegexNode {
    const start = this.pos;
    if (depth >= MAX_DEPTH) throw this.error(`Expected groups nested at most ${MAX_DEPTH} deep but received deeper`);
    this.pos++;
    let head = '(';
    let kind: 'group' | 'ahead' | 'behind' = 'group';
    if (this.peek() === '?') {
      const rest = this.src.slice(this.pos);
      const named = /^\?<([A-Za-z_$][\w$]*)>/.exec(rest);
      if (rest.startsWith('?:')) head = '(?:';
      else if (rest.startsWith('?i:')) {
        head = '(?:';
        fold = true;
        this.pos++;
      } else if (rest.startsWith('?=') || rest.startsWith('?!')) {
        head = '(' + rest.slice(0, 2);
        kind = 'ahead';
      } else if (rest.startsWith('?<=') || rest.startsWith('?<!')) {
        head = '(' + rest.slice(0, 3);
        kind = 'behind';
      } else if (named) head = '(' + named[0];
      else throw this.error(`Expected a group JS can run ((, (?:, (?i:, (?=, (?!, (?<=, (?<!, (?<name>) but received ${JSON.stringify('(' + rest.slice(0, 4))}`, start);
      this.pos += head.length - 1;
    }
    const body = this.alternation(fold, depth + 1);
    if (this.peek() !== ')') throw this.error(`Expected ')' to close the group opened at offset ${start} but received ${this.pos < this.src.length ? JSON.stringify(this.peek()) : 'the end'}`);
    this.pos++;
    const js = head + body.js + ')';
    const span = { start, end: this.pos, js };
    if (kind === 'group') return { type: 'group', body, ...span };
    return { type: 'look', body, behind: kind === 'behind', ...span };
  }

  /** `\x` outside a class. */
  private escape(fold: boolean): RegexNode {
    const start = this.pos;
    const d = this.src[this.pos + 1];
    if (d === undefined) throw this.error(`Expected an escape after '\\' at the end of regex but received nothing`);
    if (d === 'b' || d === 'B') {
      this.pos += 2;
      return { type: 'assert', start, end: this.pos, js: '\\' + d };
    }
    if (d >= '1' && d <= '9') {
      const m = /^\\\d+/.exec(this.src.slice(this.pos))!;
      this.pos += m[0].length;
      return { type: 'backref', start, end: this.pos, js: m[0] };
    }
    if (d === 'k' && this.src[this.pos + 2] === '<') {
      const close = this.src.indexOf('>', this.pos);
      if (close < 0) throw this.error(`Expected '>' to close the backreference name but received the end`);
      this.pos = close + 1;
      return { type: 'backref', start, end: this.pos, js: this.src.slice(start, this.pos) };
    }
    const e = this.classEscape(false);
    const set: CharSet =
      e.kind === 'char'
        ? { js: e.js, neg: false, items: [{ kind: 'ranges', ranges: [range(e.cp)], neg: false }] }
        : e.kind === 'set'
          ? e.set
          : ANY_CHAR;
    void fold; // Escapes are not case-folded, as before this parser: `(?i:\x41)` stays `A`.
    return { type: 'char', set, start, end: this.pos, js: e.kind === 'set' ? e.set.js : e.js };
  }

  /**
   * One escape at `pos` (a '\'), inside a class or not: a single code point, a set (`\d`, `\p{L}`,
   * `\s`), or an escape left for JS to judge (modelled as any character).
   */
  private classEscape(inClass: boolean): { kind: 'char'; cp: number; js: string } | { kind: 'set'; set: CharSet; body: string } | { kind: 'other'; js: string } {
    const start = this.pos;
    const d = this.src[this.pos + 1]!;
    this.pos += 2;
    const ranges = (rs: Range[], neg: boolean, js: string, body = js): { kind: 'set'; set: CharSet; body: string } => ({
      kind: 'set',
      set: { js, neg: false, items: [{ kind: 'ranges', ranges: rs, neg }] },
      body,
    });
    switch (d) {
      case 's': {
        const ws = whitespaceRanges();
        return ranges(ws, false, `[${WHITESPACE_CLASS}]`, WHITESPACE_CLASS);
      }
      case 'S':
        // Outside a class it is llama.cpp's set; inside, JS's own `\S` (no set difference in u mode).
        return inClass ? ranges(JS_SPACE, true, '\\S') : ranges(whitespaceRanges(), true, `[^${WHITESPACE_CLASS}]`);
      case 'd':
      case 'D':
        return ranges(DIGITS, d === 'D', '\\' + d);
      case 'w':
      case 'W':
        return ranges(WORD, d === 'W', '\\' + d);
      case 'p':
      case 'P': {
        if (this.src[this.pos] !== '{') throw this.error(`Expected '{' after \\${d} but received ${JSON.stringify(this.src[this.pos] ?? 'the end')}`, start);
        const close = this.src.indexOf('}', this.pos);
        if (close < 0) throw this.error(`Expected '}' to close \\${d}{ but received the end`, start);
        let name = this.src.slice(this.pos + 1, close);
        // Oniguruma accepts script names bare; JS wants Script=.
        if (SCRIPTS_WITHOUT_PREFIX.has(name)) name = `Script=${name}`;
        this.pos = close + 1;
        const js = `\\${d}{${name}}`;
        if (name === 'ASCII') return ranges([range(0, 0x7f)], d === 'P', js);
        return { kind: 'set', set: { js, neg: false, items: [{ kind: 'prop', name, neg: d === 'P' }] }, body: js };
      }
      case 't': return { kind: 'char', cp: 0x09, js: '\\t' };
      case 'n': return { kind: 'char', cp: 0x0a, js: '\\n' };
      case 'v': return { kind: 'char', cp: 0x0b, js: '\\v' };
      case 'f': return { kind: 'char', cp: 0x0c, js: '\\f' };
      case 'r': return { kind: 'char', cp: 0x0d, js: '\\r' };
      case '0':
        if (!/\d/.test(this.src[this.pos] ?? '')) return { kind: 'char', cp: 0, js: '\\0' };
        break;
      case 'b':
        if (inClass) return { kind: 'char', cp: 0x08, js: '\\b' };
        break;
      case '-':
        if (inClass) return { kind: 'char', cp: 0x2d, js: '\\-' };
        break;
      case 'c': {
        const l = this.src.charCodeAt(this.pos);
        if (isAsciiLetter(l)) {
          this.pos++;
          return { kind: 'char', cp: l % 32, js: this.src.slice(start, this.pos) };
        }
        break;
      }
      case 'x': {
        const m = /^[0-9A-Fa-f]{2}/.exec(this.src.slice(this.pos));
        if (m) {
          this.pos += 2;
          return { kind: 'char', cp: parseInt(m[0], 16), js: this.src.slice(start, this.pos) };
        }
        break;
      }
      case 'u': {
        const rest = this.src.slice(this.pos);
        const braced = /^\{([0-9A-Fa-f]{1,6})\}/.exec(rest);
        if (braced && parseInt(braced[1]!, 16) <= 0x10ffff) {
          this.pos += braced[0].length;
          return { kind: 'char', cp: parseInt(braced[1]!, 16), js: this.src.slice(start, this.pos) };
        }
        const m = /^[0-9A-Fa-f]{4}/.exec(rest);
        if (m) {
          this.pos += 4;
          let cp = parseInt(m[0], 16);
          // A surrogate pair written as two escapes is one code point in u mode.
          const lo = /^\\u(d[c-f][0-9a-f]{2})/i.exec(this.src.slice(this.pos));
          if (cp >= 0xd800 && cp <= 0xdbff && lo) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (parseInt(lo[1]!, 16) - 0xdc00);
            this.pos += 6;
          }
          return { kind: 'char', cp, js: this.src.slice(start, this.pos) };
        }
        break;
      }
      default:
        if (SYNTAX_CHARS.includes(d)) return { kind: 'char', cp: d.charCodeAt(0), js: '\\' + d };
    }
    // Anything else goes to JS as written; its u mode refuses escapes it does not know.
    return { kind: 'other', js: this.src.slice(start, this.pos) };
  }

  /** `[...]` at `pos`; a class nested inside is merged into it (Oniguruma's union). */
  private charClass(fold: boolean, depth: number, nested = false): CharSet {
    const start = this.pos;
    if (depth >= MAX_DEPTH) throw this.error(`Expected classes nested at most ${MAX_DEPTH} deep but received deeper`);
    this.pos++;
    let neg = false;
    if (this.peek() === '^') {
      neg = true;
      this.pos++;
    }
    if (nested && neg) throw this.error(`Expected no negated class inside a class (JS cannot write it) but received one`, start);
    let body = '';
    const items: ClassItem[] = [];
    const explicit: Range[] = [];
    // A ']' first in a class is a literal in Oniguruma.
    if (this.peek() === ']') {
      body += '\\]';
      explicit.push(range(0x5d));
      this.pos++;
    }
    for (;;) {
      if (this.pos >= this.src.length) throw this.error(`Expected ']' to close the class opened at offset ${start} but received the end`);
      const c = this.peek()!;
      if (c === ']') {
        this.pos++;
        break;
      }
      if (c === '[') {
        const inner = this.charClass(fold, depth + 1, true);
        body += inner.js.slice(1, -1);
        items.push(...inner.items);
        continue;
      }
      if (c === '&' && this.peek(1) === '&') throw this.error(`Expected no class intersection '&&' (JS's u mode has none) but received one`);
      const lo = this.classAtom();
      if (lo.kind === 'char' && this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== undefined) {
        const save = this.pos;
        this.pos++;
        const hi = this.classAtom();
        if (hi.kind === 'char') {
          body += `${lo.js}-${hi.js}`;
          explicit.push(range(lo.cp, Math.max(lo.cp, hi.cp)));
          continue;
        }
        this.pos = save;
      }
      if (lo.kind === 'char') {
        body += lo.js;
        explicit.push(range(lo.cp));
      } else if (lo.kind === 'set') {
        body += lo.body;
        items.push(...lo.set.items);
      } else {
        body += lo.js;
        items.push({ kind: 'ranges', ranges: [range(0, 0x10ffff)], neg: false });
      }
    }
    if (fold) {
      // (?i:[sdmt]) also matches 'S': add the other case of every ASCII letter the class names.
      const extra: Range[] = [];
      for (const [a, b] of explicit)
        for (const [l, h] of [[0x41, 0x5a], [0x61, 0x7a]] as const) {
          const x = Math.max(a, l), y = Math.min(b, h);
          if (x <= y) extra.push(range(swapCase(x), swapCase(y)));
        }
      const fresh = extra.filter(([a, b]) => !explicit.some(([x, y]) => x <= a && b <= y));
      for (const [a, b] of fresh) body += a === b ? String.fromCharCode(a) : `${String.fromCharCode(a)}-${String.fromCharCode(b)}`;
      explicit.push(...fresh);
    }
    if (explicit.length) items.unshift({ kind: 'ranges', ranges: explicit, neg: false });
    return { js: `[${neg ? '^' : ''}${body}]`, neg, items };
  }

  /** One member of a class: a literal code point, an escape, or a '[' kept literal by JS. */
  private classAtom(): ReturnType<Parser['classEscape']> {
    if (this.peek() === '\\') {
      if (this.pos + 1 >= this.src.length) throw this.error(`Expected an escape after '\\' at the end of regex but received nothing`);
      return this.classEscape(true);
    }
    const cp = this.src.codePointAt(this.pos)!;
    const ch = String.fromCodePoint(cp);
    this.pos += ch.length;
    return { kind: 'char', cp, js: ch };
  }
}
