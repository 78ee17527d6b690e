import assert from "node:assert/strict";
import type { V1NetworkPolicy } from "@kubernetes/client-node";
import { compileFirewall, type FirewallModel } from "../../../modules/firewall/policy_compiler.ts";
import { parseSelector } from "../../../core/mod.ts";
import { ipBlockRanges } from "../../../modules/firewall/ip_block.ts";
import { ns, pod, type PodOpts, policy } from "./_fixtures.ts";

const namespaces = [ns("x", { team: "x" }), ns("y", { team: "y" }), ns("z", { team: "z", env: "prod" })];

/** Pods a,b,c in x,y,z; x/a and x/b on n1 (this node), the rest on n2. Pod x/a declares named ports. */
function cluster(extra: Record<string, PodOpts> = {}) {
  const pods = [];
  let i = 1;
  for (const n of ["x", "y", "z"]) {
    for (const p of ["a", "b", "c"]) {
      const local = n === "x" && p !== "c";
      pods.push(pod(n, p, {
        node: local ? "n1" : "n2",
        labels: { pod: p },
        ips: [`10.1.${local ? 1 : 2}.${i}`, `fd00:1::${i}`],
        ports: n === "x" && p === "a" ? ["serve-80:80/TCP", "serve-81-udp:81/UDP"] : ["serve-80:8080/TCP"],
        ...extra[`${n}/${p}`],
      }));
      i++;
    }
  }
  return pods;
}

function compile(
  policies: V1NetworkPolicy[],
  opts: { pods?: ReturnType<typeof cluster>; defaultDeny?: boolean } = {},
): FirewallModel {
  return compileFirewall({
    nodeName: "n1",
    pods: opts.pods ?? cluster(),
    namespaces,
    policies,
    ...(opts.defaultDeny ? { defaultDeny: true } : {}),
  });
}

function setOf(m: FirewallModel, key: string) {
  const s = m.podSets.get(key);
  assert.ok(s, `set ${key} exists; have ${[...m.podSets.keys()].join(" | ")}`);
  return s;
}

Deno.test("pods selected by no policy are open: no isolation, local pods still listed", () => {
  const m = compile([]);
  assert.equal(m.ingress.size, 0);
  assert.equal(m.egress.size, 0);
  assert.deepEqual([...m.localPods.keys()].sort(), ["x/a", "x/b"]);
  assert.deepEqual(m.localPods.get("x/a"), { v4: ["10.1.1.1"], v6: ["fd00:1::1"] });
  assert.deepEqual(m.unknownLocal, { ingress: "accept", egress: "accept" });
});

Deno.test("policyTypes omitted means Ingress, plus Egress only when egress rules exist", () => {
  const m = compile([
    policy("x", "ing-only", { podSelector: { matchLabels: { pod: "a" } } }),
    policy("x", "with-egress", { podSelector: { matchLabels: { pod: "b" } }, egress: [{}] }),
  ]);
  assert.deepEqual(m.policies.get("x/ing-only"), { ingress: true, egress: false });
  assert.deepEqual(m.policies.get("x/with-egress"), { ingress: true, egress: true });
  assert.deepEqual([...m.ingress.keys()].sort(), ["x/a", "x/b"]);
  assert.deepEqual([...m.egress.keys()], ["x/b"]);
  assert.deepEqual(m.ingress.get("x/a")!.rules, []);
  assert.deepEqual(m.egress.get("x/b")!.rules, [{
    policy: "x/with-egress",
    peers: "any",
    ports: "any",
    namedPortSets: [],
  }]);
});

Deno.test("explicit policyTypes Egress ignores ingress rules and leaves ingress open", () => {
  const m = compile([policy("x", "p", { policyTypes: ["Egress"], ingress: [{}] })]);
  assert.equal(m.ingress.size, 0);
  assert.deepEqual(m.egress.get("x/a")!.rules, []);
});

Deno.test("only this node's pods get rules; hostNetwork and finished pods are neither targets nor peers", () => {
  const pods = cluster({
    "x/b": { hostNetwork: true, ips: ["192.168.1.100"] },
    "y/a": { phase: "Succeeded" },
  });
  const m = compile([
    policy("x", "deny", {}),
    policy("x", "allow-all-pods", {
      podSelector: {},
      ingress: [{ from: [{ namespaceSelector: {} }] }],
    }),
  ], { pods });
  assert.deepEqual([...m.ingress.keys()], ["x/a"]);
  assert.deepEqual([...m.localPods.keys()], ["x/a"]);
  const s = setOf(m, "nssel= pods=");
  assert.ok(!s.v4.includes("192.168.1.100"));
  assert.ok(!s.v4.includes("10.1.2.4"), "the finished pod y/a is not a peer");
  assert.equal(s.v4.length, 7);
  assert.equal(s.v6.length, 7);
});

Deno.test("podSelector peer alone selects pods in the policy's namespace only", () => {
  const m = compile([
    policy("x", "p", { ingress: [{ from: [{ podSelector: { matchLabels: { pod: "b" } } }] }] }),
  ]);
  const rule = m.ingress.get("x/a")!.rules[0]!;
  assert.deepEqual(rule.peers, [{ kind: "pods", set: "ns=x pods=pod In b" }]);
  assert.deepEqual(setOf(m, "ns=x pods=pod In b").v4, ["10.1.1.2"]);
});

Deno.test("namespaceSelector alone selects every pod of the matching namespaces", () => {
  const m = compile([
    policy("x", "p", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "y" } } }] }] }),
  ]);
  assert.deepEqual(setOf(m, "nssel=team In y pods=").v4, ["10.1.2.4", "10.1.2.5", "10.1.2.6"]);
});

Deno.test("podSelector and namespaceSelector in one peer intersect", () => {
  const m = compile([policy("x", "p", {
    ingress: [{
      from: [{
        namespaceSelector: { matchExpressions: [{ key: "team", operator: "In", values: ["y", "z"] }] },
        podSelector: { matchLabels: { pod: "c" } },
      }],
    }],
  })]);
  assert.deepEqual(setOf(m, "nssel=team In y,z pods=pod In c").v4, ["10.1.2.6", "10.1.2.9"]);
});

Deno.test("the metadata.name label is implied on namespaces", () => {
  const m = compile([policy("x", "p", {
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "z" } } }] }],
  })]);
  assert.deepEqual(setOf(m, "nssel=kubernetes.io/metadata.name In z pods=").v4, [
    "10.1.2.7",
    "10.1.2.8",
    "10.1.2.9",
  ]);
});

Deno.test("matchExpressions In, NotIn, Exists and DoesNotExist select as Kubernetes does", () => {
  const l = { app: "web", tier: "front" };
  const m = (e: object) => {
    const r = parseSelector({ matchExpressions: [e as never] });
    assert.ok(r.ok);
    return r.selector.matches(l);
  };
  assert.equal(m({ key: "app", operator: "In", values: ["web", "db"] }), true);
  assert.equal(m({ key: "app", operator: "In", values: ["db"] }), false);
  assert.equal(m({ key: "app", operator: "NotIn", values: ["db"] }), true);
  assert.equal(m({ key: "app", operator: "NotIn", values: ["web"] }), false);
  assert.equal(m({ key: "missing", operator: "NotIn", values: ["x"] }), true);
  assert.equal(m({ key: "tier", operator: "Exists" }), true);
  assert.equal(m({ key: "missing", operator: "Exists" }), false);
  assert.equal(m({ key: "missing", operator: "DoesNotExist" }), true);
  assert.equal(m({ key: "tier", operator: "DoesNotExist" }), false);
  const both = parseSelector({
    matchLabels: { app: "web" },
    matchExpressions: [{ key: "tier", operator: "In", values: ["back"] }],
  });
  assert.ok(both.ok && !both.selector.matches(l), "matchLabels and matchExpressions are ANDed");
  for (
    const bad of [
      { key: "a", operator: "In", values: [] },
      { key: "a", operator: "Exists", values: ["x"] },
      { key: "a", operator: "Matches", values: ["x"] },
      { operator: "Exists" },
    ]
  ) {
    assert.equal(parseSelector({ matchExpressions: [bad as never] }).ok, false, JSON.stringify(bad));
  }
});

Deno.test("equal selectors written differently share one set", () => {
  const m = compile([
    policy("x", "p1", { ingress: [{ from: [{ podSelector: { matchLabels: { pod: "b", z: "1" } } }] }] }),
    policy("x", "p2", { ingress: [{ from: [{ podSelector: { matchLabels: { z: "1", pod: "b" } } }] }] }),
  ]);
  assert.equal(m.podSets.size, 1);
});

Deno.test("ipBlock with except becomes disjoint ranges, for IPv4 and IPv6", () => {
  const r4 = ipBlockRanges("10.0.0.0/24", ["10.0.0.128/25", "10.0.0.8/30"]);
  assert.ok(r4.ok);
  assert.deepEqual(r4.ranges.elements, ["10.0.0.0/29", "10.0.0.12-10.0.0.127"]);
  const r6 = ipBlockRanges("fd00::/64", ["fd00::/65"]);
  assert.ok(r6.ok);
  assert.deepEqual(r6.ranges.elements, ["fd00::8000:0:0:0/65"]);
  const single = ipBlockRanges("10.0.0.0/31", ["10.0.0.0/32"]);
  assert.ok(single.ok);
  assert.deepEqual(single.ranges.elements, ["10.0.0.1"]);
  assert.equal(ipBlockRanges("10.0.0.0/33", []).ok, false);
  assert.equal(ipBlockRanges("10.0.0.0/24", ["10.0.1.0/28"]).ok, false);
  assert.equal(ipBlockRanges("10.0.0.0/24", ["fd00::/64"]).ok, false);
  assert.equal(ipBlockRanges("10.0.0.0/24", ["10.0.0.0/24"]).ok, false, "except must be a strict subset");
});

Deno.test("ports: numbers, endPort ranges, protocol default TCP, UDP and SCTP, protocol-only", () => {
  const m = compile([policy("x", "p", {
    ingress: [{
      ports: [
        { port: 80 },
        { protocol: "UDP", port: 53 },
        { protocol: "SCTP", port: 9000, endPort: 9010 },
        { protocol: "UDP" },
      ],
    }],
  })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.ports, [
    { protocol: "tcp", first: 80 },
    { protocol: "udp", first: 53 },
    { protocol: "sctp", first: 9000, last: 9010 },
    { protocol: "udp" },
  ]);
});

Deno.test("ingress named ports resolve on each target pod, by name and protocol", () => {
  const m = compile([policy("x", "p", {
    ingress: [{ ports: [{ port: "serve-80" }, { protocol: "UDP", port: "serve-81-udp" }] }],
  })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.ports, [{ protocol: "tcp", first: 80 }, {
    protocol: "udp",
    first: 81,
  }]);
  // x/b declares serve-80 as 8080 and no serve-81-udp: the name allows nothing there, and is reported.
  assert.deepEqual(m.ingress.get("x/b")!.rules[0]!.ports, [{ protocol: "tcp", first: 8080 }]);
  assert.ok(
    m.problems.some((p) =>
      p.policy === "x/p" && p.message.includes("serve-81-udp") && p.message.includes("x/b")
    ),
  );
});

Deno.test("a named port no target pod declares allows nothing rather than every port", () => {
  const m = compile([policy("x", "p", { ingress: [{ ports: [{ port: "nope" }] }] })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.ports, []);
});

Deno.test("egress named ports resolve on each destination pod", () => {
  const m = compile([policy("x", "p", {
    policyTypes: ["Egress"],
    egress: [{
      to: [{
        namespaceSelector: {},
        podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["a", "b"] }] },
      }],
      ports: [{ port: "serve-80" }],
    }],
  })]);
  const rule = m.egress.get("x/a")!.rules[0]!;
  assert.deepEqual(rule.ports, []);
  assert.equal(rule.namedPortSets.length, 1);
  const set = m.portSets.get(rule.namedPortSets[0]!)!;
  assert.deepEqual(set.v4, [
    "10.1.1.1 . tcp . 80",
    "10.1.1.2 . tcp . 8080",
    "10.1.2.4 . tcp . 8080",
    "10.1.2.5 . tcp . 8080",
    "10.1.2.7 . tcp . 8080",
    "10.1.2.8 . tcp . 8080",
  ]);
  assert.ok(set.v6.includes("fd00:1::1 . tcp . 80"));
});

Deno.test("egress named port to an ipBlock resolves on pods inside the block", () => {
  const m = compile([policy("x", "p", {
    policyTypes: ["Egress"],
    egress: [{ to: [{ ipBlock: { cidr: "10.1.1.0/24" } }], ports: [{ port: "serve-80" }, { port: 443 }] }],
  })]);
  const rule = m.egress.get("x/b")!.rules[0]!;
  assert.deepEqual(rule.ports, [{ protocol: "tcp", first: 443 }]);
  assert.deepEqual(m.portSets.get(rule.namedPortSets[0]!)!.v4, [
    "10.1.1.1 . tcp . 80",
    "10.1.1.2 . tcp . 8080",
  ]);
  assert.deepEqual(m.portSets.get(rule.namedPortSets[0]!)!.v6, []);
});

Deno.test("several policies add up on one pod, each rule tagged with its policy", () => {
  const m = compile([
    policy("x", "a", { ingress: [{ ports: [{ port: 80 }] }] }),
    policy("x", "b", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ ports: [{ port: 81 }] }] }),
  ]);
  const pp = m.ingress.get("x/a")!;
  assert.deepEqual(pp.policies, ["x/a", "x/b"]);
  assert.deepEqual(pp.rules.map((r) => [r.policy, r.ports]), [
    ["x/a", [{ protocol: "tcp", first: 80 }]],
    ["x/b", [{ protocol: "tcp", first: 81 }]],
  ]);
  assert.deepEqual(m.ingress.get("x/b")!.policies, ["x/a"]);
});

Deno.test("a policy in another namespace does not select this namespace's pods", () => {
  const m = compile([policy("y", "deny", {})]);
  assert.equal(m.ingress.size, 0);
});

Deno.test("an invalid CIDR drops that peer only; the rest of the rule stays", () => {
  const m = compile([policy("x", "bad", {
    ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/40" } }, { podSelector: {} }] }],
  })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.peers, [{ kind: "pods", set: "ns=x pods=" }]);
  assert.ok(m.problems.some((p) => p.policy === "x/bad" && p.message.includes("10.0.0.0/40")));
});

Deno.test("a rule whose peers are all invalid allows nothing, it does not become allow-all", () => {
  const m = compile([policy("x", "bad", {
    ingress: [{
      from: [{ ipBlock: { cidr: "nope" } }, { ipBlock: { cidr: "10.0.0.0/8" }, podSelector: {} }, {}],
    }],
  })]);
  const pp = m.ingress.get("x/a")!;
  assert.deepEqual(pp.policies, ["x/bad"], "the pod stays isolated");
  assert.deepEqual(pp.rules[0]!.peers, []);
  assert.equal(m.problems.filter((p) => p.policy === "x/bad").length, 4);
});

Deno.test("an unknown protocol drops that port; a list left empty allows nothing", () => {
  const m = compile([policy("x", "bad", {
    ingress: [{ ports: [{ protocol: "ICMP", port: 1 }, { port: 80 }] }, { ports: [{ protocol: "GRE" }] }],
  })]);
  const rules = m.ingress.get("x/a")!.rules;
  assert.deepEqual(rules[0]!.ports, [{ protocol: "tcp", first: 80 }]);
  assert.deepEqual(rules[1]!.ports, []);
});

Deno.test("bad endPort and numeric-string ports are dropped with a problem", () => {
  const m = compile([policy("x", "bad", {
    ingress: [{
      ports: [
        { port: 90, endPort: 80 },
        { port: "http", endPort: 90 } as never,
        { port: "80" },
        { port: 0 },
        { endPort: 5 },
      ],
    }],
  })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.ports, []);
  assert.equal(m.problems.filter((p) => p.policy === "x/bad").length, 6);
});

Deno.test("an unparsable podSelector isolates the whole namespace and allows nothing", () => {
  const m = compile([
    policy("x", "bad", {
      podSelector: { matchExpressions: [{ key: "pod", operator: "Near", values: ["a"] }] },
      ingress: [{}],
    }),
    policy("x", "good", { podSelector: { matchLabels: { pod: "b" } }, ingress: [{ ports: [{ port: 80 }] }] }),
  ]);
  assert.deepEqual(m.ingress.get("x/a")!.rules, []);
  assert.deepEqual(m.ingress.get("x/a")!.policies, ["x/bad"]);
  assert.deepEqual(
    m.ingress.get("x/b")!.rules.map((r) => r.policy),
    ["x/good"],
    "the other policy stays enforced",
  );
  assert.ok(m.problems.some((p) => p.policy === "x/bad" && p.message.includes("Near")));
});

Deno.test("an unparsable peer selector drops that peer", () => {
  const m = compile([policy("x", "bad", {
    ingress: [{
      from: [{ namespaceSelector: { matchExpressions: [{ key: "t", operator: "In", values: [] }] } }],
    }],
  })]);
  assert.deepEqual(m.ingress.get("x/a")!.rules[0]!.peers, []);
});

Deno.test("an unknown policyType isolates both directions", () => {
  const m = compile([policy("x", "bad", { policyTypes: ["Ingres" as never] })]);
  assert.deepEqual(m.policies.get("x/bad"), { ingress: true, egress: true });
  assert.ok(m.egress.has("x/a") && m.ingress.has("x/a"));
});

Deno.test("unknown local addresses are denied when a pod without an IP is already selected", () => {
  const pods = [...cluster(), pod("x", "new", { labels: { pod: "new" }, ips: [] })];
  const m = compile([
    policy("x", "p", { podSelector: { matchLabels: { pod: "new" } }, policyTypes: ["Ingress"] }),
  ], { pods });
  assert.deepEqual(m.unknownLocal, { ingress: "deny", egress: "accept" });
  const notSelected = compile([policy("x", "p", { podSelector: { matchLabels: { pod: "a" } } })], { pods });
  assert.deepEqual(notSelected.unknownLocal, { ingress: "accept", egress: "accept" });
  const remote = [...cluster(), pod("x", "new", { node: "n2", labels: { pod: "new" }, ips: [] })];
  assert.deepEqual(compile([policy("x", "p", {})], { pods: remote }).unknownLocal.ingress, "accept");
});

Deno.test("--netpol-default-deny denies unknown local addresses in both directions", () => {
  assert.deepEqual(compile([], { defaultDeny: true }).unknownLocal, { ingress: "deny", egress: "deny" });
});

Deno.test("a relabelled pod moves between sets on the next compile", () => {
  const p = [
    policy("x", "p", {
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: "client" } } }] }],
    }),
  ];
  const before = compile(p);
  assert.deepEqual(setOf(before, "nssel= pods=role In client").v4, []);
  const after = compile(p, { pods: cluster({ "z/c": { labels: { pod: "c", role: "client" } } }) });
  assert.deepEqual(setOf(after, "nssel= pods=role In client").v4, ["10.1.2.9"]);
});

Deno.test("a compile carrying caches from earlier compiles gives the same model as a fresh one", async () => {
  const { CompilerState } = await import("../../../modules/firewall/policy_compiler.ts");
  const memo = new CompilerState();
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  const nss = [ns("x", { team: "x" }), ns("y", { team: "y" }), ns("z", { team: "z" })];
  let pods = cluster();
  const policies = [
    policy("x", "p1", {
      ingress: [{
        from: [{
          namespaceSelector: { matchLabels: { team: "y" } },
          podSelector: { matchLabels: { role: "c" } },
        }],
      }],
    }),
    policy("x", "p2", {
      podSelector: { matchLabels: { pod: "a" } },
      ingress: [{
        from: [{ podSelector: { matchExpressions: [{ key: "role", operator: "Exists" }] } }],
        ports: [{ port: "serve-80" }],
      }],
    }),
    policy("x", "p3", {
      policyTypes: ["Egress"],
      egress: [
        { to: [{ namespaceSelector: { matchLabels: { team: "z" } } }], ports: [{ port: "serve-80" }] },
        { to: [{ ipBlock: { cidr: "10.1.2.0/24" } }], ports: [{ port: "serve-80" }] },
        { ports: [{ port: "serve-80" }] },
      ],
    }),
  ];
  for (let step = 0; step < 200; step++) {
    const i = rand(pods.length);
    const p = structuredClone(pods[i]!);
    switch (rand(4)) {
      case 0:
        p.metadata!.labels = { ...p.metadata!.labels, role: ["c", "d"][rand(2)]! };
        pods = pods.map((q, j) => (j === i ? p : q));
        break;
      case 1:
        pods = pods.filter((_, j) => j !== i);
        break;
      case 2:
        pods = [
          ...pods,
          pod(["x", "y", "z"][rand(3)]!, `new-${step}`, {
            node: rand(2) ? "n1" : "n2",
            labels: { pod: "n", ...(rand(2) ? { role: "c" } : {}) },
            ips: [`10.1.${1 + rand(2)}.${100 + step}`],
            ports: rand(2) ? ["serve-80:9000/TCP"] : [],
          }),
        ];
        break;
      default: {
        const k = rand(3);
        nss[k] = ns(nss[k]!.metadata!.name!, { team: ["x", "y", "z"][rand(3)]! });
      }
    }
    const input = { nodeName: "n1", pods, namespaces: [...nss], policies };
    assert.deepStrictEqual(compileFirewall(input, memo), compileFirewall(input), `step ${step}`);
  }
});
