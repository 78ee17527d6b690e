import assert from "node:assert/strict";
import type { ServiceEndpoint, ServiceInfo } from "../../../core/mod.ts";
import { ep, nodeCtx, svc } from "./_fixtures.ts";
import {
  FakeConntrack,
  FakeIpvs,
  type IpvsDestination,
  type IpvsService,
  IpvsServiceFlag,
  type IpvsServiceKey,
  NetlinkError,
} from "../../../ffi/mod.ts";
import { type IpvsPlanContext, mergePlans, planService } from "../../../modules/proxy/ipvs_plan.ts";
import { IpvsReconciler } from "../../../modules/proxy/ipvs_sync.ts";

/** n1 without a zone, NodePorts on its two addresses, IPv4 pod CIDRs only. */
const { zone: _zone, ...n1 } = nodeCtx;
const ctx: IpvsPlanContext = {
  ...n1,
  podCidrs: ["10.1.1.0/24", "10.1.2.0/24"],
  nodePortIps: ["192.168.1.100", "fd00::100"],
};

const three = [ep("10.1.1.5", { local: true }), ep("10.1.2.5"), ep("10.1.3.5")];
const addrs = (ds: readonly IpvsDestination[]) => ds.map((d) => `${d.address}:${d.port}/${d.weight}`);

Deno.test("a ClusterIP Service becomes one NAT virtual service per port with every ready endpoint at weight 1", () => {
  const p = planService(
    svc({
      ports: [
        { name: "http", protocol: "TCP", port: 80, endpoints: three },
        { name: "dns", protocol: "UDP", port: 53, endpoints: three.map((e) => ({ ...e, port: 5353 })) },
        { name: "s", protocol: "SCTP", port: 9, endpoints: [ep("10.1.2.5", { port: 99 })] },
      ],
    }),
    ctx,
  );
  assert.deepEqual(p.problems, []);
  assert.deepEqual(p.vips, ["172.16.0.10"]);
  assert.deepEqual(
    p.services.map((s) =>
      `${s.service.protocol} ${s.service.address}:${s.service.port} ${s.service.scheduler}`
    ),
    [
      "tcp 172.16.0.10:80 rr",
      "udp 172.16.0.10:53 rr",
      "sctp 172.16.0.10:9 rr",
    ],
  );
  assert.deepEqual(addrs(p.services[0]!.destinations), [
    "10.1.1.5:8080/1",
    "10.1.2.5:8080/1",
    "10.1.3.5:8080/1",
  ]);
  assert.ok(p.services.every((s) => s.destinations.every((d) => d.forward === "masq")));
  assert.deepEqual(addrs(p.services[2]!.destinations), ["10.1.2.5:99/1"]);
});

Deno.test("NodePort, external and LoadBalancer IPs get their own virtual services; out-of-range IPs are refused", () => {
  const p = planService(
    svc({
      type: "LoadBalancer",
      externalIPs: ["203.0.113.7", "8.8.8.8"],
      loadBalancerIPs: ["198.51.100.9"],
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.deepEqual(p.services.map((s) => `${s.kind} ${s.service.address}:${s.service.port}`), [
    "cluster 172.16.0.10:80",
    "external 203.0.113.7:80",
    "loadbalancer 198.51.100.9:80",
    "nodeport 192.168.1.100:30080",
  ]);
  assert.deepEqual(p.vips, ["172.16.0.10", "203.0.113.7", "198.51.100.9"]);
  assert.ok(p.problems.some((x) => x.includes("8.8.8.8")), p.problems.join("\n"));
});

Deno.test("externalTrafficPolicy Local keeps only this node's endpoints on external addresses, not on the cluster IP", () => {
  const p = planService(
    svc({
      type: "NodePort",
      externalTrafficPolicy: "Local",
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  const byKind = new Map(p.services.map((s) => [s.kind, addrs(s.destinations)]));
  assert.deepEqual(byKind.get("cluster"), ["10.1.1.5:8080/1", "10.1.2.5:8080/1", "10.1.3.5:8080/1"]);
  assert.deepEqual(byKind.get("nodeport"), ["10.1.1.5:8080/1"]);
  const itp = planService(svc({ internalTrafficPolicy: "Local" }, three), ctx);
  assert.deepEqual(addrs(itp.services[0]!.destinations), ["10.1.1.5:8080/1"]);
  const none = planService(svc({ internalTrafficPolicy: "Local" }, [ep("10.1.2.5")]), ctx);
  assert.deepEqual(
    none.services[0]!.destinations,
    [],
    "no local endpoint: the service exists, with no destination",
  );
});

Deno.test("externalTrafficPolicy Local leaves its external addresses unmasqueraded, so pods see the client", () => {
  const kinds = (p: ReturnType<typeof planService>) =>
    p.services.map((s) => `${s.kind} ${s.masquerade ? "masquerade" : "client kept"}`);
  const lb = (externalTrafficPolicy: "Local" | "Cluster") =>
    svc({
      type: "LoadBalancer",
      externalTrafficPolicy,
      externalIPs: ["203.0.113.7"],
      loadBalancerIPs: ["198.51.100.9"],
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    });
  assert.deepEqual(kinds(planService(lb("Local"), ctx)), [
    "cluster masquerade",
    "external client kept",
    "loadbalancer client kept",
    "nodeport client kept",
  ]);
  assert.ok(planService(lb("Cluster"), ctx).services.every((s) => s.masquerade));
});

Deno.test("loadBalancerSourceRanges go with the LoadBalancer IPs only, merged and per family", () => {
  const p = planService(
    svc({
      type: "LoadBalancer",
      clusterIPs: ["172.16.0.10", "fd00:172::10"],
      externalIPs: ["203.0.113.7"],
      loadBalancerIPs: ["198.51.100.9", "fd00:198::9"],
      loadBalancerSourceRanges: ["10.0.0.0/8", "10.9.0.0/16", " 192.0.2.0/24", "fd00:abc::/48"],
      ports: [
        {
          name: "http",
          protocol: "TCP",
          port: 80,
          nodePort: 30080,
          endpoints: [...three, ep("fd00:1::5", { family: 6 })],
        },
      ],
    }),
    { ...ctx, loadBalancerIpRanges: [...ctx.loadBalancerIpRanges, "fd00:198::/64"] },
  );
  const ranges = p.services.map((s) => `${s.kind} ${s.service.address} ${s.sourceRanges?.join(",") ?? "-"}`);
  assert.deepEqual(ranges.filter((r) => r.startsWith("loadbalancer")), [
    "loadbalancer 198.51.100.9 10.0.0.0/8,192.0.2.0/24",
    "loadbalancer fd00:198::9 fd00:abc::/48",
  ]);
  assert.ok(
    ranges.filter((r) => !r.startsWith("loadbalancer")).every((r) => r.endsWith(" -")),
    ranges.join("\n"),
  );
});

Deno.test("hairpin: every Service's destinations on this node are listed for masquerading, others never", () => {
  const p = planService(
    svc({
      type: "NodePort",
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.ok(p.services.length >= 2);
  for (const s of p.services) assert.deepEqual(s.hairpin, ["10.1.1.5"], s.kind);
});

Deno.test("ClientIP affinity becomes IPVS persistence with the Service's timeout", () => {
  const p = planService(svc({ sessionAffinityTimeoutSeconds: 600 }, three), ctx);
  const s = p.services[0]!.service;
  assert.equal((s.flags ?? 0) & IpvsServiceFlag.persistent, IpvsServiceFlag.persistent);
  assert.equal(s.timeout, 600);
  assert.equal(s.netmask, 32);
});

Deno.test("the scheduler annotation picks rr wrr lc wlc dh sh mh; schedflags set sched1-3 with mh as kube-router maps them", () => {
  for (const name of ["rr", "wrr", "lc", "wlc", "dh", "sh", "mh"]) {
    const p = planService(svc({ annotations: { "kube-router.io/service.scheduler": name } }, three), ctx);
    assert.equal(p.services[0]!.service.scheduler, name);
    assert.deepEqual(p.problems, []);
  }
  const mh = planService(
    svc({
      annotations: {
        "kube-router.io/service.scheduler": "mh",
        "kube-router.io/service.schedflags": "flag-1, flag-2",
      },
    }, three),
    ctx,
  );
  assert.equal(mh.services[0]!.service.flags, IpvsServiceFlag.sched1 | IpvsServiceFlag.sched2);
  const three3 = planService(
    svc({
      annotations: {
        "kube-router.io/service.scheduler": "mh",
        "kube-router.io/service.schedflags": "flag-3,bogus",
      },
    }, three),
    ctx,
  );
  assert.equal(three3.services[0]!.service.flags, IpvsServiceFlag.sched3);
  assert.ok(three3.problems.some((x) => x.includes('"bogus"')));
  const rr = planService(
    svc({ annotations: { "kube-router.io/service.schedflags": "flag-1" } }, three),
    ctx,
  );
  assert.equal(rr.services[0]!.service.flags, 0);
  assert.ok(rr.problems.some((x) => x.includes("mh scheduler only")));
});

Deno.test("an unknown scheduler is reported with the annotation's value and rr is used", () => {
  const p = planService(svc({ annotations: { "kube-router.io/service.scheduler": "fastest" } }, three), ctx);
  assert.equal(p.services[0]!.service.scheduler, "rr");
  assert.equal(p.problems.length, 1);
  assert.match(p.problems[0]!, /"fastest".*using rr/);
});

Deno.test("a DSR annotation other than tunnel is reported with the Service and its external IPs are served through NAT", () => {
  const p = planService(
    svc({ externalIPs: ["203.0.113.7"], annotations: { "kube-router.io/service.dsr": "direct" } }, three),
    ctx,
  );
  assert.match(p.problems.join("\n"), /service\.dsr="direct" is not "tunnel"/);
  assert.equal(p.dsr, undefined);
  const ext = p.services.find((s) => s.kind === "external")!;
  assert.ok(ext.destinations.length === 3 && ext.destinations.every((d) => d.forward === "masq"));
});

Deno.test("dual-stack Services get a virtual service per family; single-stack ones only in their family", () => {
  const p = planService(
    svc({ clusterIPs: ["172.16.0.10", "fd00:172::10"] }, [...three, ep("fd00:1:1::5", { local: true })]),
    ctx,
  );
  assert.deepEqual(
    p.services.map((s) => `${s.service.family} ${s.service.address} ${addrs(s.destinations).join(",")}`),
    [
      "4 172.16.0.10 10.1.1.5:8080/1,10.1.2.5:8080/1,10.1.3.5:8080/1",
      "6 fd00:172::10 fd00:1:1::5:8080/1",
    ],
  );
  assert.equal(p.services[1]!.service.netmask, 128);
});

Deno.test("two Services asking for one virtual service: the first by name keeps it, the other is reported", () => {
  const a = planService(svc({ key: "default/a", name: "a", externalIPs: ["203.0.113.7"] }, three), ctx);
  const b = planService(
    svc({ key: "default/b", name: "b", clusterIPs: ["172.16.0.11"], externalIPs: ["203.0.113.7"] }, three),
    ctx,
  );
  const plan = mergePlans([b, a]);
  assert.equal(plan.services.get("tcp/203.0.113.7:80")?.owner, "default/a");
  assert.ok(plan.services.has("tcp/172.16.0.11:80"));
  assert.match(plan.problems.get("default/b")?.[0] ?? "", /already used by default\/a/);
  assert.equal(plan.problems.has("default/a"), false);
});

// ---- the reconciler, on the fake IPVS ----

/** The fake with settable connection counts (the kernel's come from real traffic). */
class ConnIpvs extends FakeIpvs {
  conns = new Map<string, [number, number]>();
  override async destinations(key: IpvsServiceKey): Promise<IpvsDestination[]> {
    return (await super.destinations(key)).map((d) => {
      const c = this.conns.get(`${d.address}:${d.port}`);
      return c ? { ...d, activeConns: c[0], inactiveConns: c[1] } : d;
    });
  }
}

function planOf(...infos: ServiceInfo[]) {
  return mergePlans(infos.map((i) => planService(i, ctx)));
}

async function dump(ipvs: FakeIpvs): Promise<string[]> {
  const out: string[] = [];
  for (const s of await ipvs.services()) {
    const ds = (await ipvs.destinations(s)).map((d) => `${d.address}:${d.port}w${d.weight}`).sort();
    out.push(`${s.protocol}/${s.address}:${s.port} ${s.scheduler} [${ds.join(" ")}]`);
  }
  return out.sort();
}

function reconciler(ipvs: FakeIpvs, o: { graceful?: boolean; now?: () => number; excluded?: string[] } = {}) {
  const errors: string[] = [];
  const r = new IpvsReconciler(ipvs, {
    graceful: o.graceful ?? false,
    gracefulPeriodMs: 30_000,
    excludedCidrs: o.excluded ?? [],
    now: o.now ?? (() => 0),
    onError: (owner, what) => errors.push(`${owner}: ${what}`),
  });
  return { r, errors };
}

Deno.test("a sync programs the plan, and a second sync of the same plan makes no kernel call", async () => {
  const ipvs = new FakeIpvs();
  const { r } = reconciler(ipvs);
  const plan = planOf(
    svc({
      type: "NodePort",
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
  );
  const first = await r.apply(plan);
  assert.equal(first.servicesAdded, 2);
  assert.equal(first.destinationsAdded, 6);
  assert.deepEqual(await dump(ipvs), [
    "tcp/172.16.0.10:80 rr [10.1.1.5:8080w1 10.1.2.5:8080w1 10.1.3.5:8080w1]",
    "tcp/192.168.1.100:30080 rr [10.1.1.5:8080w1 10.1.2.5:8080w1 10.1.3.5:8080w1]",
  ]);
  const calls = ipvs.calls.length;
  const again = await r.apply(plan);
  assert.equal(ipvs.calls.length, calls, ipvs.calls.slice(calls).join("\n"));
  assert.deepEqual(again, {
    ...again,
    servicesAdded: 0,
    servicesEdited: 0,
    destinationsAdded: 0,
    destinationsDeleted: 0,
  });
});

Deno.test("an endpoint change touches only that destination; a scheduler change edits the service in place", async () => {
  const ipvs = new FakeIpvs();
  const { r } = reconciler(ipvs);
  await r.apply(planOf(svc({}, three)));
  const mark = ipvs.calls.length;
  await r.apply(planOf(svc({}, [three[0]!, three[1]!, ep("10.1.4.5")])));
  assert.deepEqual(ipvs.calls.slice(mark).sort(), [
    "addDestination tcp/172.16.0.10:80 10.1.4.5:8080",
    "delDestination tcp/172.16.0.10:80 10.1.3.5:8080",
  ]);
  assert.deepEqual(await dump(ipvs), [
    "tcp/172.16.0.10:80 rr [10.1.1.5:8080w1 10.1.2.5:8080w1 10.1.4.5:8080w1]",
  ]);
  const m2 = ipvs.calls.length;
  await r.apply(
    planOf(
      svc({ annotations: { "kube-router.io/service.scheduler": "sh" } }, [
        three[0]!,
        three[1]!,
        ep("10.1.4.5"),
      ]),
    ),
  );
  assert.deepEqual(ipvs.calls.slice(m2), [
    "editService tcp/172.16.0.10:80",
  ]);
  assert.equal((await ipvs.services())[0]!.scheduler, "sh");
});

Deno.test("a Service removed deletes its virtual services, but never one inside --excluded-cidrs", async () => {
  const ipvs = new FakeIpvs();
  await ipvs.addService({ family: 4, protocol: "tcp", address: "10.200.0.1", port: 80, scheduler: "wlc" });
  await ipvs.addService({ family: 4, protocol: "tcp", address: "10.99.0.1", port: 80, scheduler: "wlc" });
  const { r } = reconciler(ipvs, { excluded: ["10.200.0.0/16"] });
  await r.apply(planOf(svc({}, three)));
  const res = await r.apply(planOf());
  assert.equal(res.servicesDeleted, 1);
  assert.deepEqual(await dump(ipvs), ["tcp/10.200.0.1:80 wlc []"]);
  assert.equal(await r.deleteAll(), 0, "cleanup leaves excluded services alone too");
});

Deno.test("graceful termination: a removed destination gets weight 0, then goes once idle", async () => {
  const ipvs = new ConnIpvs();
  let now = 1000;
  const { r } = reconciler(ipvs, { graceful: true, now: () => now });
  await r.apply(planOf(svc({}, three)));
  ipvs.conns.set("10.1.3.5:8080", [2, 1]);
  const one = await r.apply(planOf(svc({}, three.slice(0, 2))));
  assert.equal(one.destinationsDrained, 1);
  assert.equal(one.destinationsDeleted, 0);
  assert.deepEqual(await dump(ipvs), [
    "tcp/172.16.0.10:80 rr [10.1.1.5:8080w1 10.1.2.5:8080w1 10.1.3.5:8080w0]",
  ]);
  now += 5000;
  const two = await r.apply(planOf(svc({}, three.slice(0, 2))));
  assert.equal(two.destinationsDeleted, 0, "still has connections, period not over");
  assert.equal(two.draining, 1);
  ipvs.conns.set("10.1.3.5:8080", [0, 0]);
  const three2 = await r.apply(planOf(svc({}, three.slice(0, 2))));
  assert.equal(three2.destinationsDeleted, 1);
  assert.equal(three2.draining, 0);
  assert.deepEqual(await dump(ipvs), ["tcp/172.16.0.10:80 rr [10.1.1.5:8080w1 10.1.2.5:8080w1]"]);
});

Deno.test("graceful termination: a destination with live connections is deleted when the period ends", async () => {
  const ipvs = new ConnIpvs();
  let now = 0;
  const { r } = reconciler(ipvs, { graceful: true, now: () => now });
  await r.apply(planOf(svc({}, three)));
  ipvs.conns.set("10.1.3.5:8080", [5, 0]);
  await r.apply(planOf(svc({}, three.slice(0, 2))));
  now = 29_999;
  assert.equal((await r.apply(planOf(svc({}, three.slice(0, 2))))).destinationsDeleted, 0);
  now = 30_000;
  assert.equal((await r.apply(planOf(svc({}, three.slice(0, 2))))).destinationsDeleted, 1);
});

Deno.test("graceful termination: an endpoint that comes back while draining gets its weight back", async () => {
  const ipvs = new ConnIpvs();
  const { r } = reconciler(ipvs, { graceful: true });
  await r.apply(planOf(svc({}, three)));
  ipvs.conns.set("10.1.3.5:8080", [1, 0]);
  await r.apply(planOf(svc({}, three.slice(0, 2))));
  const back = await r.apply(planOf(svc({}, three)));
  assert.equal(back.destinationsEdited, 1);
  assert.equal(back.draining, 0);
  assert.deepEqual(await dump(ipvs), [
    "tcp/172.16.0.10:80 rr [10.1.1.5:8080w1 10.1.2.5:8080w1 10.1.3.5:8080w1]",
  ]);
});

Deno.test("without graceful termination a removed UDP destination goes at once and the service's UDP flows are cleared", async () => {
  const ipvs = new FakeIpvs();
  const conntrack = new FakeConntrack([
    {
      family: 4,
      orig: { src: "10.1.9.9", dst: "172.16.0.10", protocol: 17, sport: 4000, dport: 53 },
      reply: { src: "10.1.3.5", dst: "10.1.9.9", protocol: 17, sport: 53, dport: 4000 },
    },
  ]);
  const r = new IpvsReconciler(ipvs, {
    graceful: false,
    gracefulPeriodMs: 0,
    excludedCidrs: [],
    now: () => 0,
    conntrack,
  });
  const udp = (eps: ServiceEndpoint[]) =>
    svc({ ports: [{ name: "dns", protocol: "UDP", port: 53, endpoints: eps }] });
  await r.apply(planOf(udp(three)));
  await r.apply(planOf(udp(three.slice(0, 2))));
  assert.equal(conntrack.entries.length, 0);
});

Deno.test("a scheduler the kernel lacks is reported for its Service and rr used; other Services are unaffected", async () => {
  class NoMh extends FakeIpvs {
    override addService(s: IpvsService): Promise<void> {
      if (s.scheduler === "mh") return Promise.reject(new NetlinkError(2, "IPVS add service", 0));
      return super.addService(s);
    }
  }
  const ipvs = new NoMh();
  const { r, errors } = reconciler(ipvs);
  const res = await r.apply(planOf(
    svc({ annotations: { "kube-router.io/service.scheduler": "mh" } }, three),
    svc({ key: "default/other", name: "other", clusterIPs: ["172.16.0.11"] }, three),
  ));
  assert.equal(res.failures, 0);
  assert.equal(res.servicesAdded, 2);
  assert.deepEqual((await ipvs.services()).map((s) => s.scheduler).sort(), ["rr", "rr"]);
  assert.match(errors.join("\n"), /default\/web: scheduler mh is not available/);
});
