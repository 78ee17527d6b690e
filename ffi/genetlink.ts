/**
 * Generic netlink: families such as "IPVS" and "fou" get their message type from the kernel at run time,
 * asked of the controller family (`nlctrl`, type 0x10) by name. Equivalent to libnl's
 * `genl_ctrl_resolve(sock, "IPVS")`. Codecs are pure; `resolveFamily` does the one request.
 */
import { NetlinkDecodeError, NetlinkError } from "./errors.ts";
import { attrMap, NETLINK_GENERIC, type NlMsg, type NlWriter, read } from "./netlink.ts";
import type { NetlinkSocket } from "./netlink_socket.ts";

/** The controller family's fixed message type. */
export const GENL_ID_CTRL = 0x10;
/** Size of `struct genlmsghdr` (cmd, version, reserved). */
export const GENL_HDRLEN = 4;
const CTRL_CMD_NEWFAMILY = 1;
const CTRL_CMD_GETFAMILY = 3;
const CTRL_ATTR_FAMILY_ID = 1;
const CTRL_ATTR_FAMILY_NAME = 2;
const CTRL_ATTR_VERSION = 3;
const CTRL_ATTR_MAXATTR = 5;

export { NETLINK_GENERIC };

/** A resolved family: its message type and the protocol version the kernel implements. */
export interface GenlFamily {
  name: string;
  id: number;
  version: number;
  maxAttr: number;
}

/** Writes the generic netlink header after the netlink header. */
export function genlHeader(w: NlWriter, cmd: number, version: number): void {
  w.u8(cmd).u8(version).u16(0);
}

/** The generic header's command and the attribute area of a generic netlink message. */
export function genlPayload(msg: NlMsg): { cmd: number; version: number; attrs: Uint8Array } {
  if (msg.payload.length < GENL_HDRLEN) {
    throw new NetlinkDecodeError("generic netlink message shorter than its header");
  }
  return { cmd: msg.payload[0]!, version: msg.payload[1]!, attrs: msg.payload.subarray(GENL_HDRLEN) };
}

/** Body of a CTRL_CMD_GETFAMILY request for `name` (as libnl sends it: version 1). */
export function encodeGetFamily(w: NlWriter, name: string): void {
  genlHeader(w, CTRL_CMD_GETFAMILY, 1);
  w.attrString(CTRL_ATTR_FAMILY_NAME, name);
}

/** Decodes the controller's CTRL_CMD_NEWFAMILY reply. */
export function decodeFamily(msg: NlMsg): GenlFamily {
  const { cmd, attrs } = genlPayload(msg);
  if (msg.type !== GENL_ID_CTRL || cmd !== CTRL_CMD_NEWFAMILY) {
    throw new NetlinkDecodeError(`expected a controller NEWFAMILY reply, got type ${msg.type} cmd ${cmd}`);
  }
  const a = attrMap(attrs);
  const id = a.get(CTRL_ATTR_FAMILY_ID);
  const name = a.get(CTRL_ATTR_FAMILY_NAME);
  if (!id || !name) throw new NetlinkDecodeError("controller reply without family id or name");
  const version = a.get(CTRL_ATTR_VERSION);
  const maxAttr = a.get(CTRL_ATTR_MAXATTR);
  return {
    name: read.str(name),
    id: read.u16(id, "CTRL_ATTR_FAMILY_ID"),
    version: version ? read.u32(version, "CTRL_ATTR_VERSION") : 1,
    maxAttr: maxAttr ? read.u32(maxAttr, "CTRL_ATTR_MAXATTR") : 0,
  };
}

/**
 * Asks the controller for family `name` on a NETLINK_GENERIC socket. Throws NetlinkError ENOENT when the
 * kernel has no such family (its module is not loaded and cannot be: the kernel tries to load it first).
 */
export function resolveFamily(sock: NetlinkSocket, name: string): GenlFamily {
  const replies = sock.request(
    GENL_ID_CTRL,
    0,
    (w) => encodeGetFamily(w, name),
    `resolve genetlink family ${name}`,
  );
  const reply = replies.find((m) => m.type === GENL_ID_CTRL);
  if (!reply) throw new NetlinkError(2, /* ENOENT */ `resolve genetlink family ${name}`, 0, "no reply");
  return decodeFamily(reply);
}
