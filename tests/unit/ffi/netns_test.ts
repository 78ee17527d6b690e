import assert from "node:assert/strict";
import {
  decodeNsid,
  encodeNsidGet,
  NlWriter,
  parseMessages,
  RTM_GETNSID,
  RTM_NEWNSID,
} from "../../../ffi/mod.ts";

Deno.test("RTM_GETNSID for a namespace fd is a padded rtgenmsg and NETNSA_FD, as ip netns list-id sends it", () => {
  const w = new NlWriter();
  const off = w.beginMsg(RTM_GETNSID, 1, 7);
  encodeNsidGet(w, 9);
  w.endMsg(off);
  const bytes = w.toBytes();
  assert.deepEqual(
    [...bytes],
    [28, 0, 0, 0, 90, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 3, 0, 9, 0, 0, 0],
  );
});

Deno.test("RTM_NEWNSID gives the id, and none for NETNSA_NSID_NOT_ASSIGNED (-1) or a missing attribute", () => {
  const answer = (id?: number) => {
    const w = new NlWriter();
    const off = w.beginMsg(RTM_NEWNSID, 0, 1);
    w.u8(0).u8(0).u16(0);
    if (id !== undefined) w.i32(0x00010008).i32(id);
    w.endMsg(off);
    return parseMessages(w.toBytes())[0]!;
  };
  assert.equal(decodeNsid(answer(3)), 3);
  assert.equal(decodeNsid(answer(-1)), undefined);
  assert.equal(decodeNsid(answer()), undefined);
});
