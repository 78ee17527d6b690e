/**
 * The firewall's conformance table: the cases of Kubernetes' own network-policy e2e suite
 * (test/e2e/network/netpol/network_policy.go, "Netpol NetworkPolicy between server and client" and its
 * UDP/SCTP variants), plus endPort, ingress ipBlock-with-except and egress-by-namespace-and-port cases
 * of ours. The cluster is always the suite's full one: namespaces x, y, z with pods a, b, c each (a on
 * kube-node1, b on kube-node2, c on kube-node3), every pod serving TCP and UDP on ports 80 and 81 from
 * one container each (ports named serve-80-tcp, serve-80-udp, serve-81-tcp, serve-81-udp).
 *
 * Each case's expected matrix is written out below as the suite writes it: start from "everything
 * reaches everything" and override with `expect(from, to, allowed, {port, proto})` statements, applied in
 * order (`*` for any namespace or pod). Unlike the suite, which probes one port and protocol per case,
 * every step here checks all four: TCP and UDP on 80 and 81. Traffic from a pod to itself is not judged
 * (the suite ignores loopback too).
 */

export const NAMESPACES = ["x", "y", "z"] as const;
export const POD_NAMES = ["a", "b", "c"] as const;
export const PORTS = [80, 81] as const;
export const PROTOS = ["tcp", "udp"] as const;
export type Proto = (typeof PROTOS)[number];
export type Port = (typeof PORTS)[number];

export const ALL_PODS: string[] = NAMESPACES.flatMap((n) => POD_NAMES.map((p) => `${n}/${p}`));

export interface Filter {
  port?: Port;
  proto?: Proto;
}

/** The expected reachability of every (from, to, port, protocol). */
export class Reach {
  #m = new Map<string, boolean>();
  constructor() {
    for (const f of ALL_PODS) {
      for (const t of ALL_PODS) {
        for (const p of PORTS) for (const q of PROTOS) this.#m.set(key(f, t, p, q), true);
      }
    }
  }
  /** Sets every combination matching the selectors (`x/a`, `x/*`, `* /a`, `*`) and filter. */
  expect(from: string, to: string, allowed: boolean, f: Filter = {}): this {
    for (const a of ALL_PODS.filter((p) => matches(from, p))) {
      for (const b of ALL_PODS.filter((p) => matches(to, p))) {
        for (const p of PORTS) {
          if (f.port !== undefined && f.port !== p) continue;
          for (const q of PROTOS) {
            if (f.proto !== undefined && f.proto !== q) continue;
            this.#m.set(key(a, b, p, q), allowed);
          }
        }
      }
    }
    return this;
  }
  ingress(to: string, allowed: boolean, f: Filter = {}): this {
    return this.expect("*", to, allowed, f);
  }
  egress(from: string, allowed: boolean, f: Filter = {}): this {
    return this.expect(from, "*", allowed, f);
  }
  get(from: string, to: string, port: Port, proto: Proto): boolean {
    return this.#m.get(key(from, to, port, proto))!;
  }
}

function key(f: string, t: string, p: number, q: string): string {
  return `${f}>${t}>${p}/${q}`;
}

function matches(sel: string, pod: string): boolean {
  if (sel === "*") return true;
  const [sn, sp] = sel.split("/");
  const [pn, pp] = pod.split("/");
  return (sn === "*" || sn === pn) && (sp === "*" || sp === pp);
}

export type Policy = { namespace: string; name: string; spec: Record<string, unknown> };

export interface Step {
  /** Policies created or replaced (by namespace/name) in this step; a function gets the pod IPs. */
  policies?: Policy[] | ((ips: Record<string, string>) => Policy[]);
  /** Policies deleted, as `namespace/name`, or "all". */
  deletePolicies?: string[] | "all";
  /** Labels added to namespaces (value null removes the key). */
  nsLabels?: Record<string, Record<string, string | null>>;
  /** Labels added to pods (`x/b`; value null removes the key). */
  podLabels?: Record<string, Record<string, string | null>>;
  expect: (r: Reach) => void;
}

export interface Case {
  name: string;
  steps: Step[];
}

const pol = (namespace: string, name: string, spec: Record<string, unknown>): Policy => ({
  namespace,
  name,
  spec,
});
const podSel = (labels: Record<string, string>) => ({ matchLabels: labels });
const NAME = "kubernetes.io/metadata.name";
const ingress = (rules: unknown[]) => ({ policyTypes: ["Ingress"], ingress: rules });
const egress = (rules: unknown[]) => ({ policyTypes: ["Egress"], egress: rules });

export const CASES: Case[] = [
  {
    name: "should support a 'default-deny-ingress' policy",
    steps: [{
      policies: [pol("x", "deny-ingress", { podSelector: {}, ...ingress([]) })],
      expect: (r) => r.ingress("x/*", false),
    }],
  },
  {
    name: "should support a 'default-deny-all' policy",
    steps: [{
      policies: [pol("x", "deny-all", { podSelector: {}, policyTypes: ["Ingress", "Egress"] })],
      expect: (r) => r.ingress("x/*", false).egress("x/*", false),
    }],
  },
  {
    name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
    steps: [{
      policies: [
        pol("x", "x-a-allows-x-b", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ podSelector: podSel({ pod: "b" }) }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/a", false).expect("x/b", "x/a", true),
    }],
  },
  {
    name: "should enforce policy to allow ingress traffic for a target",
    steps: [{
      policies: [
        pol("x", "deny-all", { podSelector: {}, ...ingress([]) }),
        pol("x", "allow-all-to-a", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ podSelector: {}, namespaceSelector: {} }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/*", false).ingress("x/a", true),
    }],
  },
  {
    name: "should enforce policy to allow ingress traffic from pods in all namespaces",
    steps: [{
      policies: [
        pol("x", "allow-from-another-ns", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ namespaceSelector: {} }] }]),
        }),
      ],
      expect: () => {},
    }],
  },
  {
    name:
      "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
    steps: [{
      policies: [
        pol("x", "allow-client-a-via-ns-selector", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }] }]),
        }),
      ],
      expect: (r) => r.expect("x/*", "x/a", false).expect("z/*", "x/a", false),
    }],
  },
  {
    name: "should enforce policy based on PodSelector with MatchExpressions",
    steps: [{
      policies: [pol("x", "x-a-allows-x-b", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["b"] }] } }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("x/b", "x/a", true),
    }],
  },
  {
    name: "should enforce policy based on NamespaceSelector with MatchExpressions",
    steps: [{
      policies: [pol("x", "allow-ns-y-match-selector", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: { matchExpressions: [{ key: NAME, operator: "In", values: ["y"] }] } }],
        }]),
      })],
      expect: (r) => r.expect("x/*", "x/a", false).expect("z/*", "x/a", false),
    }],
  },
  {
    name: "should enforce policy based on PodSelector or NamespaceSelector",
    steps: [{
      policies: [pol("x", "allow-ns-y-match-selector", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [
            { namespaceSelector: { matchExpressions: [{ key: NAME, operator: "NotIn", values: ["x"] }] } },
            { podSelector: podSel({ pod: "b" }) },
          ],
        }]),
      })],
      expect: (r) => r.expect("x/*", "x/a", false).expect("x/b", "x/a", true),
    }],
  },
  {
    name: "should enforce policy based on PodSelector and NamespaceSelector",
    steps: [{
      policies: [pol("x", "allow-ns-y-podselector-and-nsselector", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{
            namespaceSelector: { matchExpressions: [{ key: NAME, operator: "NotIn", values: ["x"] }] },
            podSelector: podSel({ pod: "b" }),
          }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true),
    }],
  },
  {
    name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
    steps: [{
      policies: [pol("x", "allow-ns-y-z-pod-b-c", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{
            namespaceSelector: { matchExpressions: [{ key: NAME, operator: "NotIn", values: ["x"] }] },
            podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["b", "c"] }] },
          }],
        }]),
      })],
      expect: (r) => r.expect("x/*", "x/a", false).expect("y/a", "x/a", false).expect("z/a", "x/a", false),
    }],
  },
  {
    name: "should enforce policy based on any PodSelectors",
    steps: [{
      policies: [pol("x", "allow-ns-x-pod-b-c", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ podSelector: podSel({ pod: "b" }) }, { podSelector: podSel({ pod: "c" }) }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("x/b", "x/a", true).expect("x/c", "x/a", true),
    }],
  },
  {
    name:
      "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
    steps: [{
      policies: [pol("x", "allow-ns-y-pod-a-via-namespace-pod-selector", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: podSel({ [NAME]: "y" }), podSelector: podSel({ pod: "a" }) }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/a", "x/a", true),
    }],
  },
  {
    name: "should enforce policy based on Ports",
    steps: [{
      policies: [pol("x", "allow-client-a-via-ns-selector", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
          ports: [{ port: 81, protocol: "TCP" }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { port: 81, proto: "tcp" }),
    }],
  },
  {
    name: "should enforce multiple, stacked policies with overlapping podSelectors",
    steps: [
      {
        policies: [pol("x", "allow-client-a-via-ns-selector", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{
            from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
            ports: [{ port: 81, protocol: "TCP" }],
          }]),
        })],
        expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { port: 81, proto: "tcp" }),
      },
      {
        policies: [pol("x", "allow-client-a-via-ns-selector-80", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{
            from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
            ports: [{ port: 80, protocol: "TCP" }],
          }]),
        })],
        expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { proto: "tcp" }),
      },
    ],
  },
  {
    name: "should support allow-all policy",
    steps: [{ policies: [pol("x", "allow-all", { podSelector: {}, ...ingress([{}]) })], expect: () => {} }],
  },
  {
    name: "should allow ingress access on one named port",
    steps: [{
      policies: [
        pol("x", "allow-all", { podSelector: {}, ...ingress([{ ports: [{ port: "serve-81-tcp" }] }]) }),
      ],
      expect: (r) => r.ingress("x/*", false).ingress("x/*", true, { port: 81, proto: "tcp" }),
    }],
  },
  {
    name: "should allow ingress access from namespace on one named port",
    steps: [{
      policies: [pol("x", "allow-client-a-via-ns-selector-80", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
          ports: [{ port: "serve-80-tcp", protocol: "TCP" }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { port: 80, proto: "tcp" }),
    }],
  },
  {
    name: "should allow egress access on one named port",
    steps: [{
      policies: [
        pol("x", "allow-egress", { podSelector: {}, ...egress([{ ports: [{ port: "serve-80-tcp" }] }]) }),
      ],
      expect: (r) => r.egress("x/*", false).egress("x/*", true, { port: 80, proto: "tcp" }),
    }],
  },
  {
    name: "should enforce updated policy",
    steps: [
      {
        policies: [pol("x", "allow-all-mutate-to-deny-all", { podSelector: {}, ...ingress([{}]) })],
        expect: () => {},
      },
      {
        policies: [pol("x", "allow-all-mutate-to-deny-all", { podSelector: {}, ...ingress([]) })],
        expect: (r) => r.ingress("x/*", false),
      },
    ],
  },
  {
    name: "should allow ingress access from updated namespace",
    steps: [
      {
        policies: [pol("x", "allow-client-a-via-ns-selector", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ namespaceSelector: podSel({ ns2: "updated" }) }] }]),
        })],
        expect: (r) => r.ingress("x/a", false),
      },
      {
        nsLabels: { y: { ns2: "updated" } },
        expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true),
      },
    ],
  },
  {
    name: "should allow ingress access from updated pod",
    steps: [
      {
        policies: [pol("x", "allow-client-a-via-pod-selector", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ from: [{ podSelector: podSel({ pod: "b", pod2: "updated" }) }] }]),
        })],
        expect: (r) => r.ingress("x/a", false),
      },
      {
        podLabels: { "x/b": { pod2: "updated" } },
        expect: (r) => r.ingress("x/a", false).expect("x/b", "x/a", true),
      },
    ],
  },
  {
    name: "should deny ingress from pods on other namespaces",
    steps: [{
      policies: [
        pol("x", "deny-empty-policy", { podSelector: {}, ...ingress([{ from: [{ podSelector: {} }] }]) }),
      ],
      expect: (r) => r.expect("y/*", "x/*", false).expect("z/*", "x/*", false),
    }],
  },
  {
    name: "should deny ingress access to updated pod",
    steps: [
      {
        policies: [
          pol("x", "deny-ingress-via-label-selector", {
            podSelector: podSel({ target: "isolated" }),
            ...ingress([]),
          }),
        ],
        expect: () => {},
      },
      { podLabels: { "x/a": { target: "isolated" } }, expect: (r) => r.ingress("x/a", false) },
    ],
  },
  {
    name: "should deny egress from pods based on PodSelector",
    steps: [{
      policies: [pol("x", "deny-egress-pod-a", { podSelector: podSel({ pod: "a" }), ...egress([]) })],
      expect: (r) => r.egress("x/a", false),
    }],
  },
  {
    name: "should deny egress from all pods in a namespace",
    steps: [{
      policies: [pol("x", "deny-egress-ns-x", { podSelector: {}, ...egress([]) })],
      expect: (r) => r.egress("x/*", false),
    }],
  },
  {
    name: "should work with Ingress, Egress specified together",
    steps: [{
      policies: [pol("x", "allow-client-a-via-pod-selector", {
        podSelector: podSel({ pod: "a" }),
        policyTypes: ["Egress", "Ingress"],
        ingress: [{ from: [{ podSelector: podSel({ pod: "b" }) }] }],
        egress: [{ ports: [{ port: 80 }] }],
      })],
      expect: (r) =>
        r.egress("x/a", false).egress("x/a", true, { port: 80, proto: "tcp" }).ingress("x/a", false).expect(
          "x/b",
          "x/a",
          true,
        ),
    }],
  },
  {
    name:
      "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
    steps: [{
      policies: [
        pol("x", "allow-to-ns-y-pod-a", {
          podSelector: podSel({ pod: "a" }),
          ...egress([{
            to: [{ namespaceSelector: podSel({ [NAME]: "y" }), podSelector: podSel({ pod: "a" }) }],
          }]),
        }),
        pol("y", "allow-from-xa-on-ya-match-selector", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{
            from: [{ namespaceSelector: podSel({ [NAME]: "x" }), podSelector: podSel({ pod: "a" }) }],
          }]),
        }),
        pol("y", "allow-from-xa-on-yb-match-selector", {
          podSelector: podSel({ pod: "b" }),
          ...ingress([{
            from: [{ namespaceSelector: podSel({ [NAME]: "x" }), podSelector: podSel({ pod: "a" }) }],
          }]),
        }),
      ],
      expect: (r) =>
        r.egress("x/a", false).ingress("y/a", false).expect("x/a", "y/a", true).ingress("y/b", false),
    }],
  },
  {
    name:
      "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
    steps: [{
      policies: [pol("x", "allow-to-ns-y-pod-a", {
        podSelector: podSel({ pod: "a" }),
        ...egress([{
          to: [{ namespaceSelector: podSel({ [NAME]: "y" }), podSelector: podSel({ pod: "a" }) }],
        }]),
      })],
      expect: (r) => r.egress("x/a", false).expect("x/a", "y/a", true),
    }],
  },
  {
    name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
    steps: [{
      policies: [
        pol("x", "allow-ingress-by-proto", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ ports: [{ protocol: "TCP" }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/a", false, { proto: "udp" }),
    }],
  },
  {
    name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
    steps: [
      {
        policies: [
          pol("x", "allow-ingress-port-80", { podSelector: {}, ...ingress([{ ports: [{ port: 80 }] }]) }),
        ],
        expect: (r) => r.ingress("x/*", false).ingress("x/*", true, { port: 80, proto: "tcp" }),
      },
      { policies: [pol("x", "allow-ingress", { podSelector: {}, ...ingress([{}]) })], expect: () => {} },
    ],
  },
  {
    name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
    steps: [
      {
        policies: [
          pol("x", "allow-egress-port-80", { podSelector: {}, ...egress([{ ports: [{ port: 80 }] }]) }),
        ],
        expect: (r) => r.egress("x/*", false).egress("x/*", true, { port: 80, proto: "tcp" }),
      },
      { policies: [pol("x", "allow-egress", { podSelector: {}, ...egress([{}]) })], expect: () => {} },
    ],
  },
  {
    name: "should stop enforcing policies after they are deleted",
    steps: [
      {
        policies: [pol("x", "deny-all", { podSelector: {}, policyTypes: ["Ingress", "Egress"] })],
        expect: (r) => r.ingress("x/*", false).egress("x/*", false),
      },
      { deletePolicies: "all", expect: () => {} },
    ],
  },
  {
    name: "should allow egress access to server in CIDR block",
    steps: [{
      policies: (ips) => [pol("x", "allow-client-a-via-cidr-egress-rule", {
        podSelector: podSel({ pod: "a" }),
        ...egress([{ to: [{ ipBlock: { cidr: `${ips["y/b"]}/32` } }] }]),
      })],
      expect: (r) => r.egress("x/a", false).expect("x/a", "y/b", true),
    }],
  },
  {
    name: "should enforce except clause while egress access to server in CIDR block",
    steps: [{
      policies: (ips) => [pol("x", "allow-client-a-via-cidr-egress-rule", {
        podSelector: podSel({ pod: "a" }),
        ...egress([{ to: [{ ipBlock: { cidr: "10.0.0.0/8", except: [`${ips["x/b"]}/32`] } }] }]),
      })],
      expect: (r) => r.expect("x/a", "x/b", false),
    }],
  },
  {
    name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
    steps: [
      {
        policies: (ips) => [pol("x", "allow-client-a-via-cidr-egress-rule", {
          podSelector: podSel({ pod: "a" }),
          ...egress([{ to: [{ ipBlock: { cidr: "10.0.0.0/8", except: [`${ips["x/b"]}/32`] } }] }]),
        })],
        expect: (r) => r.expect("x/a", "x/b", false),
      },
      {
        policies: (ips) => [pol("x", "allow-client-a-via-cidr-egress-rule", {
          podSelector: podSel({ pod: "a" }),
          ...egress([{ to: [{ ipBlock: { cidr: `${ips["x/b"]}/32` } }] }]),
        })],
        expect: (r) => r.egress("x/a", false).expect("x/a", "x/b", true),
      },
    ],
  },
  {
    name:
      "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
    steps: [
      {
        policies: [
          pol("x", "allow-egress-for-target", { podSelector: podSel({ pod: "a" }), ...egress([{}]) }),
        ],
        expect: () => {},
      },
      {
        policies: [
          pol("x", "deny-ingress-via-label-selector", { podSelector: podSel({ pod: "a" }), ...ingress([]) }),
        ],
        expect: (r) => r.ingress("x/a", false),
      },
    ],
  },
  {
    name:
      "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
    steps: [{
      policies: [
        pol("x", "deny-ingress", { podSelector: {}, ...ingress([]) }),
        pol("x", "allow-only-sctp-ingress-on-port-81", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ ports: [{ port: 81, protocol: "SCTP" }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/*", false),
    }],
  },
  {
    name:
      "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
    steps: [{
      policies: [
        pol("x", "allow-only-sctp-ingress-on-port-80", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ ports: [{ port: 80, protocol: "SCTP" }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/a", false),
    }],
  },
  {
    name: "should not allow access by TCP when a policy specifies only UDP",
    steps: [{
      policies: [
        pol("x", "allow-only-udp-ingress-on-port-81", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ ports: [{ port: 81, protocol: "UDP" }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/a", false).ingress("x/a", true, { port: 81, proto: "udp" }),
    }],
  },
  {
    name:
      "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
    steps: [{
      policies: [pol("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{ from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }] }]),
      })],
      expect: (r) => r.expect("x/*", "x/a", false).expect("z/*", "x/a", false),
    }],
  },
  {
    name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
    steps: [{
      policies: [pol("x", "allow-ns-y-match-selector-for-immutable-ns-label", {
        podSelector: podSel({ pod: "a" }),
        ...egress([{
          to: [{
            namespaceSelector: { matchExpressions: [{ key: NAME, operator: "NotIn", values: ["y"] }] },
          }],
        }]),
      })],
      expect: (r) => r.expect("x/a", "y/*", false),
    }],
  },
  {
    name: "UDP: should enforce policy based on Ports",
    steps: [{
      policies: [pol("x", "allow-ingress-on-port-81-ns-x", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
          ports: [{ port: 81, protocol: "UDP" }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { port: 81, proto: "udp" }),
    }],
  },
  {
    name: "ours: endPort admits a TCP port range from a namespace",
    steps: [{
      policies: [pol("x", "range-80-81", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{
          from: [{ namespaceSelector: podSel({ [NAME]: "y" }) }],
          ports: [{ port: 80, endPort: 81, protocol: "TCP" }],
        }]),
      })],
      expect: (r) => r.ingress("x/a", false).expect("y/*", "x/a", true, { proto: "tcp" }),
    }],
  },
  {
    name: "ours: endPort range starting above 80 admits 81 only, on UDP",
    steps: [{
      policies: [
        pol("x", "range-81-90", {
          podSelector: podSel({ pod: "a" }),
          ...ingress([{ ports: [{ port: 81, endPort: 90, protocol: "UDP" }] }]),
        }),
      ],
      expect: (r) => r.ingress("x/a", false).ingress("x/a", true, { port: 81, proto: "udp" }),
    }],
  },
  {
    name: "ours: ingress ipBlock with except refuses the excepted pod only",
    steps: [{
      policies: (ips) => [pol("x", "cidr-except-yb", {
        podSelector: podSel({ pod: "a" }),
        ...ingress([{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: [`${ips["y/b"]}/32`] } }] }]),
      })],
      expect: (r) => r.expect("y/b", "x/a", false),
    }],
  },
  {
    name: "ours: egress to a namespace on one UDP port",
    steps: [{
      policies: [pol("x", "egress-z-udp-81", {
        podSelector: podSel({ pod: "a" }),
        ...egress([{
          to: [{ namespaceSelector: podSel({ [NAME]: "z" }) }],
          ports: [{ port: 81, protocol: "UDP" }],
        }]),
      })],
      expect: (r) => r.egress("x/a", false).expect("x/a", "z/*", true, { port: 81, proto: "udp" }),
    }],
  },
  {
    name: "ours: relabelling a namespace while traffic flows moves its pods out of an allow rule",
    steps: [
      { nsLabels: { z: { team: "blue" } }, expect: () => {} },
      {
        policies: [
          pol("x", "from-blue", {
            podSelector: {},
            ...ingress([{ from: [{ namespaceSelector: podSel({ team: "blue" }) }] }]),
          }),
        ],
        expect: (r) => r.ingress("x/*", false).expect("z/*", "x/*", true),
      },
      { nsLabels: { z: { team: null } }, expect: (r) => r.ingress("x/*", false) },
    ],
  },
];
