import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { CASES, type ProxyCase } from "./_cases.ts";
import { NODE_IP, ProxyEnv, service, slices } from "./_env.ts";

const opts = { tools: ["nft", "curl"] };

Deno.test({
  ...needs("the nftables service proxy gives Kubernetes Service semantics to real traffic", opts),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const env = await ProxyEnv.create();
    try {
      // Metrics on (the driver serves none; the flag turns the per-Service counters on): every case runs
      // with the counting rules in place, and the last step checks what they counted.
      await env.startProxy(["--ipvs-sync-period=3s", "--metrics-port=20244"], []);
      for (const c of [...CASES, COUNTERS]) {
        const ok = await t.step(c.name, () => c.run(env));
        if (!ok) console.error(await env.dump(), env.driver.stderr);
      }
    } finally {
      await env.close();
    }
  },
});

Deno.test({
  ...needs("an agent restart under traffic loses no established connection and no new one", opts),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await ProxyEnv.create();
    try {
      const objects = [
        service("web", {
          type: "NodePort",
          clusterIP: "172.16.0.30",
          clusterIPs: ["172.16.0.30"],
          ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30090 }],
        }),
        ...slices("web", [0, 1, 2]),
      ];
      await env.startProxy([], objects);
      const held = env.client.spawn([
        Deno.execPath(),
        "run",
        "--allow-net",
        new URL("./_keepalive_client.ts", import.meta.url).pathname,
        "172.16.0.30",
        "80",
        "6",
      ], { stdout: "piped" });
      const fresh: { ok: boolean }[] = [];
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          fresh.push(await env.get("client", `http://${NODE_IP}:30090/hostname`, 2));
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      await new Promise((r) => setTimeout(r, 1000));
      await env.driver.kill();
      await env.startProxy([], objects);
      await new Promise((r) => setTimeout(r, 1500));
      stop = true;
      await loop;
      const out = JSON.parse(new TextDecoder().decode((await held.output()).stdout));
      assert.equal(out.failed, 0, out.error);
      assert.ok(out.ok > 20, `${out.ok} requests on the held connection`);
      assert.ok(fresh.length >= 3, `${fresh.length} new connections during the restart`);
      assert.deepEqual(fresh.filter((a) => !a.ok), [], "every new connection during the restart worked");
    } finally {
      await env.close();
    }
  },
});

/** The metrics text as name{labels} -> value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function series(metric: string, name: string, vip: string, protocol: string, port: number): string {
  return `kube_router_service_${metric}{port="${port}",protocol="${protocol}",service_name="${name}",` +
    `service_vip="${vip}",svc_namespace="default"}`;
}

/**
 * kube_router_service_* on the nftables backend, with real traffic: new TCP connections through a cluster
 * IP from another machine and from the node itself (and the IPv6 cluster IP), UDP datagrams, a NodePort;
 * the counters grow by at least what was sent and answered, another Service's do not, and a removed
 * Service's series go.
 */
const COUNTERS: ProxyCase = {
  name: "per-Service packet, byte and connection counters grow with real traffic, for that Service only",
  async run(env) {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await env.put(service("cnt", {
      type: "NodePort",
      clusterIP: "172.16.0.40",
      clusterIPs: ["172.16.0.40", "fd00:172::40"],
      ipFamilies: ["IPv4", "IPv6"],
      ipFamilyPolicy: "PreferDualStack",
      ports: [
        { name: "http", port: 80, protocol: "TCP", nodePort: 30040 },
        { name: "dns", port: 53, protocol: "UDP" },
      ],
    }));
    for (const s of slices("cnt", [0, 1], { v6: true, udp: true })) await env.put(s);
    await env.put(service("cntb", { clusterIP: "172.16.0.41", clusterIPs: ["172.16.0.41"] }));
    await env.put(slices("cntb", [2])[0]!);
    const before = parseMetrics(await env.metrics());
    const tcp = (m: string) => series(m, "cnt", "172.16.0.40", "tcp", 80);
    const udp = (m: string) => series(m, "cnt", "172.16.0.40", "udp", 53);
    const np = (m: string) => series(m, "cnt", NODE_IP, "tcp", 30040);
    const v6 = (m: string) => series(m, "cnt", "fd00:172::40", "tcp", 80);
    const other = (m: string) => series(m, "cntb", "172.16.0.41", "tcp", 80);
    for (
      const s of [
        tcp("packets_in"),
        udp("packets_in"),
        np("packets_in"),
        v6("packets_in"),
        other("packets_in"),
      ]
    ) {
      assert.ok(before.has(s), `${s} exists once the Service is programmed`);
    }

    const N = 10;
    const answered = async (from: "client" | "node", url: string, n: number) => {
      const seen = await env.spread(from, url, n);
      assert.equal([...seen.keys()].filter((k) => k.startsWith("error")).length, 0, `${url} from ${from}`);
    };
    await answered("client", "http://172.16.0.40/hostname", N);
    await answered("node", "http://172.16.0.40/hostname", N);
    await answered("client", "http://[fd00:172::40]/hostname", 3);
    await answered("client", `http://${NODE_IP}:30040/hostname`, 4);
    const U = 4;
    for (let i = 0; i < U; i++) assert.match(await env.udp("172.16.0.40", 53, 41000 + i), /^pod-[ab]$/);
    assert.match(await env.udpConnected("node", "172.16.0.40", 53), /^pod-[ab]$/);
    await sleep(1100); // past the reader's minimum interval
    const after = parseMetrics(await env.metrics());
    const grew = (s: string) => after.get(s)! - before.get(s)!;

    // A connection is at least SYN, ACK and the request in, SYN-ACK and the answer out, each 40 bytes or more.
    assert.ok(grew(tcp("total_connections")) >= 2 * N, `${grew(tcp("total_connections"))} connections`);
    assert.ok(grew(tcp("total_connections")) <= 2 * N + 2, `${grew(tcp("total_connections"))} connections`);
    assert.ok(grew(tcp("packets_in")) >= 3 * 2 * N, `${grew(tcp("packets_in"))} packets in`);
    assert.ok(grew(tcp("packets_out")) >= 2 * 2 * N, `${grew(tcp("packets_out"))} packets out (replies)`);
    assert.ok(grew(tcp("bytes_in")) >= 40 * 3 * 2 * N, `${grew(tcp("bytes_in"))} bytes in`);
    assert.ok(grew(tcp("bytes_out")) >= 40 * 2 * 2 * N, `${grew(tcp("bytes_out"))} bytes out`);
    assert.ok(after.get(tcp("pps_in"))! > 0 && after.get(tcp("cps"))! > 0, "rates since the last reading");
    assert.ok(grew(v6("total_connections")) >= 3 && grew(v6("packets_out")) >= 6, "IPv6 cluster IP");
    assert.ok(grew(np("total_connections")) >= 4 && grew(np("packets_out")) >= 8, "NodePort on the node IP");
    // Each datagram from its own socket is a new flow; every one was answered.
    assert.ok(grew(udp("total_connections")) >= U + 1, `${grew(udp("total_connections"))} UDP flows`);
    assert.ok(grew(udp("packets_in")) >= U + 1, `${grew(udp("packets_in"))} datagrams in`);
    assert.ok(grew(udp("packets_out")) >= U + 1, `${grew(udp("packets_out"))} datagrams out`);
    // The other Service saw none of it.
    for (const m of ["packets_in", "packets_out", "bytes_in", "total_connections"]) {
      assert.equal(grew(other(m)), 0, `cntb ${m}`);
    }

    // The periodic full resync (every 3 s here) leaves the counted elements, and so their counts, alone.
    await sleep(3500);
    const later = parseMetrics(await env.metrics());
    for (const m of ["packets_in", "packets_out", "total_connections"]) {
      assert.ok(later.get(tcp(m))! >= after.get(tcp(m))!, `${m} kept across a full resync`);
    }

    await env.remove("services", "default/cnt");
    await sleep(1100);
    const gone = await env.metrics();
    assert.doesNotMatch(gone, /service_name="cnt"/);
    assert.match(gone, /service_name="cntb"/);
  },
};
