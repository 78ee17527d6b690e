import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeOpen, fromHex, MSG_UPDATE } from "../../../modules/router/bgp/message.ts";
import { announce, peerAttrs, RawPeer, World } from "./_harness.ts";

const session: { hex: string; type: number }[] = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/gobgp_bird_session.json", import.meta.url)),
);
const updates = session.filter((m) => m.type === MSG_UPDATE).map((m) => fromHex(m.hex));

Deno.test("an UPDATE during OpenConfirm is a finite state machine error (5/2)", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const raw = await RawPeer.connect(w, "10.0.0.9", "10.0.0.1");
  await raw.send(
    encodeOpen({ version: 4, myAs: 65009, holdTime: 90, routerId: "10.0.0.9", capabilities: [] }),
  );
  await w.settle();
  assert.equal(s.peer("10.0.0.9")?.state, "OpenConfirm");
  await raw.send(updates[0]!);
  await w.settle();
  assert.deepEqual(raw.notifications(), [{ code: 5, subcode: 2 }]);
});

Deno.test("mutated UPDATEs on one session never crash the speaker, never hang the session, never touch another peer", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const good = w.speaker("10.0.0.8", { asn: 65008, routerId: "10.0.0.8" });
  s.addPeer({ address: "10.0.0.8", asn: 65008, passive: true });
  s.addPeer({
    address: "10.0.0.9",
    asn: 4200000002,
    passive: true,
    families: ["ipv4-unicast", "ipv6-unicast"],
  });
  good.addPeer({ address: "10.0.0.1", asn: 65001 });
  await s.start();
  await good.start();
  good.set("ipv4-unicast", [{ prefix: "10.8.0.0/16" }]);
  await w.settle();
  const attrs = peerAttrs(4200000002, "10.0.0.9");
  const seed = announce(attrs, ["10.9.0.0/16"]);
  const corpus = [...updates, seed];
  let resets = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: corpus.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
      async (pick, edits) => {
        const raw = await RawPeer.connect(w, "10.0.0.9", "10.0.0.1");
        await raw.handshake({
          myAs: 23456,
          routerId: "10.0.0.9",
          capabilities: [{ code: 1, afi: 1, safi: 1 }, { code: 1, afi: 2, safi: 1 }, {
            code: 65,
            asn: 4200000002,
          }],
        });
        await w.settle(3);
        if (s.peer("10.0.0.9")?.state !== "Established") {
          // The previous connection's retry window: let the listener side catch up.
          await w.clock.advance(130_000);
        }
        const m = corpus[pick]!.slice();
        for (const [pos, val] of edits) m[19 + (pos % Math.max(1, m.length - 19))] = val;
        await raw.send(m);
        await w.settle(3);
        const st = s.peer("10.0.0.9")!.state;
        const notes = raw.notifications();
        // Either the session is still up (accepted, or treat-as-withdraw) or it was reset with a NOTIFICATION.
        assert.ok(st === "Established" || notes.length > 0, `state ${st} without NOTIFICATION`);
        if (notes.length) resets++;
        raw.conn.close();
        await w.settle(3);
        assert.equal(s.peer("10.0.0.8")?.state, "Established");
        assert.ok(s.routes("ipv4-unicast").some((r) => r.prefix === "10.8.0.0/16"));
      },
    ),
    { numRuns: 150 },
  );
  assert.ok(resets > 0, "some mutations must have reset the session");
  // Every failure was a protocol error the codec named, never an exception from inside the speaker.
  assert.deepEqual(
    w.sink.lines.filter((l) => l.includes("internal error") || l.includes("subscriber failed")),
    [],
  );
});
