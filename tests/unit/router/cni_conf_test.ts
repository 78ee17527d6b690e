import assert from "node:assert/strict";
import { buildCniConf, podMtu, readCniConf, writeCniConf } from "../../../modules/router/cni_conf.ts";

Deno.test("CNI conflist gets kube-bridge, host-local ranges per pod CIDR, MTU and portmap", () => {
  const conf = buildCniConf(undefined, {
    podCidrs: ["10.1.1.0/24", "fd00:1::/64"],
    mtu: 1480,
    hairpin: true,
    list: true,
  });
  assert.deepEqual(conf, {
    cniVersion: "0.3.1",
    name: "kubernetes",
    plugins: [
      {
        type: "bridge",
        bridge: "kube-bridge",
        isDefaultGateway: true,
        hairpinMode: true,
        ipam: { type: "host-local", ranges: [[{ subnet: "10.1.1.0/24" }], [{ subnet: "fd00:1::/64" }]] },
        mtu: 1480,
      },
      { type: "portmap", capabilities: { portMappings: true, snat: true } },
    ],
  });
});

Deno.test("CNI conflist keeps keys and plugins a user added and replaces only the router's own", () => {
  const existing = {
    cniVersion: "1.0.0",
    name: "mynet",
    custom: 1,
    plugins: [
      {
        type: "bridge",
        bridge: "old",
        ipam: { type: "host-local", subnet: "10.9.9.0/24", dataDir: "/x" },
        promiscMode: true,
      },
      { type: "portmap", capabilities: { portMappings: true } },
      { type: "bandwidth" },
    ],
  };
  const conf = buildCniConf(existing, { podCidrs: ["10.1.2.0/24"], hairpin: false, list: true });
  assert.equal(conf.cniVersion, "1.0.0");
  assert.equal(conf.name, "mynet");
  assert.equal(conf.custom, 1);
  const plugins = conf.plugins as Record<string, unknown>[];
  assert.deepEqual(plugins[0], {
    type: "bridge",
    bridge: "kube-bridge",
    isDefaultGateway: true,
    hairpinMode: false,
    promiscMode: true,
    ipam: { type: "host-local", dataDir: "/x", ranges: [[{ subnet: "10.1.2.0/24" }]] },
  });
  assert.deepEqual(plugins.map((p) => p.type), ["bridge", "portmap", "bandwidth"]);
});

Deno.test("a single-plugin .conf stays a single plugin", () => {
  const conf = buildCniConf({ name: "mynet", type: "bridge" }, {
    podCidrs: ["10.1.3.0/24"],
    hairpin: true,
    list: false,
  });
  assert.equal(conf.type, "bridge");
  assert.equal(conf.plugins, undefined);
  assert.deepEqual(conf.ipam, { type: "host-local", ranges: [[{ subnet: "10.1.3.0/24" }]] });
});

Deno.test("pod MTU subtracts the tunnel overhead only with an overlay", () => {
  assert.equal(podMtu(1500, { enabled: false, underlay: 4 }), 1500);
  assert.equal(podMtu(1500, { enabled: true, underlay: 4 }), 1450);
  assert.equal(podMtu(1500, { enabled: true, underlay: 6 }), 1430);
  assert.throws(
    () => buildCniConf(undefined, { podCidrs: ["10.1.0.0"], hairpin: true, list: true }),
    /not a CIDR/,
  );
});

Deno.test("CNI conf is written atomically, only when it changes, and bad JSON on disk is reported", async () => {
  const dir = await Deno.makeTempDir({ prefix: "krt-cni-" });
  try {
    const path = `${dir}/net.d/10-kuberouter.conflist`;
    assert.deepEqual(await readCniConf(path), { value: undefined });
    const conf = buildCniConf(undefined, { podCidrs: ["10.1.1.0/24"], hairpin: true, list: true });
    assert.equal(await writeCniConf(path, conf), true);
    assert.equal(await writeCniConf(path, conf), false, "unchanged content is not rewritten");
    assert.deepEqual((await readCniConf(path)).value, conf);
    const leftovers = [...Deno.readDirSync(`${dir}/net.d`)].map((e) => e.name);
    assert.deepEqual(leftovers, ["10-kuberouter.conflist"]);
    await Deno.writeTextFile(path, "{not json");
    const bad = await readCniConf(path);
    assert.equal(bad.value, undefined);
    assert.match(bad.problem ?? "", /is not JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
