/**
 * Foo-over-UDP receive ports over generic netlink, family "fou": the kernel decapsulates UDP datagrams
 * arriving on such a port (direct FoU, or GUE with its 4-byte header) and hands the inner packet to the
 * ipip/ip6tnl device that matches. kube-router's `--overlay-encap=fou` opens one GUE port
 * (`--overlay-encap-port`, default 5555) per underlay family:
 *
 * ```sh
 * ip fou add port 5555 gue          # addPort({port: 5555, family: 4, type: "gue"})
 * ip -6 fou add port 5555 gue       # addPort({port: 5555, family: 6, type: "gue"})
 * ip fou del port 5555              # delPort({port: 5555, family: 4})
 * ```
 */
import { NetlinkError } from "./errors.ts";
import { genlHeader, genlPayload, resolveFamily } from "./genetlink.ts";
import type { Family } from "./ip.ts";
import { AF_INET, AF_INET6 } from "./libc.ts";
import { attrMap, NETLINK_GENERIC, type NlMsg, type NlWriter, read } from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";
import { settle } from "./ipvs.ts";

/** FOU_GENL_VERSION. */
export const FOU_GENL_VERSION = 1;
const FOU_CMD_ADD = 1;
const FOU_CMD_DEL = 2;
const FOU_CMD_GET = 3;
const FOU_ATTR_PORT = 1;
const FOU_ATTR_AF = 2;
const FOU_ATTR_IPPROTO = 3;
const FOU_ATTR_TYPE = 4;
const FOU_ENCAP_DIRECT = 1;
const FOU_ENCAP_GUE = 2;

/** A receive port. `ipproto` is needed for direct FoU (what the payload is), not for GUE. */
export interface FouPort {
  port: number;
  family: Family;
  type: "direct" | "gue";
  ipproto?: number;
}

/** Receive ports, real or fake. */
export interface Fou {
  ports(): Promise<FouPort[]>;
  addPort(p: FouPort): Promise<void>;
  delPort(p: { port: number; family: Family }): Promise<void>;
  close(): void;
}

/** Body of FOU_CMD_ADD, attributes in iproute2's order (ip/ipfou.c). */
export function encodeFouAdd(w: NlWriter, p: FouPort): void {
  if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
    throw new RangeError(`FoU port ${p.port} is out of range`);
  }
  genlHeader(w, FOU_CMD_ADD, FOU_GENL_VERSION);
  w.attrBe16(FOU_ATTR_PORT, p.port);
  w.attrU8(FOU_ATTR_TYPE, p.type === "gue" ? FOU_ENCAP_GUE : FOU_ENCAP_DIRECT);
  w.attrU8(FOU_ATTR_AF, p.family === 4 ? AF_INET : AF_INET6);
  if (p.ipproto !== undefined) w.attrU8(FOU_ATTR_IPPROTO, p.ipproto);
}

/** Body of FOU_CMD_DEL; iproute2 sends the type too (direct unless given), which the kernel ignores. */
export function encodeFouDel(
  w: NlWriter,
  p: { port: number; family: Family; type?: "direct" | "gue" },
): void {
  genlHeader(w, FOU_CMD_DEL, FOU_GENL_VERSION);
  w.attrBe16(FOU_ATTR_PORT, p.port);
  w.attrU8(FOU_ATTR_TYPE, p.type === "gue" ? FOU_ENCAP_GUE : FOU_ENCAP_DIRECT);
  w.attrU8(FOU_ATTR_AF, p.family === 4 ? AF_INET : AF_INET6);
}

/** Decodes one port of a FOU_CMD_GET dump. */
export function decodeFouPort(msg: NlMsg): FouPort {
  const a = attrMap(genlPayload(msg).attrs);
  const af = a.get(FOU_ATTR_AF);
  const proto = a.get(FOU_ATTR_IPPROTO);
  const type = a.get(FOU_ATTR_TYPE);
  return {
    port: read.be16(a.get(FOU_ATTR_PORT) ?? new Uint8Array(), "FoU port"),
    family: af && read.u8(af) === AF_INET6 ? 6 : 4,
    type: type && read.u8(type) === FOU_ENCAP_GUE ? "gue" : "direct",
    ...(proto && read.u8(proto) !== 0 ? { ipproto: read.u8(proto) } : {}),
  };
}

/** FoU through a NETLINK_GENERIC socket; a kernel without the fou module fails to open with ENOENT. */
export class FouNetlink implements Fou {
  #sock: NetlinkSocket | undefined;
  readonly familyId: number;

  constructor() {
    const sock = NetlinkSocket.open(NETLINK_GENERIC);
    try {
      this.familyId = resolveFamily(sock, "fou").id;
    } catch (e) {
      sock.close();
      throw e;
    }
    this.#sock = sock;
  }

  get #s(): NetlinkSocket {
    if (!this.#sock) throw new NetlinkError(9, "fou socket is closed", 0);
    return this.#sock;
  }

  ports(): Promise<FouPort[]> {
    return settle(() =>
      this.#s.dump(this.familyId, (w) => genlHeader(w, FOU_CMD_GET, FOU_GENL_VERSION), "FOU_CMD_GET")
        .filter((m) => m.type === this.familyId).map(decodeFouPort)
    );
  }

  addPort(p: FouPort): Promise<void> {
    return settle(() => {
      this.#s.request(this.familyId, 0, (w) => encodeFouAdd(w, p), `fou add port ${p.port} (IPv${p.family})`);
    });
  }

  delPort(p: { port: number; family: Family }): Promise<void> {
    return settle(() => {
      this.#s.request(this.familyId, 0, (w) => encodeFouDel(w, p), `fou del port ${p.port} (IPv${p.family})`);
    });
  }

  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }
}

/** In-memory FoU ports with the kernel's errors: EEXIST for a taken port, ENOENT for a missing one. */
export class FakeFou implements Fou {
  #ports = new Map<string, FouPort>();

  ports(): Promise<FouPort[]> {
    return Promise.resolve([...this.#ports.values()].map((p) => ({ ...p })));
  }

  addPort(p: FouPort): Promise<void> {
    return settle(() => {
      const k = `${p.family}/${p.port}`;
      if (this.#ports.has(k)) throw new NetlinkError(17, `fou add port ${p.port}`, 0);
      this.#ports.set(k, { ...p });
    });
  }

  delPort(p: { port: number; family: Family }): Promise<void> {
    return settle(() => {
      if (!this.#ports.delete(`${p.family}/${p.port}`)) {
        throw new NetlinkError(2, `fou del port ${p.port}`, 0);
      }
    });
  }

  close(): void {}
}
