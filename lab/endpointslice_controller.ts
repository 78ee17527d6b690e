/**
 * The lab's EndpointSlice controller: keeps each selector Service's slices equal to
 * `desiredEndpointSlices(service, pods)`, creating, updating and deleting only the slices it manages
 * (label endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io).
 */
import { CoalescingQueue } from "./_queue.ts";
import {
  desiredEndpointSlices,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  matchesSelector,
  sameSliceContent,
  SERVICE_NAME_LABEL,
} from "./endpointslices.ts";
import { type Informer, isNotFound, keyOf, type KObject, type KubeClient } from "./kube_client.ts";
import type { Logger } from "../core/mod.ts";

export class EndpointSliceController {
  readonly #queue: CoalescingQueue;

  constructor(
    private readonly client: KubeClient,
    private readonly services: Informer<KObject>,
    private readonly pods: Informer<KObject>,
    private readonly slices: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("endpointslice sync failed", { service: k, err: e }),
    );
    services.on((_t, s) => this.#queue.add(keyOf(s)));
    pods.on((_t, p, old) => {
      const ns = p.metadata.namespace ?? "default";
      for (const s of services.list()) {
        if ((s.metadata.namespace ?? "default") !== ns) continue;
        const sel = s.spec?.selector as Record<string, string> | undefined;
        if (!sel || Object.keys(sel).length === 0) continue;
        if (matchesSelector(sel, p.metadata.labels) || (old && matchesSelector(sel, old.metadata.labels))) {
          this.#queue.add(keyOf(s));
        }
      }
    });
    slices.on((_t, sl) => {
      const svc = sl.metadata.labels?.[SERVICE_NAME_LABEL];
      if (svc && sl.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY) {
        this.#queue.add(`${sl.metadata.namespace ?? "default"}/${svc}`);
      }
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  async #sync(key: string): Promise<void> {
    const [ns, name] = key.split("/") as [string, string];
    const base = `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`;
    const existing = this.slices.list().filter((s) =>
      (s.metadata.namespace ?? "default") === ns &&
      s.metadata.labels?.[SERVICE_NAME_LABEL] === name &&
      s.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY
    );
    const svc = this.services.get(key);
    const desired = svc && !svc.metadata.deletionTimestamp
      ? desiredEndpointSlices(svc, this.pods.list()) ?? []
      : [];
    const byName = new Map(existing.map((s) => [s.metadata.name, s]));
    for (const want of desired) {
      const have = byName.get(want.metadata.name);
      byName.delete(want.metadata.name);
      if (!have) {
        await this.client.create(base, want);
        this.log.debug("created endpointslice", { slice: `${ns}/${want.metadata.name}` });
      } else if (!sameSliceContent(have, want)) {
        if (have.metadata.resourceVersion) want.metadata.resourceVersion = have.metadata.resourceVersion;
        await this.client.replace(`${base}/${want.metadata.name}`, want);
        this.log.debug("updated endpointslice", { slice: `${ns}/${want.metadata.name}` });
      }
    }
    for (const stale of byName.values()) {
      try {
        await this.client.delete(`${base}/${stale.metadata.name}`);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
  }
}
