import assert from "node:assert/strict";
import {
  bgpCli,
  formatDuration,
  formatNeighbors,
  formatRoutes,
  serveAdmin,
} from "../../../modules/router/bgp/admin.ts";
import type { LearnedRoute } from "../../../modules/router/bgp/speaker.ts";
import { AS_SEQUENCE } from "../../../modules/router/bgp/types.ts";
import { World } from "./_harness.ts";

async function captureConsole(
  fn: () => Promise<number>,
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    const code = await fn();
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("durations print like gobgp's Up/Down column", () => {
  assert.equal(formatDuration(0), "00:00:00");
  assert.equal(formatDuration(3723), "01:02:03");
  assert.equal(formatDuration(90061), "1d 01:01:01");
});

Deno.test("the route table marks best and stale paths and shows attributes", () => {
  const r: LearnedRoute = {
    family: "ipv4-unicast",
    prefix: "10.1.0.0/24",
    nextHop: "10.0.0.2",
    attrs: {
      origin: 0,
      asPath: [{ type: AS_SEQUENCE, asns: [65002, 65100] }],
      nextHop: "10.0.0.2",
      med: 5,
      communities: [65002 * 65536 + 7],
    },
    source: "10.0.0.2",
    best: true,
    stale: false,
    since: 1000,
  };
  const text = formatRoutes([r, { ...r, best: false, stale: true, source: "10.0.0.3" }], 62_000);
  const lines = text.split("\n");
  assert.match(lines[0]!, /Network\s+Next Hop\s+AS_PATH\s+Age\s+Attrs/);
  assert.match(
    lines[1]!,
    /^\*> 10\.1\.0\.0\/24\s+10\.0\.0\.2\s+65002 65100\s+00:01:01\s+\[\{Origin: i\} \{Med: 5\} \{Communities: 65002:7\}\]/,
  );
  assert.match(lines[2]!, /^S {2}10\.1\.0\.0\/24/);
});

Deno.test("bgpCli prints neighbors and routes from a running speaker's admin endpoint", async () => {
  const w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  const admin = serveAdmin(b, { port: 0, metrics: b.metrics });
  try {
    a.addPeer({ address: "10.0.0.2", asn: 65002 });
    b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
    b.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
    await b.start();
    await a.start();
    a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }, { prefix: "10.1.1.0/24" }]);
    await w.settle();
    const n = await captureConsole(() => bgpCli(["neighbors"], admin.port));
    assert.equal(n.code, 0);
    const rows = n.out.split("\n");
    assert.match(rows[0]!, /^Peer\s+AS\s+Up\/Down\s+State\s+\|#Received\s+Accepted$/);
    assert.match(n.out, /10\.0\.0\.1\s+65001\s+\d\d:\d\d:\d\d\s+Establ\s+\|\s+2\s+2/);
    assert.match(n.out, /10\.0\.0\.9\s+65009\s+\S+\s+Active/);
    const one = await captureConsole(() => bgpCli(["neighbor", "10.0.0.1"], admin.port));
    assert.match(one.out, /BGP neighbor is 10\.0\.0\.1, remote AS 65001/);
    assert.match(one.out, /Update:\s+\d+\s+\d+/);
    const routes = await captureConsole(() => bgpCli(["routes", "-a", "ipv4"], admin.port));
    assert.match(routes.out, /\*> 10\.1\.0\.0\/24\s+10\.0\.0\.1\s+65001/);
    const json = await captureConsole(() => bgpCli(["routes", "--json"], admin.port));
    assert.deepEqual(JSON.parse(json.out).map((r: LearnedRoute) => r.prefix), ["10.1.0.0/24", "10.1.1.0/24"]);
    const metrics = await (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text();
    assert.match(metrics, /kube_router_bgp_prefixes_received\{family="ipv4-unicast",peer="10.0.0.1"\} 2/);
    const bad = await captureConsole(() => bgpCli(["routes", "-a", "vpnv4"], admin.port));
    assert.equal(bad.code, 2);
    const usage = await captureConsole(() => bgpCli(["bogus"], admin.port));
    assert.equal(usage.code, 2);
  } finally {
    await admin.close();
    await w.stopAll();
  }
});

Deno.test("bgpCli reports an unreachable admin endpoint with exit code 1", async () => {
  // Bind then free a port so nothing listens there.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const r = await captureConsole(() => bgpCli(["neighbors"], port));
  assert.equal(r.code, 1);
  assert.match(r.err, /cannot reach the BGP admin endpoint/);
});

Deno.test("formatNeighbors sums received and accepted over families", () => {
  const text = formatNeighbors([{
    address: "fd00::2",
    asn: 4200000002,
    state: "Established",
    description: undefined,
    routerId: "10.0.0.2",
    localAddress: "fd00::1",
    uptime: 5,
    upSince: 0,
    holdTime: 90,
    keepalive: 30,
    families: ["ipv4-unicast", "ipv6-unicast"],
    capabilities: [],
    messagesSent: {},
    messagesReceived: {},
    prefixes: {
      "ipv4-unicast": { received: 3, accepted: 2, advertised: 1 },
      "ipv6-unicast": { received: 4, accepted: 4, advertised: 0 },
    },
    lastError: undefined,
    gracefulRestart: { helperActive: false, remoteRestartTime: undefined },
  }]);
  assert.match(text, /fd00::2\s+4200000002\s+00:00:05\s+Establ\s+\|\s+7\s+6/);
});
