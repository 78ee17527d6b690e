import assert from "node:assert/strict";
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";
import { FakeNftables, NftTransaction } from "../../../ffi/mod.ts";
import { compileFirewall } from "../../../modules/firewall/policy_compiler.ts";
import {
  type DesiredTable,
  DROPS_SET,
  fullSyncOps,
  incrementalOps,
  policyDropKey,
  renderFirewall,
} from "../../../modules/firewall/nft_render.ts";
import { FirewallState } from "../../../modules/firewall/firewall_state.ts";
import { ns, pod, policy } from "./_fixtures.ts";

/** A table as plain sorted data, to compare two renderings whatever their insertion order. */
function plain(t: DesiredTable) {
  return {
    chains: [...t.chains].sort(([a], [b]) => (a < b ? -1 : 1)).map(([n, c]) => [n, c.spec, c.rules]),
    sets: [...t.sets].sort(([a], [b]) => (a < b ? -1 : 1)).map((
      [n, s],
    ) => [n, s.kind, s.spec, [...s.elements].sort(([a], [b]) => (a < b ? -1 : 1))]),
  };
}

/** A dump's chains and sets, whatever order they were created in. */
function blocks(dump: string): string[] {
  return dump.trimEnd().replace(/\n\}$/, "").split("\n\n").map((b) => b.trim()).sort();
}

/** Every construct the compiler knows, valid and broken, spread over namespaces x, y and z. */
const POLICIES: V1NetworkPolicy[] = [
  policy("x", "from-team-y-clients", {
    ingress: [{
      from: [{
        namespaceSelector: { matchLabels: { team: "y" } },
        podSelector: { matchLabels: { role: "c" } },
      }],
    }],
  }),
  policy("x", "a-named-port", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{
      from: [{ podSelector: { matchExpressions: [{ key: "role", operator: "Exists" }] } }],
      ports: [{ port: "serve-80" }, { protocol: "UDP", port: 53 }],
    }],
  }),
  policy("x", "egress-named", {
    policyTypes: ["Egress"],
    egress: [
      { to: [{ namespaceSelector: { matchLabels: { team: "z" } } }], ports: [{ port: "serve-80" }] },
      {
        to: [{ ipBlock: { cidr: "10.1.2.0/24", except: ["10.1.2.128/25"] } }],
        ports: [{ port: "serve-80" }],
      },
      { ports: [{ port: "serve-80" }] },
    ],
  }),
  policy("y", "ipblock-endport", {
    podSelector: { matchLabels: { role: "c" } },
    ingress: [{
      from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.1.1.0/24", "10.2.0.0/16"] } }],
      ports: [{ port: 9000, endPort: 9100 }, { protocol: "SCTP", port: 7 }],
    }],
  }),
  policy("y", "deny-all", { policyTypes: ["Ingress", "Egress"] }),
  policy("z", "prod-only", {
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: "prod" } } }] }],
    egress: [{ to: [{ podSelector: { matchLabels: { pod: "b" } } }] }],
  }),
  policy("z", "broken-selector", {
    podSelector: { matchExpressions: [{ key: "pod", operator: "Bogus" }] },
    ingress: [{}],
  }),
  policy("x", "bad-parts", {
    podSelector: { matchLabels: { pod: "b" } },
    ingress: [{ from: [{ ipBlock: { cidr: "nope" } }, { podSelector: {} }], ports: [{ protocol: "ICMP" }] }],
  }),
  policy("z", "v6-block", {
    podSelector: {},
    policyTypes: ["Egress"],
    egress: [{ to: [{ ipBlock: { cidr: "fd00:1::/64", except: ["fd00:1::/96"] } }] }],
  }),
];

async function run(seed: number, steps: number, defaultDeny: boolean) {
  // mulberry32: a small seeded generator whose low bits are as random as its high ones.
  let s = seed >>> 0;
  const rand = (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296 * n) | 0;
  };
  const pick = <T>(xs: readonly T[]) => xs[rand(xs.length)]!;
  let ipSeq = 1;
  const namespaces = new Map<string, V1Namespace>();
  const pods = new Map<string, V1Pod>();
  const policies = new Map<string, V1NetworkPolicy>();
  const key = (o: { metadata?: { namespace?: string; name?: string } }) =>
    `${o.metadata!.namespace}/${o.metadata!.name}`;
  const makePod = (namespace: string, name: string) => {
    const n = ipSeq++;
    const noIp = rand(8) === 0;
    return pod(namespace, name, {
      node: rand(2) ? "n1" : "n2",
      labels: { pod: pick(["a", "b", "c"]), ...(rand(2) ? { role: pick(["c", "d"]) } : {}) },
      ips: noIp ? [] : rand(3) ? [`10.1.${1 + rand(2)}.${n % 250}`, `fd00:1::${n.toString(16)}`] : [
        `10.1.${1 + rand(2)}.${n % 250}`,
      ],
      ports: rand(2) ? ["serve-80:80/TCP"] : ["serve-80:8080/TCP", "dns:53/UDP"],
      ...(rand(12) === 0 ? { hostNetwork: true } : {}),
      ...(rand(12) === 0 ? { phase: "Succeeded" } : {}),
    });
  };
  for (const n of ["x", "y", "z"]) namespaces.set(n, ns(n, { team: n }));
  for (let i = 0; i < 20; i++) {
    const p = makePod(pick(["x", "y", "z"]), `p${i}`);
    pods.set(key(p), p);
  }
  for (const p of POLICIES.slice(0, 4)) policies.set(key(p), p);
  const state = new FirewallState({ nodeName: "n1", defaultDeny });
  const podCidrs = ["10.1.1.0/24", "fd00:1::/64"];
  state.setPodCidrs(podCidrs);
  for (const [k, v] of namespaces) state.setNamespace(k, v);
  for (const [k, v] of pods) state.setPod(k, v);
  for (const [k, v] of policies) state.setPolicy(k, v);

  const fresh = () =>
    renderFirewall(
      compileFirewall({
        nodeName: "n1",
        pods: [...pods.values()],
        namespaces: [...namespaces.values()],
        policies: [...policies.values()],
        defaultDeny,
      }),
      { podCidrs },
    );
  const kernel = new FakeNftables();
  let programmed = state.table();
  await kernel.run(fullSyncOps(new NftTransaction("inet", "kube_router_firewall"), programmed, undefined));
  let programmedPlain = JSON.stringify(plain(programmed));

  for (let step = 0; step < steps; step++) {
    // Ensure objects are ours to replace: the state keys facts by object, as the watch caches hand them.
    switch (rand(10)) {
      case 0:
      case 1: { // a new pod, or a replaced one (new labels, address, node, ports)
        const p = makePod(pick(["x", "y", "z"]), `p${rand(30)}`);
        pods.set(key(p), p);
        state.setPod(key(p), p);
        break;
      }
      case 2:
      case 3: { // a pod relabelled in place
        const old = pick([...pods.values()]);
        if (!old) break;
        const p = structuredClone(old);
        p.metadata!.labels = { ...p.metadata!.labels, role: pick(["c", "d", "e"]) };
        pods.set(key(p), p);
        state.setPod(key(p), p);
        break;
      }
      case 4: { // a pod deleted
        const k = pick([...pods.keys()]);
        if (!k || pods.size < 10) break;
        pods.delete(k);
        state.setPod(k, undefined);
        break;
      }
      case 5: { // a namespace relabelled, deleted or (re)created
        const n = pick(["x", "y", "z"]);
        if (rand(5) === 0) {
          namespaces.delete(n);
          state.setNamespace(n, undefined);
        } else {
          const o = ns(n, { team: pick(["x", "y", "z"]), ...(rand(2) ? { env: "prod" } : {}) });
          namespaces.set(n, o);
          state.setNamespace(n, o);
        }
        break;
      }
      case 6:
      case 7: { // a policy added or replaced (a new object), sometimes moved to another name
        const p = structuredClone(pick(POLICIES));
        if (rand(3) === 0) p.metadata!.name = `${p.metadata!.name}-${rand(3)}`;
        policies.set(key(p), p);
        state.setPolicy(key(p), p);
        break;
      }
      case 8: { // a policy deleted
        const k = pick([...policies.keys()]);
        if (!k || policies.size < 3) break;
        policies.delete(k);
        state.setPolicy(k, undefined);
        break;
      }
      default: { // a pod gets its address (or a new one), or loses it
        const old = pick([...pods.values()]);
        if (!old) break;
        const p = structuredClone(old);
        const n = ipSeq++;
        p.status!.podIPs = rand(4) ? [{ ip: `10.1.${1 + rand(2)}.${n % 250}` }] : [];
        pods.set(key(p), p);
        state.setPod(key(p), p);
      }
    }
    // Several changes may land in one sync.
    if (rand(3) === 0) continue;
    const next = state.table();
    assert.deepStrictEqual(
      plain(next),
      plain(fresh()),
      `seed ${seed} step ${step}: state equals a fresh render`,
    );
    assert.equal(
      JSON.stringify(plain(programmed)),
      programmedPlain,
      `seed ${seed} step ${step}: the previous snapshot was not changed`,
    );
    // The incremental transaction is valid in order (the fake refuses dangling references) and lands
    // the kernel exactly where a full load of the fresh render does.
    const tx = new NftTransaction("inet", "kube_router_firewall");
    incrementalOps(tx, programmed, next);
    await kernel.run(tx);
    const reference = new FakeNftables();
    await reference.run(fullSyncOps(new NftTransaction("inet", "kube_router_firewall"), fresh(), undefined));
    assert.deepStrictEqual(
      blocks(kernel.dump()),
      blocks(reference.dump()),
      `seed ${seed} step ${step}: kernel after the transaction`,
    );
    programmed = next;
    programmedPlain = JSON.stringify(plain(programmed));
  }
}

Deno.test("the incrementally kept table equals a fresh compile and render after every change", async () => {
  for (const seed of [1, 2, 3]) await run(seed, 250, false);
});

Deno.test("with --netpol-default-deny the kept table also equals a fresh one", async () => {
  await run(11, 150, true);
});

Deno.test("a new replica costs elements only: pods with the same rules share one chain", () => {
  const state = new FirewallState({ nodeName: "n1" });
  state.setPodCidrs(["10.1.1.0/24"]);
  for (const n of ["x", "y"]) state.setNamespace(n, ns(n, { team: n }));
  for (let i = 0; i < 20; i++) {
    const p = pod(i % 2 ? "x" : "y", `p${i}`, {
      labels: { pod: `p${i}`, app: "web" },
      ips: [`10.1.1.${i + 10}`],
    });
    state.setPod(`${p.metadata!.namespace}/p${i}`, p);
  }
  for (const n of ["x", "y"]) {
    state.setPolicy(
      `${n}/web`,
      policy(n, "web", { ingress: [{ from: [{ podSelector: { matchLabels: { app: "web" } } }] }] }),
    );
  }
  const before = state.table();
  assert.equal([...before.chains.keys()].filter((n) => n.startsWith("in-")).length, 2, "one per namespace");
  const changed = (a: DesiredTable, b: DesiredTable) => ({
    chains: [...b.chains].filter(([n, c]) => a.chains.get(n) !== c).map(([n]) => n),
    sets: [...b.sets].filter(([n, s]) => a.sets.get(n) !== s).map(([n]) => n).sort(),
  });
  state.setPod("x/new", pod("x", "new", { labels: { app: "web" }, ips: ["10.1.1.99"] }));
  const after = state.table();
  const c1 = changed(before, after);
  assert.deepEqual(c1.chains, [], "the replica joins its siblings' chain");
  assert.deepEqual(
    c1.sets,
    ["ingress-v4", "local-pods-v4", c1.sets.find((n) => n.startsWith("pods-"))!].sort(),
    "the verdict map, local-pods and the one peer set the pod joins",
  );
  const tx = new NftTransaction("inet", "kube_router_firewall");
  incrementalOps(tx, before, after);
  const text = tx.render();
  assert.match(text, /10\.1\.1\.99 : goto in-/);
  assert.doesNotMatch(text, /(add|flush) (chain|rule)/, "elements only");

  // A pod whose rules differ (a second family) gets a chain of its own, and only that one.
  state.setPod("x/dual", pod("x", "dual", { labels: { app: "web" }, ips: ["10.1.1.98", "fd00::98"] }));
  const c2 = changed(after, state.table());
  assert.equal(c2.chains.length, 1, `one new chain: ${c2.chains}`);
  assert.match(c2.chains[0]!, /^in-[0-9a-f]{16}$/);
  const t2 = new NftTransaction("inet", "kube_router_firewall");
  incrementalOps(t2, after, state.table());
  assert.doesNotMatch(t2.render(), /\{ 10\.[0-9.]+, /, "no rule carries an anonymous set");
});

Deno.test("a full sync keeps policy-drops and its counters, deleting only stale policies' elements", () => {
  const state = new FirewallState({ nodeName: "n1" });
  state.setNamespace("x", ns("x"));
  const p = pod("x", "a", { ips: ["10.1.1.2"] });
  state.setPod("x/a", p);
  state.setPolicy("x/deny", policy("x", "deny", {}));
  const table = state.table();
  const drops = table.sets.get(DROPS_SET)!;
  assert.deepEqual([...drops.elements.keys()], [policyDropKey("x/deny")]);
  const existing = {
    chains: new Set(table.chains.keys()),
    sets: new Map([...table.sets].map(([k, v]) => [k, { kind: v.kind, spec: v.spec }])),
    dropKeys: new Set([policyDropKey("x/deny"), policyDropKey("x/gone")]),
  };
  const text = fullSyncOps(new NftTransaction("inet", "kube_router_firewall"), table, existing).render();
  assert.doesNotMatch(text, /flush set inet kube_router_firewall policy-drops/);
  assert.match(text, /flush set inet kube_router_firewall local-pods-v4/);
  assert.match(
    text,
    new RegExp(`delete element inet kube_router_firewall policy-drops \\{ ${policyDropKey("x/gone")} \\}`),
  );
  assert.doesNotMatch(text, new RegExp(`delete element [^\\n]*${policyDropKey("x/deny")}`));
  assert.match(text, /update @policy-drops \{ 0x[0-9a-f]{8} \. 0x[0-9a-f]{8} \} comment "x\/deny"/);
  // Unreadable (no dropKeys): flushed and refilled rather than left with stale elements.
  const { dropKeys: _, ...unread } = existing;
  const blind = fullSyncOps(new NftTransaction("inet", "kube_router_firewall"), table, unread).render();
  assert.match(blind, /flush set inet kube_router_firewall policy-drops/);
});
