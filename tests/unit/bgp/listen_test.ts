import assert from "node:assert/strict";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { BgpSpeaker } from "../../../modules/router/bgp/speaker.ts";

Deno.test({
  name: "the speaker listens on loopback with Deno's TCP and two speakers peer over real sockets",
  // Deno's TCP listener and connections are closed by stop(); no timers stay behind.
  fn: async () => {
    const sink = new MemorySink();
    const a = new BgpSpeaker({
      asn: 65001,
      routerId: "127.0.0.1",
      port: 0,
      listenAddresses: ["127.0.0.1"],
      log: getLogger({}, sink),
    });
    await a.start();
    const port = a.listenPort!;
    assert.ok(port > 0);
    const b = new BgpSpeaker({
      asn: 65002,
      routerId: "127.0.0.2",
      port,
      listenAddresses: [],
      log: getLogger({}, sink),
    });
    try {
      a.addPeer({ address: "127.0.0.1", asn: 65002, passive: true, holdTime: 0 });
      b.addPeer({ address: "127.0.0.1", asn: 65001, holdTime: 0, connectRetry: 1 });
      await b.start();
      b.set("ipv4-unicast", [{ prefix: "10.2.0.0/24" }]);
      const end = Date.now() + 5000;
      while (Date.now() < end && !a.routes("ipv4-unicast").length) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(a.routes("ipv4-unicast")[0]?.prefix, "10.2.0.0/24");
      assert.equal(a.routes("ipv4-unicast")[0]?.nextHop, "127.0.0.1");
    } finally {
      await b.stop();
      await a.stop();
      await new Promise((r) => setTimeout(r, 50));
    }
  },
});

Deno.test("start() fails when no listen address can be bound and succeeds again once one can", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const s = new BgpSpeaker({
    asn: 65001,
    routerId: "127.0.0.1",
    port,
    listenAddresses: ["127.0.0.1"],
    log: getLogger({}, new MemorySink()),
  });
  try {
    await assert.rejects(() => s.start());
    taken.close();
    await s.start();
    assert.equal(s.listenPort, port);
  } finally {
    await s.stop();
  }
});
