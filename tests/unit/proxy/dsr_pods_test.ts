/**
 * The DSR pod side (NetnsDsrPods) over in-memory kernels: one FakeRtnetlink per pod namespace, a node whose
 * route to each pod leaves through a veth naming the pod's netnsid. What a pod holds after ensure and
 * prune, a pod that is gone, and tunnels an earlier run left behind. (Finding namespaces on a real kernel:
 * tests/integration/proxy/dsr_pods_test.ts; the tunnel and traffic: tests/vm/proxy/dsr_guest.ts.)
 */
import assert from "node:assert/strict";
import { FakeRtnetlink, FakeSysctl, type Link } from "../../../ffi/mod.ts";
import {
  DSR_TUNNEL_IF,
  DsrPodError,
  type DsrPodsDeps,
  NetnsDsrPods,
  type PodRtnl,
} from "../../../modules/proxy/mod.ts";

interface FakePod {
  path: string;
  nsid: number;
  ip: string;
  rtnl: FakeRtnetlink;
  sysctl: FakeSysctl;
}

/** A pod's fake kernel seen through one "socket" (closing it leaves the namespace as it is). */
function view(r: FakeRtnetlink): PodRtnl {
  return {
    linkGet: (n) => r.linkGet(n),
    linkList: () => r.linkList(),
    linkAdd: (spec) => r.linkAdd(spec),
    linkDel: (n) => r.linkDel(n),
    linkSet: (n, c) => r.linkSet(n, c),
    addrList: (f) => r.addrList(f),
    addrAdd: (a) => r.addrAdd(a),
    addrDel: (a) => r.addrDel(a),
    close: () => {},
  };
}

async function world(pods: { ip: string }[]) {
  const made: FakePod[] = [];
  for (const [i, p] of pods.entries()) {
    const rtnl = new FakeRtnetlink();
    await rtnl.linkAdd({ kind: "dummy", name: "eth0", up: true });
    const eth0 = (await rtnl.linkGet("eth0"))!;
    await rtnl.addrAdd({ family: 4, index: eth0.index, address: p.ip, prefix: 24 });
    const sysctl = new FakeSysctl({
      "net.ipv4.conf.all.rp_filter": 2,
      [`net.ipv4.conf.${DSR_TUNNEL_IF[4]}.rp_filter`]: 2,
    });
    made.push({ path: `/run/netns/pod${i}`, nsid: i + 10, ip: p.ip, rtnl, sysctl });
  }
  const gone = new Set<string>();
  const vethOf = (p: FakePod, i: number): Link => ({
    index: 100 + i,
    name: `veth${i}`,
    kind: "veth",
    mtu: 1500,
    up: true,
    lowerUp: true,
    flags: 0,
    master: 50,
    linkNetnsid: p.nsid,
  });
  const bridge: Link = {
    index: 50,
    name: "kbr0",
    kind: "bridge",
    mtu: 1500,
    up: true,
    lowerUp: true,
    flags: 0,
  };
  let listed = 0;
  const deps: DsrPodsDeps = {
    node: {
      routeGet: (addr: string) =>
        Promise.resolve(
          addr.startsWith("10.1.1.") ? { family: 4 as const, dst: `${addr}/32`, dev: 50 } : undefined,
        ),
      linkList: () => Promise.resolve([bridge, ...made.filter((p) => !gone.has(p.path)).map(vethOf)]),
      nsidOf: (path: string) => Promise.resolve(made.find((p) => p.path === path)?.nsid),
    },
    openPod: (path: string): PodRtnl => {
      const p = made.find((x) => x.path === path && !gone.has(path));
      if (!p) throw new Error(`ENOENT ${path}`);
      return view(p.rtnl);
    },
    podSysctl: (path: string) => made.find((x) => x.path === path)!.sysctl,
    listNetns: () => {
      listed++;
      return made.filter((p) => !gone.has(p.path)).map((p) => p.path);
    },
    identity: (
      path: string,
    ) => (gone.has(path) || !made.some((p) => p.path === path) ? undefined : `id:${path}`),
  };
  const holds = async (p: FakePod) => {
    const link = await p.rtnl.linkGet(DSR_TUNNEL_IF[4]);
    if (!link) return undefined;
    return (await p.rtnl.addrList({ index: link.index })).map((a) => `${a.address}/${a.prefix}`).sort();
  };
  return { pods: new NetnsDsrPods(deps), deps, made, gone, holds, listed: () => listed };
}

Deno.test("DSR puts kube-tunnel-if (ipip, local = pod IP) with the VIPs into the pod found behind the bridge, rp_filter off", async () => {
  const w = await world([{ ip: "10.1.1.11" }, { ip: "10.1.1.12" }]);
  await w.pods.ensure("10.1.1.12", ["203.0.113.7", "198.51.100.9", "fd00::7"]);
  const p = w.made[1]!;
  const link = (await p.rtnl.linkGet(DSR_TUNNEL_IF[4]))!;
  assert.equal(link.kind, "ipip");
  assert.equal(link.tunnel?.local, "10.1.1.12");
  assert.ok(link.up);
  assert.deepEqual(await w.holds(p), ["198.51.100.9/32", "203.0.113.7/32"], "only the pod's family");
  assert.equal(await p.sysctl.get("net.ipv4.conf.all.rp_filter"), "0");
  assert.equal(await p.sysctl.get(`net.ipv4.conf.${DSR_TUNNEL_IF[4]}.rp_filter`), "0");
  assert.equal(await w.holds(w.made[0]!), undefined, "the other pod is left alone");
  assert.equal(w.pods.located.get("10.1.1.12"), "/run/netns/pod1");
  // Again: nothing changes, and the namespace is not searched for again.
  const before = w.listed();
  await w.pods.ensure("10.1.1.12", ["203.0.113.7", "198.51.100.9"]);
  assert.equal(w.listed(), before);
  assert.deepEqual(await w.holds(p), ["198.51.100.9/32", "203.0.113.7/32"]);
});

Deno.test("prune takes back the VIPs no Service wants and the tunnel of a pod left with none", async () => {
  const w = await world([{ ip: "10.1.1.11" }, { ip: "10.1.1.12" }]);
  await w.pods.ensure("10.1.1.11", ["203.0.113.7", "203.0.113.8"]);
  await w.pods.ensure("10.1.1.12", ["203.0.113.7"]);
  assert.deepEqual(
    await w.pods.prune(
      new Map([["10.1.1.11", new Set(["203.0.113.8"])], ["10.1.1.12", new Set(["203.0.113.7"])]]),
    ),
    [],
  );
  assert.deepEqual(await w.holds(w.made[0]!), ["203.0.113.8/32"]);
  assert.deepEqual(await w.holds(w.made[1]!), ["203.0.113.7/32"]);
  assert.deepEqual(await w.pods.prune(new Map([["10.1.1.12", new Set(["203.0.113.7"])]])), []);
  assert.equal(await w.holds(w.made[0]!), undefined, "no VIP left: the interface goes");
  assert.deepEqual(await w.holds(w.made[1]!), ["203.0.113.7/32"]);
  // A pod that is gone is forgotten without an error (its interfaces went with its namespace).
  w.gone.add(w.made[1]!.path);
  assert.deepEqual(await w.pods.prune(new Map()), []);
  assert.equal(w.pods.located.size, 0);
});

Deno.test("a pod IP no namespace behind the node's veths holds, or with no route, is a DsrPodError naming it", async () => {
  const w = await world([{ ip: "10.1.1.11" }]);
  await assert.rejects(
    () => w.pods.ensure("10.1.1.99", ["203.0.113.7"]),
    (e: unknown) =>
      e instanceof DsrPodError && /^pod 10\.1\.1\.99: no network namespace behind kbr0/.test(e.message),
  );
  await assert.rejects(
    () => w.pods.ensure("10.9.9.9", ["203.0.113.7"]),
    (e: unknown) => e instanceof DsrPodError && /no route/.test(e.message),
  );
  // A pod whose kernel refuses ipip: named, with the reason.
  w.made[0]!.rtnl.unsupportedKinds.add("ipip");
  await assert.rejects(
    () => w.pods.ensure("10.1.1.11", ["203.0.113.7"]),
    (e: unknown) =>
      e instanceof DsrPodError && /^pod 10\.1\.1\.11: cannot set up kube-tunnel-if/.test(e.message),
  );
});

Deno.test("tunnels an earlier run left in pods are found on the first prune and removed when unwanted, and by cleanupAll", async () => {
  const w = await world([{ ip: "10.1.1.11" }, { ip: "10.1.1.12" }]);
  await w.pods.ensure("10.1.1.11", ["203.0.113.7"]);
  await w.pods.ensure("10.1.1.12", ["203.0.113.7"]);
  // A new agent (a restart) knows nothing of them; only pod1 is still wanted.
  const { made } = w;
  const again = new NetnsDsrPods(w.deps);
  await again.ensure("10.1.1.11", ["203.0.113.7"]);
  assert.deepEqual(await again.prune(new Map([["10.1.1.11", new Set(["203.0.113.7"])]])), []);
  assert.deepEqual(await w.holds(made[0]!), ["203.0.113.7/32"]);
  assert.equal(await w.holds(made[1]!), undefined, "the leftover in pod2 is gone");
  assert.equal(await again.cleanupAll(), 1);
  assert.equal(await w.holds(made[0]!), undefined);
});
