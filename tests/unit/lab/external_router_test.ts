/** The lab's external router: its configs for gobgpd and BIRD, the agents' flags, and parsing `birdc show route`. */
import assert from "node:assert/strict";
import {
  birdConfig,
  CLUSTER_ASN,
  EXTERNAL_ROUTER_ASN,
  EXTERNAL_ROUTER_IP,
  externalRouterFlags,
  gobgpdConfig,
  parseBirdRoutes,
} from "../../../lab/mod.ts";

Deno.test("the gobgpd config has one eBGP neighbor per node in the cluster ASN, IPv4 unicast", () => {
  const conf = gobgpdConfig(["192.168.1.100", "192.168.1.101"]);
  assert.match(conf, new RegExp(`as = ${EXTERNAL_ROUTER_ASN}\\n`));
  assert.match(conf, new RegExp(`router-id = "${EXTERNAL_ROUTER_IP}"`));
  assert.equal(conf.match(/\[\[neighbors\]\]/g)?.length, 2);
  assert.match(conf, /neighbor-address = "192.168.1.100"\n {4}peer-as = 64512/);
  assert.match(conf, /neighbor-address = "192.168.1.101"\n {4}peer-as = 64512/);
  assert.equal(conf.match(/afi-safi-name = "ipv4-unicast"/g)?.length, 2);
  assert.notEqual(EXTERNAL_ROUTER_ASN, CLUSTER_ASN, "the sessions are eBGP");
});

Deno.test("the BIRD config imports everything from each node, exports nothing, and knows its interfaces", () => {
  const conf = birdConfig(["192.168.1.100", "192.168.1.101", "192.168.1.102"]);
  assert.match(conf, /^router id 192\.168\.1\.10;$/m);
  assert.match(conf, /^protocol device /m);
  assert.match(conf, /local 192\.168\.1\.10 as 65000;/);
  assert.match(conf, /ipv4 \{ import all; export none; \};/);
  for (const [i, ip] of ["192.168.1.100", "192.168.1.101", "192.168.1.102"].entries()) {
    assert.match(
      conf,
      new RegExp(`^protocol bgp node${i + 1} from kube_node \\{ neighbor ${ip} as 64512; \\}$`, "m"),
    );
  }
});

Deno.test("agents get --peer-router-ips/-asns for the external router, and nothing without one", () => {
  assert.deepEqual(externalRouterFlags(undefined), []);
  assert.deepEqual(
    externalRouterFlags({ kind: "bird", ip: "192.168.1.10", asn: 65000, netns: "x", config: "/c" }),
    ["--peer-router-ips=192.168.1.10", "--peer-router-asns=65000"],
  );
});

Deno.test("birdc show route is parsed into one entry per path, with several paths of one prefix", () => {
  const text = `BIRD 2.0.12 ready.
Table master4:
10.1.3.0/24          unicast [node3 03:43:53.378] * (100) [AS64512i]
\tvia 192.168.1.102 on eth0
172.16.0.1/32        unicast [node1 03:43:54.134] * (100) [AS64512i]
\tvia 192.168.1.100 on eth0
                     unicast [node2 03:43:54.200] (100) [AS64512i]
\tvia 192.168.1.101 on eth0
`;
  assert.deepEqual(parseBirdRoutes(text), [
    { prefix: "10.1.3.0/24", nexthop: "192.168.1.102" },
    { prefix: "172.16.0.1/32", nexthop: "192.168.1.100" },
    { prefix: "172.16.0.1/32", nexthop: "192.168.1.101" },
  ]);
  assert.deepEqual(parseBirdRoutes("BIRD 2.0.12 ready.\n"), []);
});

Deno.test("lab up refuses an unknown --external-router before building anything, and --agent-flags may start with --", async () => {
  const { main } = await import("../../../lab/cli.ts");
  // parseArgs would reject "--agent-flags --advertise-cluster-ip" as an option without a value; the CLI
  // glues the value on, so the only complaint left is the router kind.
  await assert.rejects(
    () =>
      main([
        "up",
        "--agent-flags",
        "--advertise-cluster-ip --bgp-graceful-restart",
        "--external-router",
        "quagga",
      ]),
    (e: Error) => e.name === "LabError" && /--external-router must be gobgp or bird/.test(e.message),
  );
});
