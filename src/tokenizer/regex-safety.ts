/**
 * Refuses regexes from model files (tokenizer.json Split and Replace patterns) on which V8's
 * backtracking engine can take exponential or high-polynomial time: ReDoS by model file.
 *
 * The syntax tree (regex.ts, so the pattern that runs) becomes a Glushkov automaton, one state
 * per character step, that counts parallel paths (`(a+)+` steps from `a` to `a` two ways; JS
 * refusing empty loop rounds is modelled). A failing backtracking search tries every path, so
 * the automaton's ambiguity bounds its time (Weideman, van der Merwe, Berglund, Watson, CIAA
 * 2016), tested as Allauzen, Mohri and Rastogi (2008) do:
 *   - exponential: a state with two different loops reading the same text; found in the product
 *     automaton as a step where two paths part and a way back to a pair (s, s). `(a+)+$`,
 *     `(a|a)*c`, `(\w+\s?)+$`.
 *   - polynomial: states p != q with loops on one text w and a path p -> q on w, so a run of w
 *     splits between them in n ways: n^2 an attempt, n^3 a search (`\d+\d+x`); counted
 *     repetitions are unrolled, so `(.*a){20}` is found too.
 *   - finite but large: no loop, yet many paths read one text (`(?:a|a){30}`, 2^30); paths of
 *     one text are followed together and more than MAX_WAYS of them are refused.
 * Only states from which the match cannot end at once count: a matcher that backs into a state
 * from which it can end (no input left to read, no assertion on the way) succeeds there, so
 * the paths it tries in vain run through the other states alone. That is why `(a+)+` and
 * GPT-4o's `[\p{Lu}...]*[\p{Ll}...]+` (which ends its branch) pass.
 * Character classes are intersected exactly where code points are spelled out and, for
 * properties, over every combination of General_Category and other properties: never calling
 * disjoint what can overlap, at worst refusing a safe pattern.
 * Also refused: a backreference inside a repetition, a lookaround that can scan unboundedly far
 * inside a repetition, and patterns too big to check within a fixed budget.
 *
 * Accepted: one loop followed by something that can fail, retried from each start of a search,
 * is O(L^2) in the length L of a run of what it loops over, not exponential (a cubic pattern
 * took 28 s on 4k characters; this shape, 1.6 s on 40k). Released patterns have it, mostly
 * amortised (Llama 3's `\s*[\r\n]+` fails only where its `\s+` branch then takes the run),
 * so refusing it would refuse them. DeepSeek's `\s+$` is not amortised, and regex.ts rewrites
 * that form to try each run once. A file can still ask for `\d+x`: quadratic in a run of
 * digits, so a megabyte of them takes minutes; telling that from the amortised cases is left
 * undone.
 */
import { ANY_CHAR, parseRegex, type CharSet, type ParsedRegex, type Range, type RegexNode } from './regex.js';

/** Character steps a pattern may unroll into before the check refuses it as too large. */
const MAX_POSITIONS = 5000;
/** Steps a counted repetition may unroll into; beyond, `a{n,m}` is checked as `a{1,}` (which has more paths). */
const EXPAND_LIMIT = 256;
/** Work the product-automaton searches may do before the check gives up (and refuses). */
const STEP_BUDGET = 2_000_000;
/** Paths one text may take through the states a match cannot end from, beyond which the check refuses. */
const MAX_WAYS = 64;
/** Longer patterns are refused before parsing: real pre-tokenizer patterns are a few KiB. */
const MAX_PATTERN_LENGTH = 65_536;

/**
 * Compiles a regex that comes from a model file: translated as compileRegex does, then refused
 * with an Error naming `where` (the JSON path) and the reason when matching it can take
 * exponential or high-polynomial time.
 */
export function compileFileRegex(pattern: string, where: string): RegExp {
  // A verdict is the pattern's alone: a file repeating one pattern pays for one analysis.
  const known = SAFE.get(pattern);
  if (known !== undefined) return new RegExp(known, 'gu');
  if (pattern.length > MAX_PATTERN_LENGTH)
    throw new RangeError(`Expected a regex of at most ${MAX_PATTERN_LENGTH} characters for ${where} but received one of ${pattern.length}`);
  let parsed: ParsedRegex;
  let re: RegExp;
  try {
    parsed = parseRegex(pattern);
    re = new RegExp(parsed.js, 'gu');
  } catch (err) {
    throw new SyntaxError(`Expected a regex JS can run for ${where} but received ${show(pattern)}: ${(err as Error).message}`);
  }
  const why = backtrackingHazard(parsed);
  if (why !== undefined) throw new Error(`Expected a regex that cannot backtrack catastrophically for ${where} but received ${show(pattern)}: ${why}`);
  if (SAFE.size >= 256) SAFE.clear();
  SAFE.set(pattern, parsed.js);
  return re;
}

/** Patterns found safe, with their JS translation. */
const SAFE = new Map<string, string>();

/** Why matching this regex with a backtracking engine can take exponential or high-polynomial time; undefined when it cannot. */
export function backtrackingHazard(parsed: ParsedRegex): string | undefined {
  const budget = { steps: 0 };
  try {
    analyse(parsed.pattern, parsed.root, treeInfo(parsed.root), budget);
    return undefined;
  } catch (err) {
    if (err instanceof Hazard) return err.message;
    throw err;
  }
}

function show(pattern: string): string {
  return JSON.stringify(pattern.length > 80 ? pattern.slice(0, 80) + '...' : pattern);
}

class Hazard extends Error {}

// ---- syntax tree bookkeeping ------------------------------------------------------------

type Repeat = RegexNode & { type: 'repeat' };
type Look = RegexNode & { type: 'look' };
interface NodeInfo {
  /** Pre-order number; a node's subtree is ids [id, last]. */
  id: number;
  last: number;
  parent: RegexNode | undefined;
}
type Tree = Map<RegexNode, NodeInfo>;

function children(n: RegexNode): RegexNode[] {
  switch (n.type) {
    case 'seq': return n.items;
    case 'alt': return n.branches;
    case 'group': case 'look': case 'repeat': return [n.body];
    default: return [];
  }
}

function treeInfo(root: RegexNode): Tree {
  const info: Tree = new Map();
  let next = 0;
  const walk = (n: RegexNode, parent: RegexNode | undefined): void => {
    const rec: NodeInfo = { id: next++, last: 0, parent };
    info.set(n, rec);
    for (const c of children(n)) walk(c, n);
    rec.last = next - 1;
  };
  walk(root, undefined);
  return info;
}

/** Whether the node can consume unboundedly much text (a lookaround over it rescans that far). */
function unbounded(n: RegexNode): boolean {
  if (n.type === 'backref' || (n.type === 'repeat' && n.max === Infinity)) return true;
  return children(n).some(unbounded);
}

const text = (src: string, n: RegexNode) => src.slice(n.start, n.end);

// ---- automaton --------------------------------------------------------------------------

/** A Glushkov fragment: entry and exit states with path counts (saturating at 2). */
interface Frag {
  first: Map<number, number>;
  last: Map<number, number>;
  /** Exit states reached with no assertion on the way out. */
  lastClean: Set<number>;
  /** Ways to match the empty string (0, 1, 2+). */
  nullable: number;
  nullableClean: boolean;
}
interface Step {
  to: number;
  count: number;
  /** Pre-order id of the syntax node that made this step (a loop's own or one inside it). */
  by: number;
}
interface RepeatInstance {
  node: Repeat;
  /** States [lo, hi) were made while building this repeat. */
  lo: number;
  hi: number;
  loops: boolean;
}

/** Path counts are kept exactly up to MAX_WAYS: `(?:|)(?:|)...x` has 2^k empty ways to reach x. */
const sat = (n: number) => Math.min(n, MAX_WAYS + 1);
const emptyFrag = (clean: boolean): Frag => ({ first: new Map(), last: new Map(), lastClean: new Set(), nullable: 1, nullableClean: clean });

function addScaled(into: Map<number, number>, from: Map<number, number>, k: number): void {
  if (k === 0) return;
  for (const [s, c] of from) into.set(s, sat((into.get(s) ?? 0) + c * k));
}

class Builder {
  readonly sets: CharSet[] = [];
  readonly nodes: RegexNode[] = [];
  readonly out: Step[][] = [];
  readonly repeats: RepeatInstance[] = [];
  readonly looks: { node: Look; inLoop: boolean }[] = [];
  private readonly seen = new Set<RegexNode>();
  private readonly sizes = new Map<RegexNode, number>();

  constructor(
    readonly src: string,
    readonly tree: Tree,
  ) {}

  private id(n: RegexNode): number {
    return this.tree.get(n)!.id;
  }

  private state(set: CharSet, node: RegexNode): number {
    if (this.sets.length >= MAX_POSITIONS)
      throw new Hazard(`the pattern is too large to check for catastrophic backtracking (over ${MAX_POSITIONS} character steps once counted repetitions are unrolled)`);
    this.sets.push(set);
    this.nodes.push(node);
    this.out.push([]);
    return this.sets.length - 1;
  }

  private link(from: Map<number, number>, to: Map<number, number>, by: number): void {
    for (const [l, a] of from) for (const [f, b] of to) this.out[l]!.push({ to: f, count: sat(a * b), by });
  }

  private concat(a: Frag, b: Frag, by: number): Frag {
    this.link(a.last, b.first, by);
    const first = new Map(a.first);
    addScaled(first, b.first, a.nullable);
    const last = new Map(b.last);
    addScaled(last, a.last, b.nullable);
    const lastClean = new Set(b.lastClean);
    if (b.nullableClean) for (const s of a.lastClean) lastClean.add(s);
    return { first, last, lastClean, nullable: sat(a.nullable * b.nullable), nullableClean: a.nullableClean && b.nullableClean };
  }

  /** Character steps a node unrolls into, as build() will unroll it. */
  private size(n: RegexNode): number {
    let s = this.sizes.get(n);
    if (s !== undefined) return s;
    if (n.type === 'char' || n.type === 'backref') s = 1;
    else if (n.type === 'look' || n.type === 'assert') s = 0;
    else if (n.type === 'repeat') {
      const b = this.size(n.body);
      const { min, max } = this.bounds(n);
      s = b * (max === Infinity ? Math.max(min, 1) : max);
    } else s = children(n).reduce((acc, c) => acc + this.size(c), 0);
    this.sizes.set(n, s);
    return s;
  }

  /** The repetition count build() uses: exact, or `{min(n,1),}` when unrolling would be too big. */
  private bounds(n: Repeat): { min: number; max: number } {
    const b = this.size(n.body);
    const copies = n.max === Infinity ? n.min + 1 : n.max;
    if (Math.max(b, 1) * copies > EXPAND_LIMIT) return { min: Math.min(n.min, 1), max: Infinity };
    return { min: n.min, max: n.max };
  }

  build(n: RegexNode, inLoop: boolean): Frag {
    switch (n.type) {
      case 'char': {
        const s = this.state(n.set, n);
        return { first: new Map([[s, 1]]), last: new Map([[s, 1]]), lastClean: new Set([s]), nullable: 0, nullableClean: false };
      }
      case 'backref': {
        if (inLoop) throw new Hazard(`backreference \`${text(this.src, n)}\` inside a repetition can take exponential time`);
        // It matches what its group matched: modelled as any text, which has every path that can.
        const s = this.state(ANY_CHAR, n);
        this.out[s]!.push({ to: s, count: 1, by: this.id(n) });
        return { first: new Map([[s, 1]]), last: new Map([[s, 1]]), lastClean: new Set(), nullable: 1, nullableClean: false };
      }
      case 'assert':
        return emptyFrag(false);
      case 'look':
        if (!this.seen.has(n)) {
          this.seen.add(n);
          this.looks.push({ node: n, inLoop });
        }
        return emptyFrag(false);
      case 'group':
        return this.build(n.body, inLoop);
      case 'alt': {
        const out: Frag = { first: new Map(), last: new Map(), lastClean: new Set(), nullable: 0, nullableClean: false };
        for (const b of n.branches) {
          const f = this.build(b, inLoop);
          addScaled(out.first, f.first, 1);
          addScaled(out.last, f.last, 1);
          for (const s of f.lastClean) out.lastClean.add(s);
          out.nullable = sat(out.nullable + f.nullable);
          out.nullableClean ||= f.nullableClean;
        }
        return out;
      }
      case 'seq': {
        let acc = emptyFrag(true);
        for (const item of n.items) acc = this.concat(acc, this.build(item, inLoop), this.id(n));
        return acc;
      }
      case 'repeat':
        return this.repeat(n, inLoop);
    }
  }

  private repeat(n: Repeat, inLoop: boolean): Frag {
    const by = this.id(n);
    const lo = this.sets.length;
    const { min, max } = this.bounds(n);
    const inner = inLoop || n.max > 1;
    const parts: Frag[] = [];
    if (max === Infinity) {
      for (let i = 1; i < min; i++) parts.push(this.build(n.body, inner));
      const body = this.build(n.body, inner);
      this.link(body.last, body.first, by);
      // JS refuses a round that matches nothing once min is met, so `*` matches empty one way.
      parts.push(min === 0 ? { ...body, nullable: 1, nullableClean: true } : body);
    } else {
      for (let i = 0; i < min; i++) parts.push(this.build(n.body, inner));
      // a{0,3} as (a(a(a)?)?)?: each optional round is one more way, never an empty one.
      let opt: Frag | undefined;
      for (let k = 0; k < max - min; k++) {
        const a = this.build(n.body, inner);
        const f = opt ? this.concat(a, opt, by) : a;
        opt = { ...f, nullable: 1, nullableClean: true };
      }
      if (opt) parts.push(opt);
    }
    const frag = parts.reduce((acc, f) => this.concat(acc, f, by), emptyFrag(true));
    if (!this.seen.has(n)) {
      this.seen.add(n);
      this.repeats.push({ node: n, lo, hi: this.sets.length, loops: max === Infinity });
    }
    return frag;
  }
}

// ---- character set intersection -------------------------------------------------------

const GC = ['Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe', 'Pi', 'Pf', 'Po', 'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Cs', 'Co', 'Cn'];
const GC_GROUPS: Record<string, string[]> = {
  L: ['Lu', 'Ll', 'Lt', 'Lm', 'Lo'],
  LC: ['Lu', 'Ll', 'Lt'],
  M: ['Mn', 'Mc', 'Me'],
  N: ['Nd', 'Nl', 'No'],
  P: ['Pc', 'Pd', 'Ps', 'Pe', 'Pi', 'Pf', 'Po'],
  S: ['Sm', 'Sc', 'Sk', 'So'],
  Z: ['Zs', 'Zl', 'Zp'],
  C: ['Cc', 'Cf', 'Cs', 'Co', 'Cn'],
};
/** Long General_Category names (Unicode PropertyValueAliases.txt) -> short. */
const GC_LONG: Record<string, string> = {
  Letter: 'L', Cased_Letter: 'LC', Uppercase_Letter: 'Lu', Lowercase_Letter: 'Ll', Titlecase_Letter: 'Lt', Modifier_Letter: 'Lm', Other_Letter: 'Lo',
  Mark: 'M', Combining_Mark: 'M', Nonspacing_Mark: 'Mn', Spacing_Mark: 'Mc', Enclosing_Mark: 'Me',
  Number: 'N', Decimal_Number: 'Nd', digit: 'Nd', Letter_Number: 'Nl', Other_Number: 'No',
  Punctuation: 'P', punct: 'P', Connector_Punctuation: 'Pc', Dash_Punctuation: 'Pd', Open_Punctuation: 'Ps', Close_Punctuation: 'Pe',
  Initial_Punctuation: 'Pi', Final_Punctuation: 'Pf', Other_Punctuation: 'Po',
  Symbol: 'S', Math_Symbol: 'Sm', Currency_Symbol: 'Sc', Modifier_Symbol: 'Sk', Other_Symbol: 'So',
  Separator: 'Z', Space_Separator: 'Zs', Line_Separator: 'Zl', Paragraph_Separator: 'Zp',
  Other: 'C', Control: 'Cc', cntrl: 'Cc', Format: 'Cf', Surrogate: 'Cs', Private_Use: 'Co', Unassigned: 'Cn',
};

/** The General_Category values a property name selects, or undefined for any other property. */
function categories(name: string): number[] | undefined {
  let v = name;
  const eq = name.indexOf('=');
  if (eq >= 0) {
    const k = name.slice(0, eq);
    if (k !== 'General_Category' && k !== 'gc') return undefined;
    v = name.slice(eq + 1);
  } else if (v === 'Any') return GC.map((_, i) => i);
  else if (v === 'Assigned') return GC.map((_, i) => i).filter((i) => GC[i] !== 'Cn');
  v = GC_LONG[v] ?? v;
  const names = GC_GROUPS[v] ?? (GC.includes(v) ? [v] : undefined);
  return names?.map((g) => GC.indexOf(g));
}

/** Cells up to this many code points are tested one code point at a time. */
const SMALL_CELL = 32_768;
/** Code points one intersection may test one by one before it reasons by properties alone. */
const CELL_BUDGET = 131_072;
/** Properties other than General_Category one intersection may combine (2^n cases). */
const MAX_FREE_PROPERTIES = 10;

const inRanges = (rs: readonly Range[], c: number) => rs.some(([a, b]) => a <= c && c <= b);

class SetAlgebra {
  private readonly cache = new Map<string, boolean>();
  private readonly compiled = new Map<string, RegExp | null>();

  constructor(private readonly budget: { steps: number }) {}

  /** Whether some code point is in every set. Never false when one is; may be true when none is. */
  intersects(sets: CharSet[]): boolean {
    const uniq = [...new Map(sets.map((s) => [s.js, s])).values()];
    if (uniq.length <= 1) return true;
    const key = uniq.map((s) => s.js).sort().join('\u0000');
    let r = this.cache.get(key);
    if (r === undefined) this.cache.set(key, (r = this.compute(uniq)));
    return r;
  }

  private matcher(set: CharSet): RegExp | null {
    let re = this.compiled.get(set.js);
    if (re === undefined) {
      try {
        re = new RegExp(`^(?:${set.js})$`, 'u');
      } catch {
        re = null;
      }
      this.compiled.set(set.js, re);
    }
    return re;
  }

  private compute(sets: CharSet[]): boolean {
    // Cut the code space where any spelled-out range starts or ends: inside a cell, every
    // range item is constant and only properties vary.
    const cuts = new Set([0, 0x110000]);
    for (const s of sets) for (const it of s.items) if (it.kind === 'ranges') for (const [a, b] of it.ranges) cuts.add(a).add(b + 1);
    const bounds = [...cuts].sort((x, y) => x - y);
    const matchers = sets.map((s) => this.matcher(s));
    let tested = 0;
    for (let i = 0; i + 1 < bounds.length; i++) {
      const lo = bounds[i]!, hi = bounds[i + 1]!;
      const residual = sets.map((s) => {
        let fixed = false;
        const props: { name: string; neg: boolean }[] = [];
        for (const it of s.items) {
          if (it.kind === 'ranges') fixed ||= inRanges(it.ranges, lo) !== it.neg;
          else props.push(it);
        }
        return { neg: s.neg, fixed, props };
      });
      // A set that is decided on this cell without properties and says no rules the cell out.
      if (residual.some((r) => !r.fixed && r.props.length === 0 && !r.neg)) continue;
      if (residual.some((r) => r.fixed && r.neg)) continue;
      if (residual.every((r) => r.props.length === 0 || r.fixed)) return true;
      if (hi - lo <= SMALL_CELL && tested + (hi - lo) <= CELL_BUDGET && matchers.every((m) => m !== null)) {
        tested += hi - lo;
        spend(this.budget, (hi - lo) >> 6);
        for (let c = lo; c < hi; c++) {
          const ch = String.fromCodePoint(c);
          if (matchers.every((m) => m!.test(ch))) return true;
        }
        continue;
      }
      if (this.propertiesAgree(residual)) return true;
    }
    return false;
  }

  /**
   * Whether some code point could satisfy every residual set: General_Category takes each of its
   * values in turn; any other property is free (as if every combination occurred).
   */
  private propertiesAgree(residual: { neg: boolean; fixed: boolean; props: { name: string; neg: boolean }[] }[]): boolean {
    const free = [...new Set(residual.flatMap((r) => r.props.filter((p) => categories(p.name) === undefined).map((p) => p.name)))];
    if (free.length > MAX_FREE_PROPERTIES) return true;
    spend(this.budget, (GC.length << free.length) >> 6);
    const cats = new Map<string, Set<number>>();
    for (const r of residual) for (const p of r.props) if (!cats.has(p.name)) cats.set(p.name, new Set(categories(p.name) ?? []));
    for (let g = 0; g < GC.length; g++)
      for (let mask = 0; mask < 1 << free.length; mask++) {
        const holds = (name: string) => {
          const f = free.indexOf(name);
          return f >= 0 ? ((mask >> f) & 1) === 1 : cats.get(name)!.has(g);
        };
        if (residual.every((r) => r.neg !== (r.fixed || r.props.some((p) => holds(p.name) !== p.neg)))) return true;
      }
    return false;
  }
}

// ---- the checks -------------------------------------------------------------------------

/** Steps between the kept states: state -> successor -> number of distinct steps. */
type Graph = Map<number, Map<number, number>>;

function graphOf(b: Builder, states: number[], by?: [number, number]): Graph {
  const g: Graph = new Map(states.map((s) => [s, new Map<number, number>()]));
  for (const from of states) {
    const succ = g.get(from)!;
    for (const st of b.out[from]!) {
      if (!g.has(st.to) || (by && (st.by < by[0] || st.by > by[1]))) continue;
      succ.set(st.to, sat((succ.get(st.to) ?? 0) + st.count));
    }
  }
  return g;
}

/** Tarjan's strongly connected components, iteratively; returns the component index of each node. */
function components(nodes: Iterable<number>, next: (n: number) => Iterable<number>, budget: { steps: number }): Map<number, number> {
  const index = new Map<number, number>(), low = new Map<number, number>(), comp = new Map<number, number>();
  const stack: number[] = [];
  const onStack = new Set<number>();
  let counter = 0, ncomp = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: { n: number; it: Iterator<number> }[] = [{ n: root, it: next(root)[Symbol.iterator]() }];
    index.set(root, counter);
    low.set(root, counter++);
    stack.push(root);
    onStack.add(root);
    while (work.length) {
      const top = work[work.length - 1]!;
      const r = top.it.next();
      spend(budget);
      if (!r.done) {
        const m = r.value;
        if (!index.has(m)) {
          index.set(m, counter);
          low.set(m, counter++);
          stack.push(m);
          onStack.add(m);
          work.push({ n: m, it: next(m)[Symbol.iterator]() });
        } else if (onStack.has(m)) low.set(top.n, Math.min(low.get(top.n)!, index.get(m)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1]!.n;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.n)!));
      }
      if (low.get(top.n) === index.get(top.n)) {
        for (;;) {
          const m = stack.pop()!;
          onStack.delete(m);
          comp.set(m, ncomp);
          if (m === top.n) break;
        }
        ncomp++;
      }
    }
  }
  return comp;
}

function spend(budget: { steps: number }, n = 1): void {
  budget.steps += n;
  if (budget.steps > STEP_BUDGET)
    throw new Hazard(`the pattern is too complex to check for catastrophic backtracking (the check gave up after ${STEP_BUDGET} steps)`);
}

/**
 * A backtracking matcher only keeps working on paths that fail: a path through a state from
 * which the match can end (no more input, no assertion) succeeds as soon as the matcher backs
 * into that state. So the work of a failing attempt is the number of paths through the other
 * states, and the checks look at those alone.
 */
function analyse(src: string, root: RegexNode, tree: Tree, budget: { steps: number }, backwards = false): void {
  const b = new Builder(src, tree);
  const whole = b.build(root, false);
  const overlap = overlapper(b, new SetAlgebra(budget), budget);
  // A lookbehind matches backwards, where this forward notion says nothing: there, none end.
  const ends = backwards ? new Set<number>() : whole.lastClean;
  const failing = (lo: number, hi: number) => {
    const out: number[] = [];
    for (let s = lo; s < hi; s++) if (!ends.has(s)) out.push(s);
    return out;
  };

  for (const { node, inLoop } of b.looks) {
    if (inLoop && unbounded(node.body))
      throw new Hazard(`lookaround \`${text(src, node)}\` inside a repetition can rescan the rest of the text on every round: polynomial time`);
    analyse(src, node.body, tree, budget, backwards || node.behind);
  }

  // Exponential: innermost loops first, each with only the steps made inside it, so the
  // message names the smallest repetition at fault.
  const loops = b.repeats.filter((r) => r.loops).sort((x, y) => span(tree, x.node) - span(tree, y.node) || x.lo - y.lo);
  for (const r of loops) {
    const info = tree.get(r.node)!;
    if (exponential(graphOf(b, failing(r.lo, r.hi), [info.id, info.last]), overlap, budget)) {
      const nested = children(r.node).some(function has(n: RegexNode): boolean {
        return (n.type === 'repeat' && n.max > 1) || n.type === 'backref' || children(n).some(has);
      });
      const t = text(src, r.node);
      throw new Hazard(
        nested
          ? `nested quantifier \`${t}\` can take exponential time: its inner and outer repetitions can split the same text in exponentially many ways`
          : `\`${t}\` can take exponential time: a round of it can match the same text in more than one way, so a failing match retries exponentially many combinations`,
      );
    }
  }

  const failingGraph = graphOf(b, failing(0, b.sets.length));
  const pair = polynomial(failingGraph, b, overlap, budget);
  if (pair) {
    const [p, q] = pair;
    const rp = loopOf(tree, b.nodes[p]!), rq = loopOf(tree, b.nodes[q]!);
    const tp = text(src, rp ?? b.nodes[p]!), tq = text(src, rq ?? b.nodes[q]!);
    let who = `\`${tp}\` and \`${tq}\``;
    if (rp && rp === rq) {
      // Two unrolled copies of one loop: name the counted repetition that copied it.
      let up = tree.get(rp)!.parent;
      while (up && !(up.type === 'repeat' && up.max > 1)) up = tree.get(up)!.parent;
      who = up ? `copies of \`${tp}\` made by \`${text(src, up)}\`` : `\`${tp}\``;
    }
    throw new Hazard(
      `${who} can take polynomial time: they can match the same run of text and what follows can fail, so a failing match retries every split of the run (cubic or worse over a search)`,
    );
  }

  if (whole.nullable > MAX_WAYS)
    throw new Hazard(`\`${src.length > 60 ? src.slice(0, 60) + '...' : src}\` can take exponential time in its length: it can match the empty text in more than ${MAX_WAYS} ways, and a failing match tries them all`);
  const all: number[] = [];
  for (let s = 0; s < b.sets.length; s++) all.push(s);
  const heavy = manyWays(graphOf(b, all), (s) => !ends.has(s), whole.first, whole.last, overlap, budget);
  if (heavy) {
    // Unrolled copies share syntax nodes: name the outermost repetition that made them, if any.
    let culprit = commonAncestor(tree, heavy.map((s) => b.nodes[s]!));
    for (let up: RegexNode | undefined = culprit; up; up = tree.get(up)!.parent) if (up.type === 'repeat' && up.max > 1) culprit = up;
    const t = text(src, culprit);
    throw new Hazard(
      `\`${t.length > 60 ? t.slice(0, 60) + '...' : t}\` can take exponential time in its length: it can match the same text in more than ${MAX_WAYS} ways, and a failing match tries them all`,
    );
  }
}

function commonAncestor(tree: Tree, nodes: RegexNode[]): RegexNode {
  const chain = (n: RegexNode) => {
    const out: RegexNode[] = [];
    for (let up: RegexNode | undefined = n; up; up = tree.get(up)!.parent) out.push(up);
    return out;
  };
  let common = chain(nodes[0]!);
  for (const n of nodes.slice(1)) {
    const mine = new Set(chain(n));
    common = common.filter((a) => mine.has(a));
  }
  return common[0]!;
}

const span = (tree: Tree, n: RegexNode) => tree.get(n)!.last - tree.get(n)!.id;

/** The innermost repetition that can loop around this node. */
function loopOf(tree: Tree, n: RegexNode): RegexNode | undefined {
  for (let up = tree.get(n)!.parent; up; up = tree.get(up)!.parent) if (up.type === 'repeat' && up.max > 1) return up;
  return undefined;
}

/** Whether two states' character sets share a code point (cached per pair of distinct sets); `all` asks it of several. */
type Overlap = ((x: number, y: number) => boolean) & { all(states: number[]): boolean };

function overlapper(b: Builder, alg: SetAlgebra, budget: { steps: number }): Overlap {
  const ids = new Map<string, number>();
  const setId = b.sets.map((s) => {
    if (!ids.has(s.js)) ids.set(s.js, ids.size);
    return ids.get(s.js)!;
  });
  const cache = new Map<number, boolean>();
  const n = ids.size;
  const pair = (x: number, y: number): boolean => {
    const i = setId[x]!, j = setId[y]!;
    if (i === j) return true;
    const k = Math.min(i, j) * n + Math.max(i, j);
    let r = cache.get(k);
    if (r === undefined) {
      spend(budget);
      cache.set(k, (r = alg.intersects([b.sets[x]!, b.sets[y]!])));
    }
    return r;
  };
  return Object.assign(pair, {
    all: (states: number[]) => {
      spend(budget);
      return alg.intersects(states.map((s) => b.sets[s]!));
    },
  });
}

/**
 * Exponential ambiguity (a state with two different loops on the same text). In the product
 * automaton, pairs (s, s) of one component all reach each other along identical paths, so it
 * is enough to find a state x with two different steps into the component, to states x2, y2
 * that can read the same character, and a way from (x2, y2) back to some pair (s, s).
 */
function exponential(g: Graph, overlap: Overlap, budget: { steps: number }): boolean {
  const comp = components(g.keys(), (s) => g.get(s)!.keys(), budget);
  let n = 0;
  for (const s of g.keys()) n = Math.max(n, s + 1);
  const dead = new Set<number>();
  const backToDiagonal = (x0: number, y0: number): boolean => {
    const c = comp.get(x0);
    const seen = new Set<number>([x0 * n + y0]);
    const todo = [[x0, y0] as const];
    while (todo.length) {
      const [x, y] = todo.pop()!;
      for (const x2 of g.get(x)!.keys()) {
        if (comp.get(x2) !== c) continue;
        for (const y2 of g.get(y)!.keys()) {
          spend(budget);
          const k = x2 * n + y2;
          if (comp.get(y2) !== c || seen.has(k) || dead.has(k) || !overlap(x2, y2)) continue;
          if (x2 === y2) return true;
          seen.add(k);
          todo.push([x2, y2]);
        }
      }
    }
    for (const k of seen) dead.add(k);
    return false;
  };
  // States with the same steps out (common in these automata: every exit of a loop body
  // steps to the body's entries) need checking once.
  const done = new Set<string>();
  for (const [x, succ] of g) {
    const c = comp.get(x);
    const next = [...succ].filter(([t]) => comp.get(t) === c);
    if (next.some(([, count]) => count >= 2)) return true;
    const sig = next.map(([t]) => t).join(',');
    if (done.has(sig)) continue;
    done.add(sig);
    for (let i = 0; i < next.length; i++)
      for (let j = i + 1; j < next.length; j++) {
        const x2 = next[i]![0], y2 = next[j]![0];
        if (overlap(x2, y2) && backToDiagonal(x2, y2)) return true;
      }
  }
  return false;
}

/**
 * Polynomial ambiguity: states p != q and a text w with p -w-> p, p -w-> q and q -w-> q,
 * searched in the product of three copies of the automaton. Without exponential ambiguity p
 * and q lie in different components (else p -ww u-> p two ways, u a way back from q to p).
 * Returns [p, q].
 */
function polynomial(g: Graph, b: Builder, overlap: Overlap, budget: { steps: number }): [number, number] | undefined {
  const states = [...g.keys()];
  const comp = components(states, (s) => g.get(s)!.keys(), budget);
  const compSize = new Map<number, number>();
  for (const s of states) compSize.set(comp.get(s)!, (compSize.get(comp.get(s)!) ?? 0) + 1);
  const cyclic = states.filter((s) => g.get(s)!.has(s) || compSize.get(comp.get(s)!)! > 1);
  const preds = new Map<number, number[]>(states.map((s) => [s, []]));
  const compSucc = new Map<number, Set<number>>();
  for (const s of states)
    for (const t of g.get(s)!.keys()) {
      preds.get(t)!.push(s);
      const c = comp.get(s)!;
      if (comp.get(t) !== c) compSucc.set(c, (compSucc.get(c) ?? new Set()).add(comp.get(t)!));
    }
  const closure = <K>(memo: Map<K, Set<K>>, from: K, next: (k: K) => Iterable<K>): Set<K> => {
    let r = memo.get(from);
    if (r) return r;
    r = new Set([from]);
    const todo = [from];
    while (todo.length)
      for (const t of next(todo.pop()!)) {
        spend(budget);
        if (!r.has(t)) {
          r.add(t);
          todo.push(t);
        }
      }
    memo.set(from, r);
    return r;
  };
  // Components reachable from a component; states that reach a state.
  const fromComp = new Map<number, Set<number>>(), toState = new Map<number, Set<number>>();
  const n = b.sets.length;
  const key = (x: number, y: number, z: number) => (x * n + y) * n + z;
  const loop = new Map(cyclic.map((s) => [s, [...g.get(s)!.keys()].filter((t) => comp.get(t) === comp.get(s))]));
  for (const p of cyclic) {
    const compP = comp.get(p)!;
    const loopP = loop.get(p)!;
    for (const q of cyclic) {
      const compQ = comp.get(q)!;
      if (compQ === compP) continue;
      // The first character of w must be readable by both loops.
      if (!loopP.some((x) => loop.get(q)!.some((z) => overlap(x, z)))) continue;
      const fromP = closure(fromComp, compP, (c) => compSucc.get(c) ?? []);
      if (!fromP.has(compQ)) continue;
      const toQ = closure(toState, q, (s) => preds.get(s)!);
      const seen = new Set<number>();
      const todo: [number, number, number][] = [[p, p, q]];
      while (todo.length) {
        const [x, y, z] = todo.pop()!;
        for (const x2 of g.get(x)!.keys()) {
          if (comp.get(x2) !== compP) continue;
          for (const y2 of g.get(y)!.keys()) {
            if (!toQ.has(y2) || !fromP.has(comp.get(y2)!) || !overlap(x2, y2)) continue;
            for (const z2 of g.get(z)!.keys()) {
              spend(budget);
              if (comp.get(z2) !== compQ) continue;
              const k = key(x2, y2, z2);
              if (seen.has(k)) continue;
              if (!overlap(x2, z2) || !overlap(y2, z2) || !overlap.all([x2, y2, z2])) continue;
              if (x2 === p && y2 === q && z2 === q) return [p, q];
              seen.add(k);
              todo.push([x2, y2, z2]);
            }
          }
        }
      }
    }
  }
  return undefined;
}

/**
 * Finite but large ambiguity: `(?:a|a){30}` has no loop, yet 2^30 paths read thirty a's.
 * Follows the paths of one text at a time: a configuration holds how many paths (capped) end
 * in each state the match cannot end from, and the next character is one that every state of
 * a connected group of overlapping sets can read (a bound from above: one character can do no
 * more). Every path tries its next step, so states the match can end from count as targets
 * too; empty ways count (`(?:|)` has two). Returns the states of a group with more than
 * MAX_WAYS paths, after the first its text went through.
 */
function manyWays(
  g: Graph,
  failing: (s: number) => boolean,
  first: Map<number, number>,
  last: Map<number, number>,
  overlap: Overlap,
  budget: { steps: number },
): number[] | undefined {
  const seen = new Set<string>();
  // Each configuration keeps the first state its text went through, to name the culprit.
  const todo: { config: Map<number, number>; from: number }[] = [];
  const branch = (targets: Map<number, number>, from: number | undefined): number[] | undefined => {
    // Connected groups of targets whose sets overlap, by union-find.
    const states = [...targets.keys()];
    const root = new Map(states.map((s) => [s, s]));
    const find = (s: number): number => {
      while (root.get(s) !== s) s = root.get(s)!;
      return s;
    };
    for (let i = 0; i < states.length; i++)
      for (let j = i + 1; j < states.length; j++) if (overlap(states[i]!, states[j]!)) root.set(find(states[i]!), find(states[j]!));
    const groups = new Map<number, number[]>();
    for (const s of states) groups.set(find(s), [...(groups.get(find(s)) ?? []), s]);
    for (const members of groups.values()) {
      const origin = from ?? Math.min(...members);
      // A path that can reach the end tries each empty way there.
      const total = members.reduce((acc, s) => acc + targets.get(s)! * (failing(s) ? Math.max(1, last.get(s) ?? 0) : 1), 0);
      if (total > MAX_WAYS) return [origin, ...members];
      const config = new Map(members.filter(failing).map((s) => [s, targets.get(s)!]));
      const key = [...config].sort((x, y) => x[0] - y[0]).join(';');
      if (config.size && !seen.has(key)) {
        seen.add(key);
        todo.push({ config, from: origin });
      }
    }
    return undefined;
  };
  let heavy = branch(first, undefined);
  while (!heavy && todo.length) {
    const { config, from } = todo.pop()!;
    const targets = new Map<number, number>();
    for (const [s, k] of config)
      for (const [t, m] of g.get(s)!) {
        spend(budget);
        targets.set(t, sat(((targets.get(t) ?? 0) + k * m)));
      }
    heavy = branch(targets, from);
  }
  return heavy;
}
