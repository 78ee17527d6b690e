/**
 * The FFI socket transport (ffi/tcp.ts) against gobgpd: TCP MD5 signatures (RFC 2385) both ways, refusal
 * with a wrong password, and binding a chosen source address. Needs root.
 */
import assert from "node:assert/strict";
import type { NetNs } from "../../_support/netns.ts";
import { gobgpConfig, gobgpTest, sleep, waitFor } from "./_interop.ts";

/** Reading the wire needs these besides gobgpd. */
const TCPDUMP = ["tcpdump", "timeout"];

/**
 * Captures (with `tcpdump -v`, 8 s at most) the first segment on `ns`'s eth0 matching `filter` that
 * carries data (PSH), while `action` makes our speaker send something; returns tcpdump's output.
 */
async function captureWhile(ns: NetNs, filter: string, action: () => Promise<unknown>): Promise<string> {
  const capture = ns.exec(["timeout", "8", "tcpdump", "-i", "eth0", "-c", "1", "-nn", "-v", filter], {
    check: false,
  });
  await sleep(1500); // let tcpdump attach
  await action();
  return (await capture).stdout;
}

gobgpTest(
  "an MD5-protected session to gobgpd establishes with the right password and every segment is signed",
  { subnet: 8, ipv6: false, tools: TCPDUMP },
  async ({ drv, gob, them }) => {
    await them.exec(["ip", "addr", "add", "10.0.8.3/24", "dev", "eth0"]);
    await gob.start(gobgpConfig({
      asn: 65002,
      routerId: "10.0.8.2",
      neighbors: [
        {
          address: "10.0.8.1",
          asn: 65001,
          passive: true,
          password: "s3cret-pw",
          families: ["ipv4-unicast"],
        },
      ],
    }));
    await gob.cli("global", "rib", "add", "10.2.0.0/24", "-a", "ipv4");
    await drv.call("start", {
      asn: 65001,
      routerId: "10.0.8.1",
      listenAddresses: ["0.0.0.0"],
      useSocketTransport: true,
    });
    await drv.call("addPeer", {
      address: "10.0.8.2",
      asn: 65002,
      password: "s3cret-pw",
      connectRetry: 1,
    });
    await drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] });
    await drv.waitEstablished("10.0.8.2");
    await waitFor(
      "routes over the MD5 session",
      async () => (await drv.routes()).some((r) => r.prefix === "10.2.0.0/24"),
    );
    await gob.waitPrefix("gobgpd learns our route", "ipv4", "10.1.0.0/24");
    // Every segment of the session carries the TCP MD5 option (kind 19): check with tcpdump.
    const cap = await captureWhile(them, "tcp port 179 and tcp[13] & 8 != 0", () =>
      drv.call("set", {
        family: "ipv4-unicast",
        routes: [{ prefix: "10.1.0.0/24" }, { prefix: "10.1.1.0/24" }],
      }));
    assert.match(cap, /md5/i);
  },
);

gobgpTest("gobgpd connects to our MD5-keyed listener", { subnet: 9, ipv6: false }, async ({ drv, gob }) => {
  // No transport given: the speaker starts on Deno's TCP and moves its listener to the libc
  // socket transport when the first peer with a password is added.
  await drv.call("start", {
    asn: 65001,
    routerId: "10.0.9.1",
    listenAddresses: ["0.0.0.0"],
  });
  await drv.call("addPeer", {
    address: "10.0.9.2",
    asn: 65002,
    password: "listen-pw",
    passive: true,
  });
  await gob.start(gobgpConfig({
    asn: 65002,
    routerId: "10.0.9.2",
    neighbors: [{
      address: "10.0.9.1",
      asn: 65001,
      password: "listen-pw",
      families: ["ipv4-unicast"],
    }],
  }));
  await drv.waitEstablished("10.0.9.2");
});

gobgpTest(
  "a wrong MD5 password keeps the session from establishing",
  { subnet: 10, ipv6: false },
  async ({ drv, gob }) => {
    await gob.start(gobgpConfig({
      asn: 65002,
      routerId: "10.0.10.2",
      neighbors: [{
        address: "10.0.10.1",
        asn: 65001,
        passive: true,
        password: "right-pw",
        families: ["ipv4-unicast"],
      }],
    }));
    await drv.call("start", {
      asn: 65001,
      routerId: "10.0.10.1",
      listenAddresses: ["0.0.0.0"],
      useSocketTransport: true,
    });
    await drv.call("addPeer", {
      address: "10.0.10.2",
      asn: 65002,
      password: "wrong-pw",
      connectRetry: 1,
    });
    await sleep(6000);
    const p = await drv.peer("10.0.10.2");
    assert.notEqual(p?.state, "Established");
    assert.ok(["Connect", "Active", "Idle"].includes(p!.state), `state ${p!.state}`);
    assert.notEqual(await gob.neighborState("10.0.10.1"), "established");
    // Fixing the password at run time lets it establish.
    await drv.call("updatePeer", {
      address: "10.0.10.2",
      asn: 65002,
      password: "right-pw",
      connectRetry: 1,
    });
    await drv.waitEstablished("10.0.10.2", 40_000);
  },
);

gobgpTest("the socket transport binds the configured source address and sets the multihop TTL", {
  subnet: 11,
  ipv6: false,
  tools: TCPDUMP,
}, async ({ drv, gob, us, them }) => {
  await us.exec(["ip", "addr", "add", "10.0.11.11/24", "dev", "eth0"]);
  // gobgpd only knows us as 10.0.11.11: a session from 10.0.11.1 would be refused.
  await gob.start(gobgpConfig({
    asn: 65002,
    routerId: "10.0.11.2",
    neighbors: [{ address: "10.0.11.11", asn: 65001, passive: true, families: ["ipv4-unicast"] }],
  }));
  await drv.call("start", {
    asn: 65001,
    routerId: "10.0.11.1",
    listenAddresses: [],
  });
  await drv.call("addPeer", {
    address: "10.0.11.2",
    asn: 65002,
    localAddress: "10.0.11.11",
    multihopTtl: 2,
    connectRetry: 1,
  });
  const st = await drv.waitEstablished("10.0.11.2");
  assert.equal(st.localAddress, "10.0.11.11");
  // The multihop TTL is on our segments (tcpdump -v prints the IP TTL).
  const cap = await captureWhile(
    them,
    "src 10.0.11.11 and tcp[13] & 8 != 0",
    () => drv.call("set", { family: "ipv4-unicast", routes: [{ prefix: "10.1.0.0/24" }] }),
  );
  assert.match(cap, /ttl 2,/);
});
