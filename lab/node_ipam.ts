/**
 * Node CIDR allocation, as kube-controller-manager `--allocate-node-cidrs --cluster-cidr=10.1.0.0/16` does:
 * every Node without spec.podCIDR gets a /24 written to spec.podCIDR and spec.podCIDRs.
 * Equivalent to: `kubectl patch node kube-node1 -p '{"spec":{"podCIDR":"10.1.1.0/24","podCIDRs":["10.1.1.0/24"]}}'`.
 */
import { CoalescingQueue } from "./_queue.ts";
import type { Informer, KObject, KubeClient } from "./kube_client.ts";
import { allocatePodCidr } from "./topology.ts";
import type { Logger } from "../core/mod.ts";

export class NodeIpamController {
  readonly #queue: CoalescingQueue;
  /** CIDRs handed out but maybe not yet visible in the informer. */
  readonly #pending = new Map<string, string>();

  constructor(
    private readonly client: KubeClient,
    private readonly nodes: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("node CIDR allocation failed", { node: k, err: e }),
    );
    nodes.on((type, n) => {
      if (type !== "DELETED" && !n.spec?.podCIDR) this.#queue.add(n.metadata.name);
      if (type === "DELETED") this.#pending.delete(n.metadata.name);
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  async #sync(name: string): Promise<void> {
    const node = this.nodes.get(name);
    if (!node || node.spec?.podCIDR) return;
    const taken = new Set<string>();
    for (const n of this.nodes.list()) {
      if (n.spec?.podCIDR && n.metadata.name !== name) taken.add(n.spec.podCIDR);
    }
    for (const [n, c] of this.#pending) if (n !== name) taken.add(c);
    const cidr = this.#pending.get(name) ?? allocatePodCidr(name, taken);
    if (!cidr) {
      this.log.error("cluster CIDR exhausted, node gets no pod CIDR", { node: name });
      return;
    }
    this.#pending.set(name, cidr);
    await this.client.mergePatch(`/api/v1/nodes/${name}`, { spec: { podCIDR: cidr, podCIDRs: [cidr] } });
    this.log.info("allocated pod CIDR", { node: name, cidr });
  }
}
