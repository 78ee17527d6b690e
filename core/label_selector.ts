/**
 * Kubernetes label selectors (metav1.LabelSelector) parsed once into a predicate plus a canonical key,
 * for every reader of selectors (the firewall's NetworkPolicies, the lab API server's workloads and
 * Services). The key identifies selectors that select the same objects, so two policies with the same
 * peer share one nftables set. Parsing follows the API server's validation: an operator other than In,
 * NotIn, Exists, DoesNotExist, In/NotIn without values, or Exists/DoesNotExist with values is an
 * error (the policy is logged and that part of it skipped).
 */
import type { V1LabelSelector } from "@kubernetes/client-node";

export type ObjectLabels = Readonly<Record<string, string>>;

export interface ParsedSelector {
  /** Whether an object with these labels is selected. */
  matches(labels: ObjectLabels): boolean;
  /** Canonical form: equal for selectors that select the same objects by construction. */
  key: string;
  /** True for `{}`: selects everything. */
  everything: boolean;
}

export type SelectorResult = { ok: true; selector: ParsedSelector } | { ok: false; error: string };

interface Requirement {
  key: string;
  op: "In" | "NotIn" | "Exists" | "DoesNotExist";
  values: string[];
}

/** Parses a label selector. `undefined` and `{}` both select everything. */
export function parseSelector(sel: V1LabelSelector | undefined): SelectorResult {
  const reqs: Requirement[] = [];
  const labels = sel?.matchLabels ?? {};
  if (typeof labels !== "object" || labels === null) return { ok: false, error: "matchLabels is not a map" };
  for (const [k, v] of Object.entries(labels)) {
    if (!k) return { ok: false, error: "matchLabels has an empty key" };
    if (typeof v !== "string") return { ok: false, error: `matchLabels[${k}] is not a string` };
    reqs.push({ key: k, op: "In", values: [v] });
  }
  const exprs = sel?.matchExpressions ?? [];
  if (!Array.isArray(exprs)) return { ok: false, error: "matchExpressions is not a list" };
  for (const e of exprs) {
    const key = e?.key;
    if (typeof key !== "string" || !key) return { ok: false, error: "a matchExpression has no key" };
    const values = e.values ?? [];
    if (!Array.isArray(values) || values.some((v) => typeof v !== "string")) {
      return { ok: false, error: `matchExpression ${key}: values must be strings` };
    }
    switch (e.operator) {
      case "In":
      case "NotIn":
        if (values.length === 0) {
          return { ok: false, error: `matchExpression ${key} ${e.operator}: needs at least one value` };
        }
        reqs.push({ key, op: e.operator, values: [...new Set(values)].sort() });
        break;
      case "Exists":
      case "DoesNotExist":
        if (values.length > 0) {
          return { ok: false, error: `matchExpression ${key} ${e.operator}: must have no values` };
        }
        reqs.push({ key, op: e.operator, values: [] });
        break;
      default:
        return { ok: false, error: `matchExpression ${key}: unknown operator ${JSON.stringify(e.operator)}` };
    }
  }
  reqs.sort((a, b) =>
    a.key < b.key ? -1 : a.key > b.key ? 1 : a.op < b.op ? -1 : a.op > b.op ? 1 : cmp(a.values, b.values)
  );
  const key = reqs.map((r) => `${r.key} ${r.op} ${r.values.join(",")}`).join(";");
  const matches = (l: ObjectLabels): boolean => {
    for (const r of reqs) {
      const has = Object.hasOwn(l, r.key);
      switch (r.op) {
        case "In":
          if (!has || !r.values.includes(l[r.key]!)) return false;
          break;
        case "NotIn":
          // As Kubernetes: NotIn matches objects without the key too.
          if (has && r.values.includes(l[r.key]!)) return false;
          break;
        case "Exists":
          if (!has) return false;
          break;
        case "DoesNotExist":
          if (has) return false;
          break;
      }
    }
    return true;
  };
  return { ok: true, selector: { matches, key, everything: reqs.length === 0 } };
}

function cmp(a: string[], b: string[]): number {
  const x = a.join(","), y = b.join(",");
  return x < y ? -1 : x > y ? 1 : 0;
}
