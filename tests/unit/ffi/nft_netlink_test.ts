import assert from "node:assert/strict";
import {
  Errno,
  NetlinkSocket,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  type NlMsg,
  NLMSG_DONE,
  NlWriter,
} from "../../../ffi/mod.ts";
import { ack, concat, ScriptedKernel } from "./_scripted_kernel.ts";
import {
  fieldsOf,
  NFT_MSG_GETCHAIN,
  NFT_MSG_GETSET,
  NFT_MSG_GETSETELEM,
  NFT_MSG_GETTABLE,
  NFT_SET,
  NftNetlinkReader,
  type NftSetInfo,
  NftType,
  NftUndecodable,
} from "../../../ffi/nft_netlink.ts";

/** A scripted kernel answering each message on its own. */
function perMessage(handle: (req: NlMsg) => Uint8Array[]): ScriptedKernel {
  return new ScriptedKernel((msgs) => msgs.flatMap((m) => handle(m)));
}

function done(req: NlMsg): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(NLMSG_DONE, NLM_F_MULTI, req.seq, 1);
  w.i32(0);
  w.endMsg(off);
  return w.toBytes();
}

/** One dump reply message of `type` whose attributes `body` writes after the nfgenmsg. */
function reply(req: NlMsg, body: (w: NlWriter) => void, flags = NLM_F_MULTI): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(req.type, flags, req.seq, 1);
  w.u8(1).u8(0).be16(0);
  body(w);
  w.endMsg(off);
  return w.toBytes();
}

const be32 = (v: number) => new Uint8Array([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255]);
const le32 = (v: number) => new Uint8Array([v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24]);
/** A field padded to 4 bytes, as inside a concatenation. */
const pad4 = (b: Uint8Array) => concat(b, new Uint8Array((4 - (b.length % 4)) % 4));
const ip4 = (s: string) => new Uint8Array(s.split(".").map(Number));
const port = (p: number) => new Uint8Array([p >> 8, p & 255]);
const ip6 = (hex: string) => new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));

type Elem = {
  key: Uint8Array;
  value?: Uint8Array;
  verdict?: { code: number; chain?: string };
  flags?: number;
};

/** NFTA_SET_ELEM_LIST_* attributes holding `elems`. */
function elements(table: string, set: string, elems: Elem[]) {
  return (w: NlWriter) => {
    w.attrString(1, table).attrString(2, set);
    const list = w.beginNest(3);
    for (const e of elems) {
      const el = w.beginNest(1);
      const k = w.beginNest(1);
      w.attr(1, e.key);
      w.endNest(k);
      if (e.value || e.verdict) {
        const d = w.beginNest(2);
        if (e.value) w.attr(1, e.value);
        else {
          const v = w.beginNest(2);
          w.attr(1, be32(e.verdict!.code >>> 0));
          if (e.verdict!.chain) w.attrString(2, e.verdict!.chain);
          w.endNest(v);
        }
        w.endNest(d);
      }
      if (e.flags) w.attr(3, be32(e.flags));
      w.endNest(el);
    }
    w.endNest(list);
  };
}

const T = { family: "inet", table: "krt" };
const type = (...ids: number[]) => ids.reduce((t, id) => t * 64 + id, 0);

Deno.test("a concatenated key's fields come from nft's datatype ids, 6 bits each, an integer taking what is left", () => {
  const { ipv4Addr, inetProto, inetService, integer, ipv6Addr } = NftType;
  assert.deepEqual(
    fieldsOf(type(ipv4Addr, inetProto, inetService), 12)?.map((f) => [f.type, f.size, f.len]),
    [[ipv4Addr, 4, 4], [inetProto, 4, 1], [inetService, 4, 2]],
  );
  assert.deepEqual(fieldsOf(type(ipv6Addr, inetService, integer), 24)?.map((f) => f.size), [16, 4, 4]);
  assert.deepEqual(fieldsOf(ipv4Addr, 4)?.map((f) => f.len), [4]);
  assert.equal(fieldsOf(type(ipv4Addr, inetService), 12), undefined, "lengths that do not add up");
  assert.equal(fieldsOf(type(ipv4Addr, 20), 8), undefined, "a type it cannot print (ifname)");
  assert.equal(fieldsOf(type(integer, integer), 8), undefined, "two integers of unknown widths");
});

Deno.test("a table's layout is its chains and named sets, and nothing for a table that does not exist", () => {
  const kernel = perMessage((req) => {
    if (req.type === NFT_MSG_GETTABLE) {
      const name = new TextDecoder().decode(req.payload.subarray(8)).replace(/\0.*$/s, "");
      return [ack(req, name === "krt" ? 0 : Errno.ENOENT)];
    }
    if (req.type === NFT_MSG_GETCHAIN) {
      return [
        reply(req, (w) => w.attrString(1, "krt").attrString(3, "dispatch")),
        reply(req, (w) => w.attrString(1, "other").attrString(3, "input")),
        reply(req, (w) => w.attrString(1, "krt").attrString(3, "pick_v4_tcp_rr_2")),
        done(req),
      ];
    }
    assert.equal(req.type, NFT_MSG_GETSET);
    return [
      reply(req, (w) =>
        w.attrString(1, "krt").attrString(2, "vips").attr(3, be32(NFT_SET.map))
          .attr(4, be32(type(7, 12, 13))).attr(5, be32(12)).attr(6, be32(0xffffff00)).attr(7, be32(16))),
      reply(req, (w) => w.attrString(1, "krt").attrString(2, "__set0").attr(3, be32(NFT_SET.anonymous))),
      reply(
        req,
        (w) =>
          w.attrString(1, "krt").attrString(2, "cidrs").attr(3, be32(NFT_SET.interval)).attr(4, be32(7))
            .attr(5, be32(4)),
      ),
      done(req),
    ];
  });
  const r = new NftNetlinkReader(NetlinkSocket.fromTransport(kernel));
  const layout = r.layout("inet", "krt");
  assert.deepEqual(layout?.chains, ["dispatch", "pick_v4_tcp_rr_2"]);
  assert.deepEqual(layout?.sets, [
    {
      name: "vips",
      flags: NFT_SET.map,
      map: true,
      interval: false,
      keyType: type(7, 12, 13),
      keyLen: 12,
      dataType: 0xffffff00,
      dataLen: 16,
    },
    { name: "cidrs", flags: NFT_SET.interval, map: false, interval: true, keyType: 7, keyLen: 4 },
  ]);
  assert.equal(r.layout("inet", "gone"), undefined);
});

Deno.test("elements decode to nft's text: IPv4 and IPv6 keys, protocols, ports, numgen slots, verdicts and endpoints", async () => {
  const vmap: NftSetInfo = {
    name: "service_ips_v6",
    flags: NFT_SET.map,
    map: true,
    interval: false,
    keyType: type(8, 12, 13),
    keyLen: 24,
    dataType: 0xffffff00,
    dataLen: 16,
  };
  const eps: NftSetInfo = {
    name: "service_endpoints_v4_tcp",
    flags: NFT_SET.map,
    map: true,
    interval: false,
    keyType: type(7, 13, 4),
    keyLen: 12,
    dataType: type(7, 13),
    dataLen: 8,
  };
  const set: NftSetInfo = {
    name: "hairpin_v4",
    flags: 0,
    map: false,
    interval: false,
    keyType: type(7, 7),
    keyLen: 8,
  };
  const dumps: Record<string, Elem[][]> = {
    service_ips_v6: [[
      {
        key: concat(ip6("fd000172000000000000000000000010"), pad4(new Uint8Array([6])), pad4(port(80))),
        verdict: { code: -4, chain: "pick_v6_tcp_rr_2" },
      },
      {
        key: concat(ip6("20010db8000000000000000000000001"), pad4(new Uint8Array([17])), pad4(port(53))),
        verdict: { code: 0 },
      },
    ], [
      {
        key: concat(ip6("00000000000000000000000000000001"), pad4(new Uint8Array([132])), pad4(port(3868))),
        verdict: { code: -3, chain: "x" },
      },
    ]],
    service_endpoints_v4_tcp: [[
      {
        key: concat(ip4("10.96.0.1"), pad4(port(80)), le32(65535)),
        value: concat(ip4("10.1.2.5"), pad4(port(8080))),
      },
    ]],
    hairpin_v4: [[{ key: concat(ip4("10.1.1.5"), ip4("10.1.1.5")) }, {
      key: concat(ip4("0.0.0.0"), ip4("255.255.255.255")),
    }]],
  };
  const kernel = perMessage((req) => {
    assert.equal(req.type, NFT_MSG_GETSETELEM);
    const name = new TextDecoder().decode(req.payload).match(
      /(service_ips_v6|service_endpoints_v4_tcp|hairpin_v4)/,
    )![1]!;
    // Each inner list is one datagram, as the kernel cuts a large dump.
    return [...dumps[name]!.map((d) => reply(req, elements("krt", name, d))), done(req)];
  });
  const r = new NftNetlinkReader(NetlinkSocket.fromTransport(kernel));
  const got = async (s: NftSetInfo) => {
    const out: [string, string][] = [];
    await r.elements(T.family, T.table, s, (k, v) => out.push([k, v]));
    return out;
  };
  assert.deepEqual(await got(vmap), [
    ["fd00:172::10 . tcp . 80", "goto pick_v6_tcp_rr_2"],
    ["2001:db8::1 . udp . 53", "drop"],
    ["::1 . sctp . 3868", "jump x"],
  ]);
  assert.deepEqual(await got(eps), [["10.96.0.1 . 80 . 65535", "10.1.2.5 . 8080"]]);
  assert.deepEqual(await got(set), [["10.1.1.5 . 10.1.1.5", ""], ["0.0.0.0 . 255.255.255.255", ""]]);
});

Deno.test("a dump the kernel marks interrupted is read again from the start after restart(); a missing set lists nothing", async () => {
  const set: NftSetInfo = {
    name: "cluster_ips_v4",
    flags: 0,
    map: false,
    interval: false,
    keyType: 7,
    keyLen: 4,
  };
  let calls = 0;
  const kernel = perMessage((req) => {
    calls++;
    if (calls === 1) {
      return [
        reply(req, elements("krt", set.name, [{ key: ip4("10.96.0.1") }])),
        reply(req, elements("krt", set.name, [{ key: ip4("10.96.0.2") }]), NLM_F_MULTI | NLM_F_DUMP_INTR),
        done(req),
      ];
    }
    if (calls === 2) return [reply(req, elements("krt", set.name, [{ key: ip4("10.96.0.3") }])), done(req)];
    return [ack(req, Errno.ENOENT)];
  });
  const r = new NftNetlinkReader(NetlinkSocket.fromTransport(kernel));
  const seen: string[] = [];
  await r.elements("inet", "krt", set, (k) => seen.push(k), () => seen.push("restart"));
  assert.deepEqual(seen, ["10.96.0.1", "restart", "10.96.0.3"]);
  const none: string[] = [];
  await r.elements("inet", "krt", set, (k) => none.push(k));
  assert.deepEqual(none, []);
});

Deno.test("interval sets and types it cannot print are refused before anything is read, so the caller lists them through nft", async () => {
  const kernel = perMessage(() => assert.fail("nothing may be sent"));
  const r = new NftNetlinkReader(NetlinkSocket.fromTransport(kernel));
  const base = { flags: 0, map: false, interval: false, keyLen: 4 };
  const list = (s: NftSetInfo) => r.elements("inet", "krt", s, () => assert.fail("no element expected"));
  await assert.rejects(list({ ...base, name: "cidrs", interval: true, keyType: 7 }), NftUndecodable);
  await assert.rejects(list({ ...base, name: "ifs", keyType: 41, keyLen: 16 }), NftUndecodable);
  await assert.rejects(
    list({ ...base, name: "m", map: true, keyType: 7, dataType: 41, dataLen: 16 }),
    NftUndecodable,
  );
});
