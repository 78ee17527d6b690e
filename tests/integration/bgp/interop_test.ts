/**
 * Interop with real BGP implementations: gobgpd (GoBGP 3) and BIRD 2, each in its own network namespace,
 * our speaker in another (run by `_speaker_driver.ts` under `ip netns exec`). Needs root.
 */
import assert from "node:assert/strict";
import { linkVeth } from "../../_support/netns.ts";
import {
  birdTest,
  Gobgp,
  gobgpConfig,
  gobgpTest,
  interopTest,
  sleep,
  SpeakerDriver,
  waitFor,
} from "./_interop.ts";

const both = ["ipv4-unicast", "ipv6-unicast"];

gobgpTest("our active speaker and a passive gobgpd exchange IPv4 and IPv6 routes and withdrawals", {
  subnet: 1,
}, async ({ drv, gob }) => {
  await gob.start(
    gobgpConfig({
      asn: 65002,
      routerId: "10.0.1.2",
      neighbors: [{ address: "10.0.1.1", asn: 65001, passive: true }],
    }),
  );
  await drv.call("start", { asn: 65001, routerId: "10.0.1.1", listenAddresses: [] });
  await drv.call("addPeer", {
    address: "10.0.1.2",
    asn: 65002,
    families: both,
    ipv6NextHop: "fd00:1::1",
    connectRetry: 1,
  });
  await drv.call("set", {
    family: "ipv4-unicast",
    routes: [{ prefix: "10.1.0.0/24" }, { prefix: "10.1.1.0/24", communities: [65001 * 65536 + 7] }],
  });
  await drv.call("set", { family: "ipv6-unicast", routes: [{ prefix: "2001:db8:1::/48" }] });
  await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
  await gob.cli("global", "rib", "add", "2001:db8:2::/48", "-a", "ipv6", "nexthop", "fd00:1::2");
  const st = await drv.waitEstablished("10.0.1.2");
  assert.deepEqual(st.families, both);
  assert.ok(st.capabilities.includes("4-octet-as") && st.capabilities.includes("route-refresh"));

  const v4 = await waitFor("gobgpd learns our IPv4 routes", async () => {
    const rib = await gob.ribPrefixes("ipv4");
    return rib["10.1.0.0/24"] && rib["10.1.1.0/24"] ? rib : undefined;
  });
  assert.equal(v4["10.1.0.0/24"]![0]!.nexthop, "10.0.1.1");
  const comm = v4["10.1.1.0/24"]![0]!.attrs.find((a) => a.type === 8);
  assert.deepEqual(comm?.communities, [65001 * 65536 + 7]);
  const v6 = await gob.waitPrefix("gobgpd learns our IPv6 route", "ipv6", "2001:db8:1::/48");
  assert.equal(v6[0]!.nexthop, "fd00:1::1");

  const ours4 = await drv.waitRoute("we learn gobgpd's IPv4 route", "10.2.0.0/24");
  assert.equal(ours4.nextHop, "10.0.1.2");
  assert.deepEqual(ours4.attrs.asPath, [{ type: 2, asns: [65002] }]);
  const ours6 = await drv.waitRoute("we learn gobgpd's IPv6 route", "2001:db8:2::/48", "ipv6-unicast");
  assert.equal(ours6.nextHop, "fd00:1::2");
  assert.ok(drv.events.some((e) => e.type === "learned" && e.prefix === "2001:db8:2::/48"));

  // Withdrawals both ways.
  await drv.call("set", {
    family: "ipv4-unicast",
    routes: [{ prefix: "10.1.1.0/24", communities: [65001 * 65536 + 7] }],
  });
  await drv.call("set", { family: "ipv6-unicast", routes: [] });
  await waitFor("gobgpd sees our withdrawals", async () => {
    const r4 = await gob.ribPrefixes("ipv4"), r6 = await gob.ribPrefixes("ipv6");
    return !r4["10.1.0.0/24"] && r4["10.1.1.0/24"] && !r6["2001:db8:1::/48"];
  });
  await gob.cli("global", "rib", "del", "10.2.0.0/24", "-a", "ipv4");
  await gob.cli("global", "rib", "del", "2001:db8:2::/48", "-a", "ipv6");
  await waitFor("we see gobgpd's withdrawals", async () => {
    const r4 = await drv.routes(), r6 = await drv.routes("ipv6-unicast");
    return !r4.some((r) => r.source !== "local") && r6.length === 0;
  });
  assert.ok(drv.events.some((e) => e.type === "withdrawn" && e.prefix === "10.2.0.0/24"));
});

gobgpTest(
  "gobgpd connects to our passive speaker, both with four-octet AS numbers",
  { subnet: 2 },
  async ({ drv, gob }) => {
    await drv.call("start", { asn: 4200000001, routerId: "10.0.2.1", listenAddresses: ["10.0.2.1"] });
    await drv.call("addPeer", { address: "10.0.2.2", asn: 4200000002, passive: true });
    await drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] });
    await gob.start(
      gobgpConfig({
        asn: 4200000002,
        routerId: "10.0.2.2",
        neighbors: [{ address: "10.0.2.1", asn: 4200000001, families: ["ipv4-unicast"] }],
      }),
    );
    await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
    await drv.waitEstablished("10.0.2.2");
    const rib = await gob.waitPrefix("gobgpd learns our route", "ipv4", "10.1.0.0/24");
    const asPath = rib[0]!.attrs.find((a) => a.type === 2) as
      | { as_paths?: { asns: number[] }[] }
      | undefined;
    assert.deepEqual(asPath?.as_paths?.[0]?.asns, [4200000001]);
    const ours = await drv.waitRoute("we learn gobgpd's route", "10.2.0.0/24");
    assert.deepEqual(ours.attrs.asPath, [{ type: 2, asns: [4200000002] }]);
    // gobgpd was the active side: our peer saw Active (waiting), then the handshake.
    const seen = drv.events.filter((e) => e.type === "peer").map((e) => (e as { state: string }).state);
    assert.equal(seen[0], "Active");
    assert.ok(!seen.includes("Connect"), "a passive peer never connects out");
  },
);

birdTest(
  "BIRD and our speaker exchange IPv4 and IPv6 routes, withdrawals and route refreshes",
  { subnet: 3 },
  async ({ drv, bird, dir }) => {
    const birdConf = (withStatic: boolean) =>
      `router id 10.0.3.2;
protocol device {}
protocol kernel { ipv4 { export none; import none; }; learn off; }
protocol static s4 { ipv4; ${withStatic ? "route 10.3.0.0/24 blackhole;" : ""} }
protocol static s6 { ipv6; ${withStatic ? "route 2001:db8:3::/48 blackhole;" : ""} }
protocol bgp peer1 {
  local 10.0.3.2 as 65003;
  neighbor 10.0.3.1 as 65001;
  connect retry time 1;
  ipv4 { import all; export all; };
  ipv6 { import all; export all; next hop address fd00:3::2; };
}
`;
    await drv.call("start", { asn: 65001, routerId: "10.0.3.1", listenAddresses: ["0.0.0.0"] });
    await drv.call("addPeer", {
      address: "10.0.3.2",
      asn: 65003,
      families: both,
      ipv6NextHop: "fd00:3::1",
      connectRetry: 1,
    });
    await drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24", med: 20 }] });
    await drv.call("set", { family: "ipv6-unicast", routes: [{ prefix: "2001:db8:1::/48" }] });
    await bird.start(birdConf(true));
    await drv.waitEstablished("10.0.3.2");
    const ours4 = await drv.waitRoute("we learn BIRD's IPv4 route", "10.3.0.0/24");
    assert.equal(ours4.nextHop, "10.0.3.2");
    const ours6 = await drv.waitRoute("we learn BIRD's IPv6 route", "2001:db8:3::/48", "ipv6-unicast");
    assert.equal(ours6.nextHop, "fd00:3::2");
    const show4 = await bird.waitRoute("BIRD learns our IPv4 route", "10.1.0.0/24", "BGP.as_path: 65001");
    assert.match(show4, /BGP.next_hop: 10.0.3.1/);
    assert.match(show4, /BGP.med: 20/);
    await bird.waitRoute("BIRD learns our IPv6 route", "2001:db8:1::/48", "BGP.next_hop: fd00:3::1");

    // Route refresh, both directions.
    const before = (await drv.peer("10.0.3.2"))!.messagesReceived.update ?? 0;
    assert.equal(await drv.call("refresh", { address: "10.0.3.2", family: "ipv4-unicast" }), true);
    await waitFor(
      "BIRD answers our ROUTE-REFRESH with its routes",
      async () => ((await drv.peer("10.0.3.2"))!.messagesReceived.update ?? 0) > before,
    );
    const sentBefore = (await drv.peer("10.0.3.2"))!.messagesSent.update ?? 0;
    await bird.cli("reload", "in", "peer1");
    await waitFor("we answer BIRD's ROUTE-REFRESH", async () => {
      const p = (await drv.peer("10.0.3.2"))!;
      return (p.messagesReceived.refresh ?? 0) >= 1 && (p.messagesSent.update ?? 0) > sentBefore;
    });
    assert.match((await bird.cli("show", "route", "10.1.0.0/24")).stdout, /10.1.0.0\/24/);

    // Withdrawals both ways.
    await drv.call("set", { family: "ipv4-unicast", routes: [] });
    await waitFor(
      "BIRD drops our withdrawn route",
      async () => !(await bird.cli("show", "route", "10.1.0.0/24")).stdout.includes("10.1.0.0/24"),
    );
    await Deno.writeTextFile(`${dir}/bird.conf`, birdConf(false));
    await bird.cli("configure");
    await waitFor("we drop BIRD's withdrawn routes", async () => {
      const r4 = await drv.routes(), r6 = await drv.routes("ipv6-unicast");
      return r4.length === 0 && !r6.some((r) => r.source !== "local");
    });
    assert.equal((await drv.peer("10.0.3.2"))!.state, "Established");
  },
);

gobgpTest("the hold timer expires when gobgpd is frozen with SIGSTOP and its routes are withdrawn", {
  subnet: 4,
  stopSignal: "SIGKILL",
}, async ({ drv, gob }) => {
  await gob.start(
    gobgpConfig({
      asn: 65002,
      routerId: "10.0.4.2",
      neighbors: [{ address: "10.0.4.1", asn: 65001, holdTime: 6, families: ["ipv4-unicast"] }],
    }),
  );
  await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
  await drv.call("start", { asn: 65001, routerId: "10.0.4.1", listenAddresses: ["0.0.0.0"] });
  await drv.call("addPeer", { address: "10.0.4.2", asn: 65002, holdTime: 6, passive: true });
  const st = await drv.waitEstablished("10.0.4.2");
  assert.equal(st.holdTime, 6);
  await waitFor("we learn gobgpd's route", async () => (await drv.routes()).length === 1);
  gob.signal("SIGSTOP");
  const t0 = Date.now();
  const down = await waitFor("hold timer expiry", async () => {
    const p = await drv.peer("10.0.4.2");
    return p && p.state !== "Established" ? p : undefined;
  }, 20_000);
  const took = Date.now() - t0;
  assert.match(down.lastError ?? "", /hold timer expired/);
  assert.ok(took >= 3_000, `the session survived at least part of the hold time (${took} ms)`);
  assert.equal((await drv.routes()).length, 0);
  assert.ok(drv.stderr.some((l) => l.includes("hold timer expired") && l.includes("10.0.4.2")));
});

gobgpTest("graceful restart keeps routes across a restart of our speaker and of gobgpd", {
  subnet: 5,
  stopSignal: "SIGKILL",
}, async (p) => {
  const { gob } = p;
  const conf = gobgpConfig({
    asn: 65002,
    routerId: "10.0.5.2",
    neighbors: [{ address: "10.0.5.1", asn: 65001, gracefulRestart: true, families: ["ipv4-unicast"] }],
  });
  const startOurs = async (restarting: boolean) => {
    await p.drv.call("start", {
      asn: 65001,
      routerId: "10.0.5.1",
      listenAddresses: ["0.0.0.0"],
      gracefulRestart: {
        enabled: true,
        restartTime: 60,
        restarting,
        ...(restarting ? { deferralTime: 30 } : {}),
      },
    });
    await p.drv.call("addPeer", { address: "10.0.5.2", asn: 65002, passive: true });
    await p.drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] });
  };
  await gob.start(conf);
  await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
  await startOurs(false);
  const st = await p.drv.waitEstablished("10.0.5.2");
  assert.ok(st.capabilities.includes("graceful-restart"));
  await gob.waitPrefix("gobgpd learns our route", "ipv4", "10.1.0.0/24");
  await waitFor(
    "we learn gobgpd's route",
    async () => (await p.drv.routes()).some((r) => r.prefix === "10.2.0.0/24"),
  );

  // 1. Our speaker crashes: gobgpd, as helper, keeps our route (stale) meanwhile.
  await p.drv.kill();
  await sleep(3000);
  const kept = (await gob.ribPrefixes("ipv4"))["10.1.0.0/24"];
  assert.ok(kept, "gobgpd kept our route while we were down");
  assert.equal(kept[0]!.stale, true, "gobgpd marks it stale meanwhile");
  assert.notEqual(await gob.neighborState("10.0.5.1"), "established");
  p.drv = await SpeakerDriver.start(p.us);
  await startOurs(true);
  await p.drv.waitEstablished("10.0.5.2");
  // We defer our table until gobgpd's End-of-RIB, which it sends right after its own table.
  await waitFor("our route is fresh again after the restart", async () => {
    const after = (await gob.ribPrefixes("ipv4"))["10.1.0.0/24"];
    return after && !after[0]!.stale;
  }, 10_000);
  assert.ok(p.drv.events.some((e) => e.type === "endOfRib" && e.peer === "10.0.5.2"));

  // 2. gobgpd crashes: we keep its route as stale, then take the fresh one after it returns.
  await gob.stop("SIGKILL");
  await waitFor(
    "we notice gobgpd is gone",
    async () => (await p.drv.peer("10.0.5.2"))?.state !== "Established",
    15_000,
  );
  const stale = (await p.drv.routes()).find((r) => r.prefix === "10.2.0.0/24");
  assert.ok(stale?.stale, "gobgpd's route kept as stale");
  assert.ok(!p.drv.events.some((e) => e.type === "withdrawn" && e.prefix === "10.2.0.0/24"));
  await gob.start(conf);
  await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
  await p.drv.waitEstablished("10.0.5.2");
  await waitFor(
    "gobgpd's route is fresh again",
    async () => (await p.drv.routes()).some((r) => r.prefix === "10.2.0.0/24" && !r.stale),
  );
});

interopTest(
  "our speaker reflects routes between two gobgpd route reflector clients",
  ["gobgpd", "gobgp"],
  ["bgp-rr", "bgp-c1", "bgp-c2"],
  async (dir, rr, c1, c2) => {
    await linkVeth(rr!, "eth1", "10.0.6.1/24", c1!, "eth0", "10.0.6.2/24");
    await linkVeth(rr!, "eth2", "10.0.7.1/24", c2!, "eth0", "10.0.7.2/24");
    const g1 = new Gobgp(c1!, dir, "c1"), g2 = new Gobgp(c2!, dir, "c2");
    const drv = await SpeakerDriver.start(rr!);
    try {
      await drv.call("start", {
        asn: 65000,
        routerId: "10.0.6.1",
        clusterId: "10.255.0.1",
        listenAddresses: ["0.0.0.0"],
      });
      await drv.call("addPeer", {
        address: "10.0.6.2",
        asn: 65000,
        passive: true,
        routeReflectorClient: true,
      });
      await drv.call("addPeer", {
        address: "10.0.7.2",
        asn: 65000,
        passive: true,
        routeReflectorClient: true,
      });
      await g1.start(
        gobgpConfig({
          asn: 65000,
          routerId: "10.0.6.2",
          neighbors: [{ address: "10.0.6.1", asn: 65000, families: ["ipv4-unicast"] }],
        }),
      );
      await g2.start(
        gobgpConfig({
          asn: 65000,
          routerId: "10.0.7.2",
          neighbors: [{ address: "10.0.7.1", asn: 65000, families: ["ipv4-unicast"] }],
        }),
      );
      await g1.cli("global", "rib", "add", "10.11.0.0/24", "-a", "ipv4", "nexthop", "10.0.6.2");
      await g2.cli("global", "rib", "add", "10.12.0.0/24", "-a", "ipv4", "nexthop", "10.0.7.2");
      await drv.waitEstablished("10.0.6.2");
      await drv.waitEstablished("10.0.7.2");
      const at2 = await g2.waitPrefix("client 2 receives client 1's route", "ipv4", "10.11.0.0/24");
      assert.equal(at2[0]!.nexthop, "10.0.6.2");
      const orig = at2[0]!.attrs.find((a) => a.type === 9) as { value?: string } | undefined;
      const cl = at2[0]!.attrs.find((a) => a.type === 10) as { value?: string[] } | undefined;
      assert.equal(orig?.value, "10.0.6.2");
      assert.deepEqual(cl?.value, ["10.255.0.1"]);
      const at1 = await g1.waitPrefix("client 1 receives client 2's route", "ipv4", "10.12.0.0/24");
      assert.equal(at1[0]!.nexthop, "10.0.7.2");
    } finally {
      await drv.close();
      await g1.stop();
      await g2.stop();
    }
  },
);

birdTest(
  "a session with BIRD over IPv6 transport carries IPv4 and IPv6 routes",
  { subnet: 12 },
  async ({ drv, bird }) => {
    await drv.call("start", { asn: 65001, routerId: "10.0.12.1", listenAddresses: ["::"] });
    await drv.call("addPeer", {
      address: "fd00:12::2",
      asn: 65012,
      families: both,
      ipv4NextHop: "10.0.12.1",
      passive: true,
    });
    await drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] });
    await drv.call("set", { family: "ipv6-unicast", routes: [{ prefix: "2001:db8:1::/48" }] });
    await bird.start(`router id 10.0.12.2;
protocol device {}
protocol static s4 { ipv4; route 10.12.0.0/24 blackhole; }
protocol static s6 { ipv6; route 2001:db8:12::/48 blackhole; }
protocol bgp peer1 {
  local fd00:12::2 as 65012;
  neighbor fd00:12::1 as 65001;
  connect retry time 1;
  ipv4 { import all; export all; next hop address 10.0.12.2; };
  ipv6 { import all; export all; };
}
`);
    const st = await drv.waitEstablished("fd00:12::2");
    assert.equal(st.localAddress, "fd00:12::1");
    const r4 = await drv.waitRoute("IPv4 route over the IPv6 session", "10.12.0.0/24");
    assert.equal(r4.nextHop, "10.0.12.2");
    const r6 = await drv.waitRoute("IPv6 route", "2001:db8:12::/48", "ipv6-unicast");
    assert.equal(r6.nextHop, "fd00:12::2");
    await bird.waitRoute(
      "BIRD learns our IPv4 route with our IPv4 next hop",
      "10.1.0.0/24",
      "BGP.next_hop: 10.0.12.1",
    );
    await bird.waitRoute("BIRD learns our IPv6 route", "2001:db8:1::/48", "BGP.next_hop: fd00:12::1");
  },
);

birdTest(
  "a two-octet-AS session with BIRD carries four-octet path members in AS4_PATH",
  { subnet: 13 },
  async ({ drv, bird }) => {
    await drv.call("start", { asn: 65001, routerId: "10.0.13.1", listenAddresses: ["0.0.0.0"] });
    // A prepended four-octet AS puts a large ASN in the path we send.
    await drv.call("addPeer", {
      address: "10.0.13.2",
      asn: 65013,
      passive: true,
      asPathPrepend: { count: 1, asn: 4200000005 },
    });
    await drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] });
    await bird.start(`router id 10.0.13.2;
protocol device {}
protocol static s4 { ipv4; route 10.13.0.0/24 blackhole; }
protocol bgp peer1 {
  local 10.0.13.2 as 65013;
  neighbor 10.0.13.1 as 65001;
  enable as4 off;
  connect retry time 1;
  ipv4 { import all; export all; };
}
`);
    const st = await drv.waitEstablished("10.0.13.2");
    assert.ok(
      !st.capabilities.includes("4-octet-as"),
      "BIRD did not offer the four-octet AS capability",
    );
    const r = await drv.waitRoute("we learn BIRD's route", "10.13.0.0/24");
    assert.deepEqual(r.attrs.asPath, [{ type: 2, asns: [65013] }]);
    const shown = await bird.waitRoute("BIRD learns our route", "10.1.0.0/24", "BGP.as_path");
    // On this two-octet session AS_PATH can only say 65001 23456 (AS_TRANS); BIRD rebuilds the real
    // path from the AS4_PATH we added (RFC 6793 4.2.3), so 4200000005 proves it arrived intact.
    assert.match(shown, /BGP.as_path: 65001 4200000005\n/);
  },
);
