import assert from "node:assert/strict";
import {
  decodeDestination,
  decodeFamily,
  decodeInfo,
  decodeService,
  decodeTimeouts,
  encodeBare,
  encodeDestCmd,
  encodeGetDests,
  encodeGetFamily,
  encodeServiceCmd,
  encodeSetTimeouts,
  genlPayload,
  IpvsCmd,
  type IpvsDestination,
  type IpvsService,
  IpvsServiceFlag,
  type NlMsg,
  NlWriter,
  parseMessages,
  serviceKeyString,
} from "../../../ffi/mod.ts";

// Captured from ipvsadm 1.31 (libnl) in the VM tier's guest: tests/unit/ffi/golden/capture_ipvs.ts.
const golden = JSON.parse(await Deno.readTextFile(new URL("./golden/ipvsadm.json", import.meta.url))) as {
  requests: Record<string, string>;
  family: string;
  dumps: Record<string, { request: string; replies: string[] }>;
};

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (h: string) => new Uint8Array(h.match(/../g)!.map((x) => parseInt(x, 16)));

/** Encodes with the captured message's own header (type, flags, seq, pid) so whole messages compare. */
function sameHeader(captured: string, body: (w: NlWriter) => void): string {
  const m = parseMessages(bytes(captured))[0]!;
  const w = new NlWriter();
  const off = w.beginMsg(m.type, m.flags, m.seq, m.pid);
  body(w);
  w.endMsg(off);
  return hex(w.toBytes());
}

const svc = { family: 4, protocol: "tcp", address: "10.96.0.10", port: 80 } as const;
const { persistent, onePacket, sched1, sched2 } = IpvsServiceFlag;

const REQUESTS: Record<string, (w: NlWriter) => void> = {
  "ipvsadm -A -t 10.96.0.10:80 -s rr": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, { ...svc, scheduler: "rr" }),
  "ipvsadm -A -u 10.96.0.10:53 -s wrr -p 300": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, {
      family: 4,
      protocol: "udp",
      address: "10.96.0.10",
      port: 53,
      scheduler: "wrr",
      flags: persistent,
      timeout: 300,
    }),
  "ipvsadm -A --sctp-service 10.96.0.11:9000 -s lc": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, {
      family: 4,
      protocol: "sctp",
      address: "10.96.0.11",
      port: 9000,
      scheduler: "lc",
    }),
  "ipvsadm -A -f 7 -s sh -b sh-fallback,sh-port": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, {
      family: 4,
      fwmark: 7,
      scheduler: "sh",
      flags: sched1 | sched2,
    }),
  "ipvsadm -A -t [fd00::10]:443 -s mh -b mh-port -p 60 -M 64": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, {
      family: 6,
      protocol: "tcp",
      address: "fd00::10",
      port: 443,
      scheduler: "mh",
      flags: persistent | sched2,
      timeout: 60,
      netmask: 64,
    }),
  "ipvsadm -A -u 10.96.0.12:80 -s rr -o": (w) =>
    encodeServiceCmd(w, IpvsCmd.newService, {
      family: 4,
      protocol: "udp",
      address: "10.96.0.12",
      port: 80,
      scheduler: "rr",
      flags: onePacket,
    }),
  "ipvsadm -E -t 10.96.0.10:80 -s wlc": (w) =>
    encodeServiceCmd(w, IpvsCmd.setService, { ...svc, scheduler: "wlc" }),
  "ipvsadm -D -t 10.96.0.10:80": (w) => encodeServiceCmd(w, IpvsCmd.delService, svc),
  "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3 -x 100 -y 10": (w) =>
    encodeDestCmd(w, IpvsCmd.newDest, svc, {
      address: "10.1.1.5",
      port: 8080,
      forward: "masq",
      weight: 3,
      upperThreshold: 100,
      lowerThreshold: 10,
    }),
  // ipvsadm gives tunnel and route destinations the virtual port, whatever -r says.
  "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.6:8080 -i -w 1": (w) =>
    encodeDestCmd(w, IpvsCmd.newDest, svc, { address: "10.1.1.6", port: 80, forward: "tunnel", weight: 1 }),
  "ipvsadm -a -f 7 -r 10.1.1.7:0 -g -w 2": (w) =>
    encodeDestCmd(w, IpvsCmd.newDest, { family: 4, fwmark: 7 }, {
      address: "10.1.1.7",
      port: 0,
      forward: "route",
      weight: 2,
    }),
  "ipvsadm -a -t [fd00::10]:443 -r [fd00::1:5]:8443 -m -w 1": (w) =>
    encodeDestCmd(w, IpvsCmd.newDest, { family: 6, protocol: "tcp", address: "fd00::10", port: 443 }, {
      address: "fd00::1:5",
      port: 8443,
      forward: "masq",
      weight: 1,
    }),
  "ipvsadm -e -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 0": (w) =>
    encodeDestCmd(w, IpvsCmd.setDest, svc, { address: "10.1.1.5", port: 8080, forward: "masq", weight: 0 }),
  "ipvsadm -d -t 10.96.0.10:80 -r 10.1.1.5:8080": (w) =>
    encodeDestCmd(w, IpvsCmd.delDest, svc, { address: "10.1.1.5", port: 8080 }),
  "ipvsadm --set 900 120 300": (w) => encodeSetTimeouts(w, { tcp: 900, tcpFin: 120, udp: 300 }),
  "ipvsadm -C": (w) => encodeBare(w, IpvsCmd.flush),
  "ipvsadm -Z": (w) => encodeBare(w, IpvsCmd.zero),
};

Deno.test("every captured ipvsadm request has an encoder case", () => {
  assert.deepEqual(Object.keys(golden.requests).sort(), Object.keys(REQUESTS).sort());
});

for (const [cmd, encode] of Object.entries(REQUESTS)) {
  Deno.test(`IPVS request encodes byte for byte as ipvsadm sends it: ${cmd}`, () => {
    const captured = golden.requests[cmd]!;
    assert.equal(sameHeader(captured, encode), captured);
  });
}

Deno.test("the genetlink family lookup encodes as libnl sends it", () => {
  assert.equal(sameHeader(golden.family, (w) => encodeGetFamily(w, "IPVS")), golden.family);
});

/** Every message of a dump's replies; libnl peeks each datagram before reading it, so drop repeats. */
function replies(key: string): NlMsg[] {
  const d = Object.entries(golden.dumps).find(([k]) => k.endsWith(key))![1];
  const out: NlMsg[] = [];
  let prev = "";
  for (const h of d.replies) {
    if (h !== prev) out.push(...parseMessages(bytes(h)));
    prev = h;
  }
  return out;
}

const STATS0 = {
  conns: 0,
  inPkts: 0,
  outPkts: 0,
  inBytes: 0,
  outBytes: 0,
  cps: 0,
  inPps: 0,
  outPps: 0,
  inBps: 0,
  outBps: 0,
};

Deno.test("service and destination dumps captured from `ipvsadm -Ln --stats` decode to what was configured", () => {
  const msgs = replies("ipvsadm -Ln --stats");
  const ipvsType = decodeFamily(msgs.find((m) => m.type === 0x10)!).id;
  const services: IpvsService[] = [];
  const dests: IpvsDestination[] = [];
  for (const m of msgs.filter((m) => m.type === ipvsType)) {
    const { cmd, attrs } = genlPayload(m);
    // Replies carry one nest (service = 1, destination = 2) without NLA_F_NESTED.
    const nest = attrs.subarray(4, new DataView(attrs.buffer, attrs.byteOffset).getUint16(0, true));
    if (cmd === IpvsCmd.newService) services.push(decodeService(nest));
    if (cmd === IpvsCmd.newDest) dests.push(decodeDestination(nest, 4));
  }
  assert.deepEqual(services, [
    { ...svc, scheduler: "wrr", flags: persistent, timeout: 300, netmask: 32, stats: STATS0 },
    {
      family: 6,
      protocol: "udp",
      address: "fd00::10",
      port: 53,
      scheduler: "rr",
      flags: 0,
      timeout: 0,
      netmask: 128,
      stats: STATS0,
    },
    { family: 4, fwmark: 7, scheduler: "sh", flags: sched1 | sched2, timeout: 0, netmask: 32, stats: STATS0 },
  ]);
  const common = { activeConns: 0, inactiveConns: 0, persistConns: 0, stats: STATS0 };
  assert.deepEqual(dests, [
    {
      address: "10.1.1.6",
      port: 80,
      forward: "tunnel",
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
      ...common,
    },
    {
      address: "10.1.1.5",
      port: 8080,
      forward: "masq",
      weight: 3,
      upperThreshold: 100,
      lowerThreshold: 10,
      ...common,
    },
    // Decoded against an IPv4 service family, so the IPv6 address family is reported explicitly.
    {
      address: "fd00::1:5",
      port: 5353,
      family: 6,
      forward: "masq",
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
      ...common,
    },
  ]);
  assert.deepEqual(services.map(serviceKeyString), ["tcp/10.96.0.10:80", "udp/[fd00::10]:53", "fwmark/4/7"]);
});

Deno.test("the per-service destination dump request encodes as ipvsadm sends it", () => {
  const d = Object.entries(golden.dumps).find(([k]) => k.endsWith("ipvsadm -Ln --stats"))![1];
  assert.equal(sameHeader(d.request, (w) => encodeGetDests(w, { family: 4, fwmark: 7 })), d.request);
});

Deno.test("the timeouts and info replies decode (ipvsadm -L --timeout, ipvsadm -v)", () => {
  const t = replies("ipvsadm -L --timeout").filter((m) => m.type !== 0x10 && m.type > 3);
  const config = t.find((m) => genlPayload(m).cmd === IpvsCmd.setConfig)!;
  assert.deepEqual(decodeTimeouts(config), { tcp: 900, tcpFin: 120, udp: 300 });
  const info = replies("ipvsadm -v").find((m) => m.type > 0x10 && genlPayload(m).cmd === IpvsCmd.setInfo)!;
  assert.deepEqual(decodeInfo(info), { version: "1.2.1", connTableSize: 4096 });
});

Deno.test("bad IPVS input is refused before anything is sent", () => {
  const w = new NlWriter();
  assert.throws(
    () => encodeDestCmd(w, IpvsCmd.newDest, svc, { address: "10.1.1.5", port: 80, weight: 70000 }),
    RangeError,
  );
  assert.throws(
    () => encodeServiceCmd(w, IpvsCmd.newService, { ...svc, port: 70000, scheduler: "rr" }),
    RangeError,
  );
  assert.throws(() => encodeDestCmd(w, IpvsCmd.newDest, svc, { address: "nope", port: 80 }));
});
