/**
 * What the router needs from a Node object: its addresses, pod CIDRs and kube-router's BGP annotations.
 * Parsing is pure. A malformed annotation never stops the router: it is reported in `problems` (the
 * caller logs it once) and that one setting is ignored, so the other peers and routes keep working.
 */
import type { V1Node } from "@kubernetes/client-node";
import YAML from "yaml";
import { type Family, formatCidr, parseCidr, parseIP, parseIPv4 } from "../../ffi/mod.ts";
import { parseCommunity } from "./bgp/mod.ts";

export const ANNOTATIONS = {
  asn: "kube-router.io/node.asn",
  rrServer: "kube-router.io/rr.server",
  rrClient: "kube-router.io/rr.client",
  peers: "kube-router.io/peers",
  peerIps: "kube-router.io/peer.ips",
  peerAsns: "kube-router.io/peer.asns",
  peerPasswords: "kube-router.io/peer.passwords",
  peerPorts: "kube-router.io/peer.ports",
  peerLocalIps: "kube-router.io/peer.localips",
  pathPrependAs: "kube-router.io/path-prepend.as",
  pathPrependRepeat: "kube-router.io/path-prepend.repeat-n",
  communities: "kube-router.io/node.bgp.communities",
  customImportReject: "kube-router.io/node.bgp.customimportreject",
  localAddresses: "kube-router.io/bgp-local-addresses",
  podCidr: "kube-router.io/pod-cidr",
  podCidrs: "kube-router.io/pod-cidrs",
} as const;

/** A BGP peer configured for one node through its annotations. */
export interface AnnotatedPeer {
  ip: string;
  asn: number;
  port: number;
  password?: string;
  localIp?: string;
}

export interface NodeInfo {
  name: string;
  /** InternalIP addresses (else ExternalIP), at most one per family. */
  ipv4?: string;
  ipv6?: string;
  /** Pod CIDRs from spec.podCIDRs/podCIDR, else the kube-router.io/pod-cidr(s) annotation. */
  podCidrs: string[];
  /** kube-router.io/node.asn. */
  asn?: number;
  /** Route reflector cluster id this node serves (rr.server) or is a client of (rr.client). */
  rrServer?: string;
  rrClient?: string;
  peers: AnnotatedPeer[];
  pathPrepend?: { asn: number; repeat: number };
  communities: number[];
  customImportReject: string[];
  localAddresses: string[];
  /** One line per annotation that could not be used, naming it and why. */
  problems: string[];
}

function nodeAddress(node: V1Node, family: Family): string | undefined {
  const addrs = node.status?.addresses ?? [];
  for (const type of ["InternalIP", "ExternalIP"]) {
    for (const a of addrs) {
      if (a.type === type && parseIP(a.address)?.family === family) return a.address;
    }
  }
  return undefined;
}

function parseAsn(text: string): number | undefined {
  if (!/^\d{1,10}$/.test(text.trim())) return undefined;
  const n = Number(text.trim());
  return n >= 1 && n <= 4294967295 ? n : undefined;
}

function decodePassword(b64: string): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(b64.trim()), (c) => c.charCodeAt(0)),
    );
  } catch {
    return undefined;
  }
}

/** Route reflector cluster ids are written as a number or as an IPv4 address; compare them as IPv4. */
export function normalizeClusterId(text: string): string | undefined {
  const t = text.trim();
  if (parseIPv4(t)) return t;
  if (/^\d{1,10}$/.test(t) && Number(t) <= 4294967295) {
    const n = Number(t);
    return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
  }
  return undefined;
}

function list(text: string): string[] {
  return text.split(",").map((s) => s.trim());
}

/** Validates one peer's fields (from the YAML annotation or the positional lists); undefined if unusable. */
function peerFromFields(
  e: Record<string, unknown>,
  where: string,
  problems: string[],
): AnnotatedPeer | undefined {
  const ip = typeof e.remoteip === "string" ? e.remoteip.trim() : "";
  if (!parseIP(ip)) {
    problems.push(`${where}: remoteip ${JSON.stringify(e.remoteip)} is not an IP address`);
    return undefined;
  }
  const asn = parseAsn(String(e.remoteasn ?? ""));
  if (asn === undefined) {
    problems.push(`${where}: remoteasn ${JSON.stringify(e.remoteasn)} is not an ASN`);
    return undefined;
  }
  const peer: AnnotatedPeer = { ip, asn, port: 179 };
  if (e.port !== undefined && e.port !== "") {
    const port = Number(e.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      problems.push(`${where}: port ${JSON.stringify(e.port)} is not a port`);
      return undefined;
    }
    peer.port = port;
  }
  if (e.password !== undefined && e.password !== "") {
    const pw = decodePassword(String(e.password));
    if (pw === undefined) {
      problems.push(`${where}: password is not valid base64`);
      return undefined;
    }
    peer.password = pw;
  }
  if (e.localip !== undefined && e.localip !== "") {
    if (!parseIP(String(e.localip))) {
      problems.push(`${where}: localip ${JSON.stringify(e.localip)} is not an IP address`);
      return undefined;
    }
    peer.localIp = String(e.localip);
  }
  return peer;
}

function parsePeersYaml(text: string, problems: string[]): AnnotatedPeer[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    problems.push(
      `${ANNOTATIONS.peers}: not valid YAML (${err instanceof Error ? err.message.split("\n")[0] : err})`,
    );
    return [];
  }
  if (!Array.isArray(doc)) {
    problems.push(`${ANNOTATIONS.peers}: expected a YAML list of peers`);
    return [];
  }
  return doc.flatMap((entry: unknown, k) => {
    const where = `${ANNOTATIONS.peers}[${k}]`;
    if (typeof entry !== "object" || entry === null) {
      problems.push(`${where}: expected a mapping`);
      return [];
    }
    return peerFromFields(entry as Record<string, unknown>, where, problems) ?? [];
  });
}

/** The deprecated positional annotations (peer.ips, peer.asns, …), zipped by index as kube-router does. */
function parsePeerLists(a: Record<string, string>, problems: string[]): AnnotatedPeer[] {
  const ipsText = a[ANNOTATIONS.peerIps];
  if (ipsText === undefined) return [];
  const ips = list(ipsText);
  const column = (key: string): string[] | undefined => {
    const l = a[key] !== undefined ? list(a[key]!) : [];
    if (l.length > 0 && l.length !== ips.length) {
      problems.push(`${key}: ${l.length} entries for ${ips.length} peer(s)`);
      return undefined;
    }
    return l;
  };
  const asns = list(a[ANNOTATIONS.peerAsns] ?? "");
  if (ips.length !== asns.length) {
    problems.push(
      `${ANNOTATIONS.peerIps}/${ANNOTATIONS.peerAsns}: ${ips.length} address(es) but ${asns.length} ASN(s)`,
    );
    return [];
  }
  const passwords = column(ANNOTATIONS.peerPasswords);
  const ports = column(ANNOTATIONS.peerPorts);
  const locals = column(ANNOTATIONS.peerLocalIps);
  if (!passwords || !ports || !locals) return [];
  return ips.flatMap((ip, k) =>
    peerFromFields(
      { remoteip: ip, remoteasn: asns[k], port: ports[k], password: passwords[k], localip: locals[k] },
      `${ANNOTATIONS.peerIps}[${k}]`,
      problems,
    ) ?? []
  );
}

/** Extracts everything the router uses from a Node. Never throws. */
export function nodeInfo(node: V1Node): NodeInfo {
  const a = node.metadata?.annotations ?? {};
  const problems: string[] = [];
  const info: NodeInfo = {
    name: node.metadata?.name ?? "",
    podCidrs: [],
    peers: [],
    communities: [],
    customImportReject: [],
    localAddresses: [],
    problems,
  };
  const v4 = nodeAddress(node, 4);
  const v6 = nodeAddress(node, 6);
  if (v4) info.ipv4 = v4;
  if (v6) info.ipv6 = v6;

  const specCidrs = node.spec?.podCIDRs?.length
    ? node.spec.podCIDRs
    : node.spec?.podCIDR
    ? [node.spec.podCIDR]
    : [];
  const annotated = a[ANNOTATIONS.podCidrs] ?? a[ANNOTATIONS.podCidr];
  const cidrTexts = specCidrs.length ? specCidrs : annotated ? list(annotated) : [];
  for (const t of cidrTexts) {
    const c = parseCidr(t);
    if (c) info.podCidrs.push(formatCidr(c));
    else problems.push(`pod CIDR ${JSON.stringify(t)} is not a CIDR`);
  }

  if (a[ANNOTATIONS.asn] !== undefined) {
    const asn = parseAsn(a[ANNOTATIONS.asn]!);
    if (asn === undefined) {
      problems.push(`${ANNOTATIONS.asn}: ${JSON.stringify(a[ANNOTATIONS.asn])} is not an ASN`);
    } else info.asn = asn;
  }
  for (
    const [key, field] of [[ANNOTATIONS.rrServer, "rrServer"], [ANNOTATIONS.rrClient, "rrClient"]] as const
  ) {
    if (a[key] === undefined) continue;
    const id = normalizeClusterId(a[key]!);
    if (id === undefined) {
      problems.push(`${key}: ${JSON.stringify(a[key])} is not a cluster id (a number or IPv4)`);
    } else info[field] = id;
  }
  if (info.rrServer && info.rrClient) {
    problems.push(
      `${ANNOTATIONS.rrServer} and ${ANNOTATIONS.rrClient} are both set; acting as a server only`,
    );
    delete info.rrClient;
  }

  info.peers = a[ANNOTATIONS.peers] !== undefined
    ? parsePeersYaml(a[ANNOTATIONS.peers]!, problems)
    : parsePeerLists(a, problems);

  if (a[ANNOTATIONS.pathPrependAs] !== undefined) {
    const asn = parseAsn(a[ANNOTATIONS.pathPrependAs]!);
    const repeatText = a[ANNOTATIONS.pathPrependRepeat] ?? "1";
    const repeat = /^\d+$/.test(repeatText) ? Number(repeatText) : NaN;
    if (asn === undefined) problems.push(`${ANNOTATIONS.pathPrependAs}: not an ASN`);
    else if (!(repeat >= 1 && repeat <= 255)) {
      problems.push(`${ANNOTATIONS.pathPrependRepeat}: must be 1-255`);
    } else info.pathPrepend = { asn, repeat };
  }
  if (a[ANNOTATIONS.communities] !== undefined) {
    for (const t of list(a[ANNOTATIONS.communities]!).filter(Boolean)) {
      const c = parseCommunity(t);
      if (c === undefined) {
        problems.push(`${ANNOTATIONS.communities}: ${JSON.stringify(t)} is not a community`);
      } else info.communities.push(c);
    }
  }
  if (a[ANNOTATIONS.customImportReject] !== undefined) {
    for (const t of list(a[ANNOTATIONS.customImportReject]!).filter(Boolean)) {
      const c = parseCidr(t);
      if (!c) problems.push(`${ANNOTATIONS.customImportReject}: ${JSON.stringify(t)} is not a CIDR`);
      else info.customImportReject.push(formatCidr(c));
    }
  }
  if (a[ANNOTATIONS.localAddresses] !== undefined) {
    for (const t of list(a[ANNOTATIONS.localAddresses]!).filter(Boolean)) {
      if (!parseIP(t)) {
        problems.push(`${ANNOTATIONS.localAddresses}: ${JSON.stringify(t)} is not an IP address`);
      } else info.localAddresses.push(t);
    }
  }
  return info;
}
