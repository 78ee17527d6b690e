import assert from "node:assert/strict";
import {
  decodeFouPort,
  encodeFouAdd,
  encodeFouDel,
  encodeLinkAdd,
  type NlMsg,
  NlWriter,
  parseMessages,
} from "../../../ffi/mod.ts";

// Captured from iproute2 in the VM tier's guest: tests/unit/ffi/golden/capture_fou.ts.
const golden = JSON.parse(await Deno.readTextFile(new URL("./golden/fou.json", import.meta.url))) as {
  requests: Record<string, string>;
  dumps: Record<string, string[]>;
};
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (h: string) => new Uint8Array(h.match(/../g)!.map((x) => parseInt(x, 16)));

function sameHeader(captured: string, body: (w: NlWriter) => void): string {
  const m = parseMessages(bytes(captured))[0]!;
  const w = new NlWriter();
  const off = w.beginMsg(m.type, m.flags, m.seq, m.pid);
  body(w);
  w.endMsg(off);
  return hex(w.toBytes());
}

const CASES: Record<string, (w: NlWriter) => void> = {
  "ip fou add port 5555 gue": (w) => encodeFouAdd(w, { port: 5555, family: 4, type: "gue" }),
  "ip -6 fou add port 5555 gue": (w) => encodeFouAdd(w, { port: 5555, family: 6, type: "gue" }),
  "ip fou add port 5556 ipproto 4": (w) =>
    encodeFouAdd(w, { port: 5556, family: 4, type: "direct", ipproto: 4 }),
  "ip fou del port 5556": (w) => encodeFouDel(w, { port: 5556, family: 4 }),
};

for (const [cmd, encode] of Object.entries(CASES)) {
  Deno.test(`FoU request encodes byte for byte as iproute2 sends it: ${cmd}`, () => {
    assert.equal(sameHeader(golden.requests[cmd]!, encode), golden.requests[cmd]);
  });
}

Deno.test("an ipip link with GUE encapsulation encodes as iproute2 sends it and decodes back", () => {
  const cmd =
    "ip link add tun-x type ipip local 10.0.0.1 remote 10.0.0.2 ttl 225 encap gue encap-sport auto encap-dport 5555";
  const captured = golden.requests[cmd]!;
  const got = sameHeader(captured, (w) =>
    encodeLinkAdd(w, {
      kind: "ipip",
      name: "tun-x",
      local: "10.0.0.1",
      remote: "10.0.0.2",
      ttl: 225,
      fou: { dport: 5555, gue: true },
    }));
  assert.equal(got, captured);
});

Deno.test("the FoU port dump captured from `ip fou show` decodes to the ports of both families that were open", () => {
  const msgs: NlMsg[] = [];
  let prev = "";
  for (const h of golden.dumps["ip fou show"]!) {
    if (h !== prev) msgs.push(...parseMessages(bytes(h)));
    prev = h;
  }
  const fouType = msgs.find((m) => m.type > 0x10)!.type;
  const ports = msgs.filter((m) => m.type === fouType).map(decodeFouPort);
  // The kernel dumps every family's ports; `ip fou show` filters by family itself.
  assert.deepEqual(ports.sort((a, b) => a.port - b.port || a.family - b.family), [
    { port: 5555, family: 4, type: "gue" },
    { port: 5555, family: 6, type: "gue" },
    { port: 5556, family: 4, type: "direct", ipproto: 4 },
  ]);
});
