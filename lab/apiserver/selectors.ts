/**
 * Label and field selectors in the syntax of `?labelSelector=` and `?fieldSelector=`
 * (`app=web,tier!=db`, `env in (a,b)`, `!legacy`, `metadata.name=x`).
 */
import type { V1LabelSelector } from "@kubernetes/client-node";
import { parseSelector } from "../../core/mod.ts";
import { badRequest } from "./errors.ts";
import type { KubeObject } from "./types.ts";

type Requirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: "exists" | "!" };

/** A parsed selector; `matches` takes the map (labels) or the field lookup it tests. */
export interface Selector {
  readonly empty: boolean;
  matches(get: (key: string) => string | undefined): boolean;
}

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter((p) => p !== "");
}

function parseRequirement(part: string, allowSets: boolean): Requirement {
  let m = /^!\s*([^\s=!(),]+)$/.exec(part);
  if (m && allowSets) return { key: m[1]!, op: "!" };
  m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(part);
  if (m) return { key: m[1]!, op: m[2] === "!=" ? "!=" : "=", value: m[3]! };
  m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part);
  if (m && allowSets) {
    const values = m[3]!.split(",").map((v) => v.trim()).filter((v) => v !== "");
    return { key: m[1]!, op: m[2] as "in" | "notin", values };
  }
  m = /^([^\s=!(),]+)$/.exec(part);
  if (m && allowSets) return { key: m[1]!, op: "exists" };
  throw badRequest(`unable to parse requirement: "${part}"`);
}

function build(reqs: Requirement[]): Selector {
  return {
    empty: reqs.length === 0,
    matches(get) {
      for (const r of reqs) {
        const v = get(r.key);
        switch (r.op) {
          case "=":
            if (v !== r.value) return false;
            break;
          case "!=":
            if (v === r.value) return false;
            break;
          case "in":
            if (v === undefined || !r.values.includes(v)) return false;
            break;
          case "notin":
            if (v !== undefined && r.values.includes(v)) return false;
            break;
          case "exists":
            if (v === undefined) return false;
            break;
          case "!":
            if (v !== undefined) return false;
            break;
        }
      }
      return true;
    },
  };
}

/** Parses a label selector (equality and set-based requirements). */
export function parseLabelSelector(s: string | undefined | null): Selector {
  return build(splitTop(s ?? "").map((p) => parseRequirement(p, true)));
}

/** Parses a field selector (only `=`, `==`, `!=`, as the real server). */
export function parseFieldSelector(s: string | undefined | null): Selector {
  return build(splitTop(s ?? "").map((p) => parseRequirement(p, false)));
}

/**
 * Value of a field-selector path on an object: `metadata.name`, `metadata.namespace`, `spec.nodeName`,
 * `status.phase`, or any other dotted path to a scalar.
 */
export function fieldValue(obj: KubeObject, path: string): string | undefined {
  // deno-lint-ignore no-explicit-any
  let cur: any = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = cur[part];
  }
  if (cur === undefined || cur === null) {
    // The real server indexes these fields with "" when unset (an unscheduled pod has spec.nodeName "").
    return path === "spec.nodeName" || path === "metadata.namespace" ? "" : undefined;
  }
  return typeof cur === "object" ? undefined : String(cur);
}

/** Whether an object matches both selectors. */
export function objectMatches(obj: KubeObject, labels: Selector, fields: Selector): boolean {
  if (!labels.empty) {
    const l = obj.metadata?.labels ?? {};
    if (!labels.matches((k) => (Object.hasOwn(l, k) ? l[k] : undefined))) return false;
  }
  if (!fields.empty && !fields.matches((k) => fieldValue(obj, k))) return false;
  return true;
}

/**
 * Does a set of labels satisfy a LabelSelector (matchLabels and matchExpressions)? No selector, or one
 * that does not parse, selects nothing.
 */
export function labelSelectorMatches(
  sel: LabelSelector | undefined,
  labels: Record<string, string> | undefined,
): boolean {
  if (!sel) return false;
  const parsed = parseSelector(sel as V1LabelSelector);
  return parsed.ok && parsed.selector.matches(labels ?? {});
}

/** A metav1.LabelSelector as JSON. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}
