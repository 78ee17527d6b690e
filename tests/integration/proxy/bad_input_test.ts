/**
 * Bad input with real traffic (issue 10, "Bad input"): each bad object is logged once with its name and
 * skipped, every other Service, and every good part of the bad one, keeps answering. All of it arrives in
 * the first list, so the bad and the good share one transaction: the kernel rejection below is narrowed
 * down to the one Service while the rest of that chunk is applied. nftables backend (the IPVS one reads the
 * same model and logs the same problems from its own plan).
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice } from "@kubernetes/client-node";
import { needs } from "../../_support/netns.ts";
import { NODE_IP, ProxyEnv, service, slices } from "./_env.ts";

const cip = (n: number) => ({ clusterIP: `172.16.0.${n}`, clusterIPs: [`172.16.0.${n}`] });

/** Log lines (the driver's stderr) about a Service (`service=KEY`; another's line may name it as owner). */
function linesAbout(env: ProxyEnv, key: string): string[] {
  return env.driver.stderr.split("\n").filter((l) => l.includes(`service=${key} `));
}

Deno.test({
  ...needs(
    "bad input is logged once with the object's name and skipped, and every other Service keeps answering",
    { tools: ["nft", "curl"] },
  ),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await ProxyEnv.create();
    try {
      // Something the renderer cannot foresee and the kernel refuses: a set by the name of sticky's affinity
      // set, made by hand with another type ("File exists" when the proxy adds its own).
      // (JSON: nft's own syntax cannot name a set with these characters.)
      const handMade = await Deno.makeTempFile({ suffix: ".json" });
      await Deno.writeTextFile(
        handMade,
        JSON.stringify({
          nftables: [
            { add: { table: { family: "inet", name: "kube_router_proxy" } } },
            {
              add: {
                set: {
                  family: "inet",
                  table: "kube_router_proxy",
                  name: "aff-default/sticky/tcp/http__10.1.1.10/8080",
                  type: "inet_service",
                },
              },
            },
          ],
        }),
      );
      await env.node.exec(["nft", "-j", "-f", handMade]).finally(() => Deno.remove(handMade));
      const garbage = slices("garbage", [2])[0]!;
      garbage.endpoints.push(
        { addresses: ["10.1.1.999"], conditions: { ready: true }, nodeName: "n1" },
        { addresses: ["zzz"], conditions: { ready: true }, nodeName: "n1" },
        { addresses: ["fd00:1:1::10"], conditions: { ready: true }, nodeName: "n1" },
      );
      (garbage.ports as unknown[]).push({ name: "x", port: 99999, protocol: "TCP" }, { port: 8080 });
      const nodePort = (name: string, n: number) =>
        service(name, {
          type: "NodePort",
          ...cip(n),
          ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30100 }],
        });
      const objects = [
        service("good", cip(40)),
        ...slices("good", [0, 1, 2]),
        service("sticky", {
          ...cip(41),
          sessionAffinity: "ClientIP",
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
        }),
        ...slices("sticky", [0]),
        // Not an IP, inside the cluster IP range, and one good one.
        service("badext", { ...cip(42), externalIPs: ["not-an-ip", "172.16.0.99", "203.0.113.42"] }),
        ...slices("badext", [1]),
        // The same external IP and port as badext's good one: badext (first by name) keeps it.
        service("clash", { ...cip(47), externalIPs: ["203.0.113.42"] }),
        ...slices("clash", [2]),
        // Two Services claiming NodePort 30100: np1 (first by name) keeps it.
        nodePort("np1", 43),
        ...slices("np1", [0]),
        nodePort("np2", 44),
        ...slices("np2", [1]),
        service("garbage", cip(45)),
        garbage as V1EndpointSlice,
        // An unknown protocol on one port; the other port works.
        service("proto", {
          ...cip(46),
          ports: [
            { name: "weird", port: 81, protocol: "ICMP" },
            { name: "http", port: 80, protocol: "TCP", targetPort: "http" as unknown as number },
          ],
        }),
        ...slices("proto", [2]),
      ];
      // No periodic resync while the first sync's outcome is checked (a full sync is forced below).
      await env.startProxy(["--ipvs-sync-period=10m"], objects);

      const body = async (url: string) => {
        const a = await env.get("client", url, 2);
        return a.ok ? a.body : `error ${a.code}`;
      };
      const seen = await env.reaches("client", "http://172.16.0.40/hostname", ["pod-a", "pod-b", "pod-c"]);
      assert.deepEqual([...seen.keys()].sort(), ["pod-a", "pod-b", "pod-c"], "good, beside all the bad");
      // The kernel refused sticky's rules: it was left out, the rest of its transaction went in.
      assert.notEqual(await body("http://172.16.0.41/hostname"), "pod-a", "sticky is not programmed");
      assert.equal(await body("http://203.0.113.42/hostname"), "pod-b", "badext's valid external IP");
      assert.equal(await body("http://172.16.0.42/hostname"), "pod-b", "badext's cluster IP");
      assert.equal(await body("http://172.16.0.47/hostname"), "pod-c", "clash's cluster IP");
      for (let i = 0; i < 3; i++) {
        assert.equal(await body(`http://${NODE_IP}:30100/hostname`), "pod-a", "np1 keeps NodePort 30100");
      }
      assert.equal(await body("http://172.16.0.44/hostname"), "pod-b", "np2's cluster IP");
      assert.equal(await body("http://172.16.0.45/hostname"), "pod-c", "garbage's one good endpoint");
      assert.equal(await body("http://172.16.0.46/hostname"), "pod-c", "proto's TCP port");

      // A full resync (the table deleted by hand: the probe notices it) renders everything again: sticky
      // goes in now (the hand-made set went with the table), and each bad object is still logged once.
      await env.node.exec(["nft", "delete table inet kube_router_proxy"]);
      const t0 = Date.now();
      while ((await body("http://172.16.0.41/hostname")) !== "pod-a") {
        if (Date.now() - t0 > 8000) throw new Error("sticky not programmed by the full resync");
      }
      assert.equal(await body("http://172.16.0.45/hostname"), "pod-c", "garbage's one good endpoint");
      const expect: [string, RegExp][] = [
        ["default/sticky", /kernel rejected/],
        ["default/badext", /not-an-ip.*172\.16\.0\.99 lies inside the service cluster IP range/],
        ["default/clash", /conflicts with another/],
        ["default/np2", /conflicts with another/],
        ["default/garbage", /10\.1\.1\.999/],
        ["default/proto", /ICMP/],
      ];
      for (const [key, what] of expect) {
        const lines = linesAbout(env, key);
        assert.equal(lines.length, 1, `${key} logged once:\n${lines.join("\n")}`);
        assert.match(lines[0]!, what, key);
      }
      for (const key of ["default/good", "default/np1"]) {
        assert.deepEqual(linesAbout(env, key), [], key);
      }
    } catch (e) {
      if (env.driver) console.error(await env.dump().catch(String), env.driver.stderr);
      throw e;
    } finally {
      await env.close();
    }
  },
});
