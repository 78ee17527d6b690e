/**
 * What kube-apiserver's Service registry decides on every write of a Service: its IP families
 * (`ipFamilyPolicy` SingleStack / PreferDualStack / RequireDualStack against the cluster's service
 * CIDRs, one per family, the first being the primary), its cluster IPs (one per family, from that
 * family's CIDR; `None` for headless), its node ports and, for a LoadBalancer Service with
 * `externalTrafficPolicy: Local`, its `healthCheckNodePort`. Validation comes before any allocation,
 * and a failed write gives back whatever it took, so a refused Service never leaks an address or port.
 */
import { ApiError, invalid, type StatusCause } from "./errors.ts";
import { ClusterIpAllocator, type IpFamily, NodePortAllocator, parseIp } from "./_ipalloc.ts";

export type { IpFamily };
import type { KubeObject } from "./types.ts";

export interface ServiceAllocatorOptions {
  /** Service CIDRs, at most one per family; the first is the primary family. Default ["10.96.0.0/12"]. */
  serviceCidrs?: readonly string[];
  /** Node port range, inclusive. Default [30000, 32767]. */
  nodePortRange?: readonly [number, number];
}

const POLICIES = ["SingleStack", "PreferDualStack", "RequireDualStack"];

const needsNodePorts = (spec: KubeObject): boolean =>
  spec.type === "NodePort" || spec.type === "LoadBalancer";
/** kube-apiserver: only a LoadBalancer Service with Local external traffic gets a health check port. */
const needsHealthCheckPort = (spec: KubeObject): boolean =>
  spec.type === "LoadBalancer" && spec.externalTrafficPolicy === "Local";

export class ServiceAllocator {
  readonly #ips = new Map<IpFamily, ClusterIpAllocator>();
  /** Families served, primary first. */
  readonly families: readonly IpFamily[];
  readonly nodePorts: NodePortAllocator;

  constructor(opts: ServiceAllocatorOptions = {}) {
    const cidrs = opts.serviceCidrs?.length ? opts.serviceCidrs : ["10.96.0.0/12"];
    if (cidrs.length > 2) {
      throw new RangeError(`at most two service CIDRs (one per family), got ${cidrs.length}`);
    }
    for (const c of cidrs) {
      const a = new ClusterIpAllocator(c);
      if (this.#ips.has(a.family)) throw new RangeError(`two ${a.family} service CIDRs: ${cidrs.join(",")}`);
      this.#ips.set(a.family, a);
    }
    this.families = [...this.#ips.keys()];
    this.nodePorts = new NodePortAllocator(opts.nodePortRange ?? [30000, 32767]);
  }

  /** The allocator of one family's cluster IPs; undefined for a family the cluster does not serve. */
  clusterIps(family: IpFamily): ClusterIpAllocator | undefined {
    return this.#ips.get(family);
  }

  /** The first address of the primary service CIDR, kept for the `kubernetes` Service. */
  get firstIp(): string {
    return this.#ips.get(this.families[0]!)!.first;
  }

  get dualStack(): boolean {
    return this.families.length > 1;
  }

  /**
   * Keeps what an update leaves out but the stored Service holds (`kubectl apply` and PUTs of a manifest
   * carry no allocations): cluster IPs, IP families and policy, node ports by port and protocol, the
   * health check port.
   */
  carry(obj: KubeObject, old: KubeObject): void {
    const spec = obj.spec ??= {};
    const was = old.spec ?? {};
    if (spec.type === "ExternalName" || was.type === "ExternalName") return;
    if (!spec.clusterIP && !spec.clusterIPs?.length && was.clusterIP) {
      spec.clusterIP = was.clusterIP;
      spec.clusterIPs = was.clusterIPs;
    }
    spec.ipFamilyPolicy ??= was.ipFamilyPolicy;
    if (!spec.ipFamilies?.length && was.ipFamilies) {
      // Downgrading to SingleStack keeps only the primary family.
      spec.ipFamilies = spec.ipFamilyPolicy === "SingleStack" ? was.ipFamilies.slice(0, 1) : was.ipFamilies;
      if (spec.ipFamilyPolicy === "SingleStack" && spec.clusterIPs?.length > 1) {
        spec.clusterIPs = spec.clusterIPs.slice(0, 1);
      }
    }
    if (needsNodePorts(spec)) {
      for (const p of spec.ports ?? []) {
        if (p.nodePort) continue;
        const same = (was.ports ?? []).find((q: KubeObject) =>
          q.port === p.port && (q.protocol ?? "TCP") === (p.protocol ?? "TCP")
        );
        if (same?.nodePort) p.nodePort = same.nodePort;
      }
    }
    if (needsHealthCheckPort(spec) && !spec.healthCheckNodePort && was.healthCheckNodePort) {
      spec.healthCheckNodePort = was.healthCheckNodePort;
    }
  }

  /**
   * Validates and allocates the Service's families, cluster IPs and ports in place (`old`: the stored
   * version on update); throws 422 Invalid with kube-apiserver's causes, or 500 when a range is full.
   */
  allocate(obj: KubeObject, old: KubeObject | undefined, key: string): void {
    const name = obj.metadata?.name ?? "";
    const spec = obj.spec ??= {};
    const was: KubeObject = old?.spec ?? {};
    const causes: StatusCause[] = [];
    // kube-apiserver's dropTypeDependentFields: what the old type needed and the update left as it was
    // goes with the type change (a patch to ClusterIP or to Cluster traffic needs not clear them).
    if (old && !needsNodePorts(spec)) {
      for (const p of spec.ports ?? []) {
        const same = (was.ports ?? []).find((q: KubeObject) => q.nodePort && q.nodePort === p.nodePort);
        if (same) delete p.nodePort;
      }
    }
    if (old && !needsHealthCheckPort(spec) && spec.healthCheckNodePort === was.healthCheckNodePort) {
      delete spec.healthCheckNodePort;
    }
    const plan = spec.type === "ExternalName" ? undefined : this.#planIps(spec, was, key, causes);
    const ports: KubeObject[] = spec.ports ?? [];
    const oldPorts = new Set<number>((was.ports ?? []).map((p: KubeObject) => p.nodePort).filter(Boolean));
    if (needsNodePorts(spec)) {
      const mine = new Set<number>();
      ports.forEach((p, i) => {
        if (!p.nodePort) return;
        const why = oldPorts.has(p.nodePort) ? undefined : this.nodePorts.check(p.nodePort, key);
        if (why || mine.has(p.nodePort)) {
          causes.push({
            field: `spec.ports[${i}].nodePort`,
            message: `Invalid value: ${p.nodePort}: ${why ?? "provided port is already allocated"}`,
          });
        }
        mine.add(p.nodePort);
      });
    } else {
      ports.forEach((p, i) => {
        if (p.nodePort) {
          causes.push({
            field: `spec.ports[${i}].nodePort`,
            reason: "FieldValueForbidden",
            message: `Forbidden: may not be used when \`type\` is '${spec.type}'`,
          });
        }
      });
    }
    const hc = spec.healthCheckNodePort;
    if (hc) {
      if (!needsHealthCheckPort(spec)) {
        causes.push({
          field: "spec.healthCheckNodePort",
          message:
            `Invalid value: ${hc}: may only be set when \`type\` is 'LoadBalancer' and \`externalTrafficPolicy\` is 'Local'`,
        });
      } else if (was.healthCheckNodePort && was.healthCheckNodePort !== hc) {
        causes.push({
          field: "spec.healthCheckNodePort",
          reason: "FieldValueForbidden",
          message: "Forbidden: field is immutable",
        });
      } else if (hc !== was.healthCheckNodePort) {
        const why = this.nodePorts.check(hc, key) ??
          (ports.some((p) => p.nodePort === hc) ? "provided port is already allocated" : undefined);
        if (why) causes.push({ field: "spec.healthCheckNodePort", message: `Invalid value: ${hc}: ${why}` });
      }
    }
    if (causes.length) throw invalid("Service", "", name, causes);

    // Validation passed: take what is new, then give back what is no longer used.
    const taken: Array<() => void> = [];
    try {
      if (plan) {
        if (plan.headless) {
          spec.clusterIP = "None";
          spec.clusterIPs = ["None"];
        } else {
          const ips: string[] = [];
          for (const [i, family] of plan.families.entries()) {
            const a = this.#ips.get(family)!;
            let ip = plan.ips[i];
            if (!ip) {
              ip = a.allocate(key);
              if (!ip) {
                throw new ApiError(500, "InternalError", `failed to allocate a serviceIP: range is full`);
              }
              const got = ip;
              taken.push(() => a.release(got));
            } else if (!(was.clusterIPs ?? []).includes(ip)) {
              a.reserve(ip, key);
              const got = ip;
              taken.push(() => a.release(got));
            }
            ips.push(ip);
          }
          spec.clusterIP = ips[0];
          spec.clusterIPs = ips;
        }
        spec.ipFamilies = plan.families;
        spec.ipFamilyPolicy = plan.policy;
      } else {
        delete spec.clusterIP;
        delete spec.clusterIPs;
        delete spec.ipFamilies;
        delete spec.ipFamilyPolicy;
      }
      const keep = new Set<number>();
      const takePort = (n: number | undefined): number => {
        if (n) {
          if (!oldPorts.has(n) && n !== was.healthCheckNodePort) {
            this.nodePorts.reserve(n, key);
            taken.push(() => this.nodePorts.release(n));
          }
          return n;
        }
        const got = this.nodePorts.allocate(key);
        if (got === undefined) {
          throw new ApiError(500, "InternalError", "failed to allocate a nodePort: range is full");
        }
        taken.push(() => this.nodePorts.release(got));
        return got;
      };
      if (needsNodePorts(spec)) {
        for (const p of ports) keep.add(p.nodePort = takePort(p.nodePort));
      }
      if (needsHealthCheckPort(spec)) keep.add(spec.healthCheckNodePort = takePort(spec.healthCheckNodePort));
      else delete spec.healthCheckNodePort;
      for (const n of [...oldPorts, was.healthCheckNodePort]) {
        if (n && !keep.has(n)) this.nodePorts.release(n);
      }
    } catch (err) {
      for (const undo of taken) undo();
      throw err;
    }
    for (const ip of was.clusterIPs ?? []) {
      if (ip !== "None" && !(spec.clusterIPs ?? []).includes(ip)) this.#release(ip);
    }
  }

  /** Gives back everything a deleted Service held. */
  release(old: KubeObject): void {
    const spec = old.spec ?? {};
    for (const ip of spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : [])) this.#release(ip);
    for (const p of spec.ports ?? []) if (p.nodePort) this.nodePorts.release(p.nodePort);
    if (spec.healthCheckNodePort) this.nodePorts.release(spec.healthCheckNodePort);
  }

  #release(ip: string): void {
    const p = parseIp(ip);
    if (p) this.#ips.get(p.family)?.release(ip);
  }

  /** The families, policy and requested IPs of a non-ExternalName Service, or causes for what is wrong. */
  #planIps(spec: KubeObject, was: KubeObject, key: string, causes: StatusCause[]):
    | { families: IpFamily[]; policy: string; ips: (string | undefined)[]; headless: boolean }
    | undefined {
    const before = causes.length;
    let ips: string[] = Array.isArray(spec.clusterIPs) ? [...spec.clusterIPs] : [];
    if (spec.clusterIP && ips.length === 0) ips = [spec.clusterIP];
    if (spec.clusterIP && ips[0] !== spec.clusterIP) {
      causes.push({
        field: "spec.clusterIPs",
        message: `Invalid value: ${JSON.stringify(ips)}: first value must match \`spec.clusterIP\``,
      });
    }
    const headless = ips[0] === "None";
    if (headless && ips.length > 1) {
      causes.push({
        field: "spec.clusterIPs[1]",
        message: `Invalid value: "${ips[1]}": must be empty when the first value is 'None'`,
      });
    }
    const ipFamilies: (IpFamily | undefined)[] = [];
    if (!headless) {
      ips.forEach((ip, i) => {
        const p = ip ? parseIp(ip) : undefined;
        if (!p) {
          causes.push({
            field: `spec.clusterIPs[${i}]`,
            message: `Invalid value: "${ip}": must be a valid IP`,
          });
        }
        ipFamilies.push(p?.family);
      });
    }
    const requested: string[] = Array.isArray(spec.ipFamilies) ? spec.ipFamilies : [];
    requested.forEach((f, i) => {
      if (f !== "IPv4" && f !== "IPv6") {
        causes.push({
          field: `spec.ipFamilies[${i}]`,
          reason: "FieldValueNotSupported",
          message: `Unsupported value: "${f}": supported values: "IPv4", "IPv6"`,
        });
      } else if (ipFamilies[i] && ipFamilies[i] !== f) {
        causes.push({
          field: "spec.clusterIPs",
          message: `Invalid value: ${
            JSON.stringify(ips)
          }: expected an ${f} value as indicated by \`ipFamilies[${i}]\``,
        });
      }
    });
    if (new Set(requested).size !== requested.length || new Set(ipFamilies).size !== ipFamilies.length) {
      causes.push({ field: "spec.ipFamilies", reason: "FieldValueDuplicate", message: "Duplicate value" });
    }
    let families = (requested.length ? requested : ipFamilies) as IpFamily[];
    const policy: string = spec.ipFamilyPolicy ??
      (families.length > 1 ? "" : "SingleStack");
    if (!POLICIES.includes(policy)) {
      causes.push({
        field: "spec.ipFamilyPolicy",
        reason: policy ? "FieldValueNotSupported" : "FieldValueRequired",
        message: policy
          ? `Unsupported value: "${policy}": supported values: "PreferDualStack", "RequireDualStack", "SingleStack"`
          : "Required value: must be RequireDualStack or PreferDualStack when multiple IP families are specified",
      });
    }
    if (families.length === 0) families = [was.ipFamilies?.[0] ?? this.families[0]!];
    if (policy === "SingleStack" && families.length > 1) {
      causes.push({
        field: "spec.ipFamilies",
        message: `Invalid value: ${
          JSON.stringify(families)
        }: when spec.ipFamilyPolicy is SingleStack, at most one family`,
      });
    }
    if (policy === "RequireDualStack" && !this.dualStack) {
      causes.push({
        field: "spec.ipFamilyPolicy",
        message: `Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`,
      });
    }
    families.forEach((f, i) => {
      if (!this.#ips.has(f) && !(headless && policy === "PreferDualStack")) {
        causes.push({
          field: `spec.ipFamilies[${i}]`,
          message: `Invalid value: "${f}": not configured on this cluster`,
        });
      }
    });
    if (policy !== "SingleStack" && families.length === 1 && this.dualStack) {
      families = [families[0]!, families[0] === "IPv4" ? "IPv6" : "IPv4"];
    }
    if (was.ipFamilies?.[0] && was.type !== "ExternalName" && families[0] !== was.ipFamilies[0]) {
      causes.push({
        field: "spec.ipFamilies[0]",
        reason: "FieldValueForbidden",
        message: "Forbidden: primary ipFamily can not be changed",
      });
    }
    const wasIps: string[] = was.type === "ExternalName" ? [] : was.clusterIPs ?? [];
    if (!headless) {
      ips.forEach((ip, i) => {
        if (!ip || causes.length > before) return;
        const had = wasIps[i];
        if (had && had !== "None" && had !== ip) {
          causes.push({
            field: `spec.clusterIPs[${i}]`,
            message: `Invalid value: ${JSON.stringify(ips)}: may not change once set`,
          });
          return;
        }
        const why = had === ip ? undefined : this.#ips.get(families[i] ?? "IPv4")?.check(ip, key) ??
          (this.#ips.has(families[i] ?? "IPv4") ? undefined : "not configured on this cluster");
        if (why) {
          causes.push({
            field: "spec.clusterIPs",
            message: `Invalid value: ${JSON.stringify(ips)}: failed to allocate IP ${ip}: ${why}`,
          });
        }
      });
    } else if (wasIps[0] && wasIps[0] !== "None") {
      causes.push({
        field: "spec.clusterIPs[0]",
        message: `Invalid value: ["None"]: may not change once set`,
      });
    }
    if (causes.length > before) return undefined;
    // Headless with PreferDualStack on a single-stack cluster keeps only the families served.
    if (headless) families = families.filter((f) => this.#ips.has(f) || policy !== "PreferDualStack");
    return { families, policy, ips: headless ? [] : families.map((_, i) => ips[i]), headless };
  }
}
