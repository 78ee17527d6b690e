import assert from "node:assert/strict";
import {
  ConfigError,
  type Environment,
  FLAGS,
  loadConfig,
  parseDuration,
  usage,
} from "../../../core/config.ts";

const env = (vars: Record<string, string> = {}, files: Record<string, string> = {}): Environment => ({
  get: (n) => vars[n],
  hostname: () => "test-node",
  readTextFile: (p) => {
    const f = files[p];
    if (f === undefined) throw new Error(`ENOENT ${p}`);
    return f;
  },
});

function rejects(argv: string[], flag: string, fragment?: string, e: Environment = env()): void {
  assert.throws(() => loadConfig(argv, e), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    assert.equal(err.flag, flag);
    assert.match(err.message, new RegExp(`--${flag}`));
    if (fragment) assert.match(err.message, new RegExp(fragment));
    return true;
  });
}

Deno.test("config takes kube-router's defaults when no flags are given", () => {
  const c = loadConfig([], env());
  assert.equal(c.runRouter, true);
  assert.equal(c.runServiceProxy, true);
  assert.equal(c.runFirewall, true);
  assert.equal(c.clusterAsn, 0);
  assert.equal(c.effectiveClusterAsn, 64512);
  assert.equal(c.bgpHoldtime, 90_000);
  assert.equal(c.bgpPort, 179);
  assert.equal(c.healthPort, 20244);
  assert.equal(c.metricsPort, 0);
  assert.equal(c.metricsPath, "/metrics");
  assert.deepEqual(c.serviceClusterIpRange, ["10.96.0.0/12"]);
  assert.deepEqual(c.serviceNodePortRange, [30000, 32767]);
  assert.equal(c.routesSyncPeriod, 300_000);
  assert.equal(c.cacheSyncTimeout, 60_000);
  assert.equal(c.serviceProxyBackend, "nftables");
  assert.equal(c.overlayType, "subnet");
  assert.equal(c.nodeName, "test-node");
  assert.equal(c.cniConfFile, "/etc/cni/net.d/10-kuberouter.conflist");
});

Deno.test("config accepts pflag syntax: --flag=value, --flag value, bare booleans and -v", () => {
  const c = loadConfig([
    "--run-router=false",
    "--run-firewall",
    "--cluster-asn",
    "65001",
    "--peer-router-ips=192.168.1.1,2001:db8::1",
    "--peer-router-asns=65000,4200000001",
    "--peer-router-ports=179,1790",
    "--peer-router-passwords=cGFzc3dvcmQ=,",
    "--service-node-port-range=30000:31000",
    "--bgp-holdtime=1m30s",
    "-v=3",
    "--enable-ipv6",
  ], env());
  assert.equal(c.runRouter, false);
  assert.equal(c.runFirewall, true);
  assert.equal(c.clusterAsn, 65001);
  assert.equal(c.v, 3);
  assert.equal(c.enableIpv6, true);
  assert.equal(c.bgpHoldtime, 90_000);
  assert.deepEqual(c.serviceNodePortRange, [30000, 31000]);
  // An empty entry leaves that peer without a password.
  assert.deepEqual(c.externalPeers, [
    { ip: "192.168.1.1", asn: 65000, port: 179, password: "password" },
    { ip: "2001:db8::1", asn: 4200000001, port: 1790 },
  ]);
});

Deno.test("config zips external peer lists and decodes base64 passwords", () => {
  const c = loadConfig([
    "--peer-router-ips=10.0.0.1,10.0.0.2",
    "--peer-router-asns=65000,65001",
    "--peer-router-passwords=cGFzc3dvcmQ=,c2VjcmV0",
  ], env());
  assert.deepEqual(c.externalPeers, [
    { ip: "10.0.0.1", asn: 65000, port: 179, password: "password" },
    { ip: "10.0.0.2", asn: 65001, port: 179, password: "secret" },
  ]);
});

Deno.test("config reads peer passwords from --peer-router-passwords-file", () => {
  const c = loadConfig(
    ["--peer-router-ips=10.0.0.1", "--peer-router-asns=65000", "--peer-router-passwords-file=/pw"],
    env({}, { "/pw": "c2VjcmV0\n" }),
  );
  assert.equal(c.externalPeers[0]?.password, "secret");
  rejects(
    ["--peer-router-ips=10.0.0.1", "--peer-router-asns=65000", "--peer-router-passwords-file=/missing"],
    "peer-router-passwords-file",
    "cannot read",
  );
});

Deno.test("config takes the node name from --hostname-override, then NODE_NAME, then the hostname", () => {
  assert.equal(loadConfig(["--hostname-override=a"], env({ NODE_NAME: "b" })).nodeName, "a");
  assert.equal(loadConfig([], env({ NODE_NAME: "b" })).nodeName, "b");
  assert.equal(loadConfig([], env()).nodeName, "test-node");
  assert.equal(
    loadConfig([], env({ KUBE_ROUTER_CNI_CONF_FILE: "/tmp/x.conflist" })).cniConfFile,
    "/tmp/x.conflist",
  );
});

Deno.test("a list flag given twice keeps both values, as kube-router's (pflag) slices do", () => {
  const c = loadConfig(
    [
      "--service-cluster-ip-range=172.16.0.0/16",
      "--service-cluster-ip-range",
      "fd00:172::/112",
      "--service-external-ip-range=203.0.113.0/24,198.51.100.0/24",
      "--service-external-ip-range=192.0.2.0/24",
    ],
    env(),
  );
  assert.deepEqual(c.serviceClusterIpRange, ["172.16.0.0/16", "fd00:172::/112"]);
  assert.deepEqual(c.serviceExternalIpRange, ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"]);
  // The first one given replaces the default; a single flag is as before.
  assert.deepEqual(loadConfig(["--service-cluster-ip-range=10.0.0.0/16"], env()).serviceClusterIpRange, [
    "10.0.0.0/16",
  ]);
  rejects(
    ["--service-cluster-ip-range=10.0.0.0/16", "--service-cluster-ip-range=10.1.0.0/16"],
    "service-cluster-ip-range",
    "at most 1",
  );
});

Deno.test("config refuses every kind of bad value with the flag's name", () => {
  rejects(["--service-cluster-ip-range=10.96.0.0/33"], "service-cluster-ip-range", "not a CIDR");
  rejects(["--service-cluster-ip-range=banana"], "service-cluster-ip-range");
  rejects(["--service-cluster-ip-range=10.0.0.0/16,10.1.0.0/16"], "service-cluster-ip-range", "at most 1");
  rejects(["--service-external-ip-range=1.2.3.4"], "service-external-ip-range");
  rejects(["--excluded-cidrs=10.0.0.0/8,nope"], "excluded-cidrs");
  rejects(["--loadbalancer-ip-range=300.0.0.0/8"], "loadbalancer-ip-range");
  rejects(["--service-node-port-range=32767-30000"], "service-node-port-range", "backwards");
  rejects(["--service-node-port-range=0-100"], "service-node-port-range");
  rejects(["--service-node-port-range=30000"], "service-node-port-range");
  rejects(["--cluster-asn=100"], "cluster-asn", "private");
  rejects(["--cluster-asn=4294967296"], "cluster-asn", "out of range");
  rejects(["--cluster-asn=-1"], "cluster-asn");
  rejects(["--peer-router-ips=10.0.0.1", "--peer-router-asns=0"], "peer-router-asns", "out of range");
  rejects(["--peer-router-ips=10.0.0.1", "--peer-router-asns=4294967296"], "peer-router-asns");
  rejects(["--peer-router-ips=10.0.0.1,10.0.0.2", "--peer-router-asns=65000"], "peer-router-asns", "match");
  rejects(["--peer-router-ips=10.0.0.1.5", "--peer-router-asns=65000"], "peer-router-ips");
  rejects(
    ["--peer-router-ips=10.0.0.1", "--peer-router-asns=65000", "--peer-router-ports=179,180"],
    "peer-router-ports",
  );
  rejects(
    ["--peer-router-ips=10.0.0.1", "--peer-router-asns=65000", "--peer-router-ports=70000"],
    "peer-router-ports",
  );
  rejects(
    ["--peer-router-ips=10.0.0.1,10.0.0.2", "--peer-router-asns=1,2", "--peer-router-passwords=cGFzcw=="],
    "peer-router-passwords",
  );
  rejects(
    ["--peer-router-ips=10.0.0.1", "--peer-router-asns=1", "--peer-router-passwords=!!!"],
    "peer-router-passwords",
    "base64",
  );
  rejects(["--bgp-holdtime=1s"], "bgp-holdtime");
  rejects(["--bgp-holdtime=ninety"], "bgp-holdtime", "duration");
  rejects(["--bgp-graceful-restart-time=5000s"], "bgp-graceful-restart-time");
  rejects(["--bgp-port=0"], "bgp-port");
  rejects(["--bgp-port=65536"], "bgp-port");
  rejects(["--health-port=abc"], "health-port");
  rejects(["--metrics-port=70000"], "metrics-port");
  rejects(["--metrics-path=metrics"], "metrics-path");
  rejects(["--health-addr=localhost:1"], "health-addr");
  rejects(["--router-id=1.2.3"], "router-id");
  rejects(["--overlay-type=partial"], "overlay-type");
  rejects(["--service-proxy-backend=iptables"], "service-proxy-backend");
  rejects(["--run-router=maybe"], "run-router", "boolean");
  rejects(["--enable-ipv4=false"], "enable-ipv4", "at least one");
  rejects(["--routes-sync-period=0s"], "routes-sync-period");
  rejects(["--cache-sync-timeout=0"], "cache-sync-timeout");
  rejects(["--no-such-flag"], "no-such-flag", "unknown flag");
  rejects(["--kubeconfig"], "kubeconfig", "needs an argument");
  rejects(["--hostname-override=Bad_Name"], "hostname-override");
});

Deno.test("durations parse as Go's time.ParseDuration does", () => {
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration("300ms"), 300);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("5"), undefined);
  assert.equal(parseDuration("5m banana"), undefined);
  assert.equal(parseDuration(""), undefined);
});

Deno.test("--help lists every flag with its default", () => {
  const text = usage();
  for (const name of Object.keys(FLAGS)) assert.ok(text.includes(`--${name}`), `--help lacks --${name}`);
  assert.match(text, /--health-port int +.*\(default 20244\)/);
  assert.match(text, /--service-node-port-range range.*\(default 30000-32767\)/);
  assert.match(text, /--bgp-graceful-restart-deferral-time duration.*\(default 6m\)/);
});
