/**
 * The import surface check: the tree's layering rules, enforced on every relative import, so a shortcut
 * across a folder's surface or up a floor fails CI instead of quietly becoming a dependency.
 *
 * - Floors: `ffi/` (kernel access) < `core/` (runtime) < `modules/` (router, proxy, firewall) < `lab/`.
 *   A file imports only its own floor or lower ones: ffi never imports core, core never imports a module
 *   or the lab, a module never imports the lab.
 * - Modules never import each other (`modules/router` ↛ `modules/proxy`): what they must agree on lives
 *   in core.
 * - A folder with a `mod.ts` is imported from outside only through that `mod.ts`; files inside it (and
 *   its subfolders) import each other directly. A subfolder with its own `mod.ts` (core/kube,
 *   modules/router/bgp) is a surface of its own: everything outside it, its parent folder's files
 *   included, goes through its `mod.ts` (core/mod.ts does not re-export core/kube, which main.ts loads
 *   lazily to keep the Kubernetes client's start-up cost off `--help` and module-less runs).
 * - A `mod.ts` never re-exports a private (`_`-prefixed) file: private means "not part of the surface".
 *
 * `tests/` and `bench/` may import anything (they test and measure internals), and nothing else may
 * import them (the lab does not borrow test helpers; shared code lives in the lab). Only relative
 * specifiers are checked; `npm:`/`jsr:`/bare imports are the import map's business.
 *
 * Modelled on denoland/std's `_tools/check_mod_exports.ts` (walk the tree, read each file's import and
 * export declarations, fail with one line per offence), but it reads the imports of every file instead
 * of the exports of mod.ts files, and needs no TypeScript parser: a small tokenizer that knows comments,
 * strings, template literals and regular expressions is enough to find declarations reliably (an
 * example import in a doc comment is not an import).
 *
 * Run: `deno run --allow-read tools/check_imports.ts [root]` (exit 1 on violations); the unit test
 * tests/unit/tools/check_imports_test.ts runs it on the repository inside `deno task test`.
 *
 * @module
 */

/** One offending import. */
export interface Violation {
  /** The importing file, relative to the root, with `/` separators. */
  file: string;
  line: number;
  specifier: string;
  rule: "floor" | "module" | "surface" | "private-export";
  message: string;
}

/** One import or re-export found in a source file. */
export interface ImportRef {
  specifier: string;
  line: number;
  /** `export … from`, i.e. the file passes the target's names on. */
  reexport: boolean;
}

/** The layers, lowest first; a first path segment not listed here has no floor. */
const FLOORS: Readonly<Record<string, number>> = { ffi: 0, core: 1, modules: 2, lab: 3 };
/** Importers allowed to reach anything. */
const FREE = new Set(["tests", "bench"]);

// ---------------------------------------------------------------------------------------------------
// Finding imports

interface Token {
  kind: "id" | "str" | "other";
  text: string;
  line: number;
}

/** Keywords after which a `/` starts a regular expression rather than a division. */
const BEFORE_EXPRESSION = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);

/**
 * Splits TypeScript source into identifiers, string literals and other tokens, dropping comments,
 * whitespace, template text and regular expression bodies, which is all the import finder needs.
 */
function tokenize(src: string): Token[] {
  const out: Token[] = [];
  const templateDepths: number[] = [];
  let depth = 0;
  let line = 1;
  let i = 0;
  const n = src.length;

  const countLines = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (src.charCodeAt(k) === 10) line++;
  };
  /** Scans template text from `i` (just after "`" or a closing "}") to its end or the next "${". */
  const templateText = () => {
    const start = line;
    while (i < n) {
      const c = src[i];
      if (c === "\\") {
        countLines(i, i + 2);
        i += 2;
      } else if (c === "`") {
        i++;
        out.push({ kind: "other", text: "`template`", line: start });
        return;
      } else if (c === "$" && src[i + 1] === "{") {
        i += 2;
        templateDepths.push(depth);
        return;
      } else {
        if (c === "\n") line++;
        i++;
      }
    }
  };
  const regexAllowed = () => {
    const prev = out[out.length - 1];
    if (!prev) return true;
    if (prev.kind === "str") return false;
    if (prev.kind === "id") return BEFORE_EXPRESSION.has(prev.text);
    return !(prev.text === ")" || prev.text === "]" || prev.text === "}" || prev.text === "`template`" ||
      prev.text === "number");
  };

  while (i < n) {
    const c = src[i]!;
    if (c === "\n") {
      line++;
      i++;
    } else if (c === " " || c === "\t" || c === "\r") {
      i++;
    } else if (c === "/" && src[i + 1] === "/") {
      while (i < n && src[i] !== "\n") i++;
    } else if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? n : end + 2;
      countLines(i, stop);
      i = stop;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      let text = "";
      while (j < n && src[j] !== c && src[j] !== "\n") {
        if (src[j] === "\\") {
          text += src[j + 1] ?? "";
          j += 2;
        } else {
          text += src[j];
          j++;
        }
      }
      out.push({ kind: "str", text, line });
      i = j + 1;
    } else if (c === "`") {
      i++;
      templateText();
    } else if (
      c === "}" && templateDepths.length > 0 && templateDepths[templateDepths.length - 1] === depth
    ) {
      templateDepths.pop();
      i++;
      templateText();
    } else if (c === "/" && regexAllowed()) {
      // A regular expression literal: to the closing "/" outside a character class, then its flags.
      let j = i + 1;
      let inClass = false;
      while (j < n && src[j] !== "\n") {
        const d = src[j];
        if (d === "\\") j++;
        else if (d === "[") inClass = true;
        else if (d === "]") inClass = false;
        else if (d === "/" && !inClass) break;
        j++;
      }
      if (j < n && src[j] === "/") {
        j++;
        while (j < n && /[a-z]/.test(src[j]!)) j++;
        out.push({ kind: "other", text: "regex", line });
        i = j;
      } else {
        out.push({ kind: "other", text: "/", line });
        i++;
      }
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w$]/.test(src[j]!)) j++;
      out.push({ kind: "id", text: src.slice(i, j), line });
      i = j;
    } else if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w.]/.test(src[j]!)) j++;
      out.push({ kind: "other", text: "number", line });
      i = j;
    } else {
      if (c === "{") depth++;
      else if (c === "}") depth--;
      out.push({ kind: "other", text: c, line });
      i++;
    }
  }
  return out;
}

/**
 * The module specifiers a source file imports: static imports (value and type), side-effect imports,
 * `export … from` re-exports and `import("…")` (dynamic imports and `typeof import("…")` types alike).
 */
export function importsOf(source: string): ImportRef[] {
  const toks = tokenize(source);
  const refs: ImportRef[] = [];
  /** Finds `from "x"` after position `k`, before the statement ends. */
  const fromAfter = (k: number): Token | undefined => {
    for (let j = k; j < toks.length - 1 && j < k + 2000; j++) {
      const t = toks[j]!;
      if (t.kind === "other" && t.text === ";") return undefined;
      if (t.kind === "id" && t.text === "from" && toks[j + 1]!.kind === "str") return toks[j + 1];
    }
    return undefined;
  };
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k]!;
    if (t.kind !== "id" || (t.text !== "import" && t.text !== "export")) continue;
    const prev = toks[k - 1];
    if (prev && prev.kind === "other" && prev.text === ".") continue; // obj.import
    const next = toks[k + 1];
    if (!next) continue;
    if (t.text === "import") {
      if (next.kind === "other" && next.text === "(") {
        const arg = toks[k + 2];
        if (arg?.kind === "str") refs.push({ specifier: arg.text, line: arg.line, reexport: false });
      } else if (next.kind === "str") {
        refs.push({ specifier: next.text, line: next.line, reexport: false });
      } else if (!(next.kind === "other" && next.text === ".")) {
        const spec = fromAfter(k + 1);
        if (spec) refs.push({ specifier: spec.text, line: spec.line, reexport: false });
      }
      continue;
    }
    // export
    let j = k + 1;
    if (toks[j]?.kind === "id" && toks[j]!.text === "type") j++;
    const head = toks[j];
    if (head?.kind !== "other") continue;
    if (head.text === "*") {
      const spec = fromAfter(j + 1);
      if (spec) refs.push({ specifier: spec.text, line: spec.line, reexport: true });
    } else if (head.text === "{") {
      let m = j + 1;
      while (m < toks.length && !(toks[m]!.kind === "other" && toks[m]!.text === "}")) m++;
      const from = toks[m + 1];
      const spec = toks[m + 2];
      if (from?.kind === "id" && from.text === "from" && spec?.kind === "str") {
        refs.push({ specifier: spec.text, line: spec.line, reexport: true });
      }
    }
  }
  return refs;
}

// ---------------------------------------------------------------------------------------------------
// The rules

/** Joins `rel` onto the directory `dir` (both `/`-separated, relative to the root); undefined if it leaves the root. */
function resolve(dir: string, rel: string): string | undefined {
  const parts = dir === "" ? [] : dir.split("/");
  for (const seg of rel.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else {
      parts.push(seg);
    }
  }
  return parts.join("/");
}

function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

function inside(path: string, dir: string): boolean {
  return dir === "" || path.startsWith(dir + "/");
}

/**
 * Checks every `.ts` file in `files` (path relative to the root, `/`-separated, → source text) against
 * the rules in the module doc. Folders with a `mod.ts` are the ones in `files`.
 */
export function checkImports(files: ReadonlyMap<string, string>): Violation[] {
  const surfaces = [...files.keys()].filter((p) => p === "mod.ts" || p.endsWith("/mod.ts")).map(dirOf);
  /** The surfaces `target` sits behind, outermost first. */
  const surfacesOf = (target: string) =>
    surfaces.filter((d) => d !== "" && inside(target, d)).sort((a, b) => a.length - b.length);

  const violations: Violation[] = [];
  for (const [file, source] of files) {
    if (!file.endsWith(".ts")) continue;
    const top = file.split("/")[0]!;
    if (FREE.has(top)) continue;
    const refs = importsOf(source);
    for (const ref of refs) {
      if (!ref.specifier.startsWith("./") && !ref.specifier.startsWith("../")) continue;
      const target = resolve(dirOf(file), ref.specifier);
      const add = (rule: Violation["rule"], message: string) =>
        violations.push({ file, line: ref.line, specifier: ref.specifier, rule, message });
      if (target === undefined) {
        add("surface", "resolves outside the repository");
        continue;
      }
      const targetTop = target.split("/")[0]!;
      if (FREE.has(targetTop)) {
        add("floor", `only tests/ and bench/ may import ${targetTop}/: ${target}`);
        continue;
      }
      const from = FLOORS[top], to = FLOORS[targetTop];
      if (from !== undefined && to !== undefined && to > from) {
        add("floor", `${top}/ must not import ${targetTop}/ (a higher floor): ${target}`);
      }
      if (top === "modules" && targetTop === "modules") {
        const a = file.split("/")[1], b = target.split("/")[1];
        if (a !== b) add("module", `module ${a} must not import module ${b}: ${target}`);
      }
      // The target's innermost surface that does not contain the importer is the one to go through.
      const wall = surfacesOf(target).findLast((d) => !inside(file, d));
      if (wall !== undefined && target !== `${wall}/mod.ts`) {
        add("surface", `${target} is behind ${wall}/mod.ts; import that instead`);
      }
      if (ref.reexport && file.endsWith("mod.ts") && target.split("/").some((seg) => seg.startsWith("_"))) {
        add("private-export", `${file} re-exports the private file ${target}`);
      }
    }
  }
  return violations.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line);
}

/** Reads every `.ts` file under `root`, skipping hidden folders (`.lab/`, `.git/`) and node_modules. */
export async function readTree(root: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".") || e.name === "node_modules") continue;
      const path = `${dir}/${e.name}`;
      const relPath = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory) await walk(path, relPath);
      else if (e.isFile && e.name.endsWith(".ts")) files.set(relPath, await Deno.readTextFile(path));
    }
  };
  await walk(root, "");
  return files;
}

/** One line per violation, `file:line: message (specifier)`, as the CLI and the test print them. */
export function formatViolations(vs: readonly Violation[]): string {
  return vs.map((v) => `${v.file}:${v.line}: [${v.rule}] ${v.message} ("${v.specifier}")`).join("\n");
}

if (import.meta.main) {
  const root = Deno.args[0] ?? new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const vs = checkImports(await readTree(root));
  if (vs.length > 0) {
    console.error(formatViolations(vs));
    console.error(`${vs.length} import(s) break the surface rules (see tools/check_imports.ts)`);
    Deno.exit(1);
  }
  console.log("imports: ok");
}
