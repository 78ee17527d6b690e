/**
 * healthCheckNodePort servers: for every LoadBalancer Service with externalTrafficPolicy Local, an HTTP
 * server on its healthCheckNodePort tells the cloud load balancer whether this node has a local endpoint
 * (200) or not (503), with the JSON body kube-proxy serves:
 *   {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 1, "serviceProxyHealthy": true}
 * A port that cannot be opened (already in use) is logged once and retried at the next sync.
 */
import type { Logger } from "../../core/mod.ts";

export interface HealthCheckTarget {
  namespace: string;
  name: string;
  /** Ready endpoints on this node. */
  localEndpoints: number;
}

interface Server {
  key: string;
  server: Deno.HttpServer;
  target: HealthCheckTarget;
}

/** The body and status for one request, as kube-proxy answers. */
export function healthResponse(
  t: HealthCheckTarget,
  proxyHealthy: boolean,
): { status: number; body: string } {
  const ok = t.localEndpoints > 0 && proxyHealthy;
  const body = JSON.stringify({
    service: { namespace: t.namespace, name: t.name },
    localEndpoints: t.localEndpoints,
    serviceProxyHealthy: proxyHealthy,
  });
  return { status: ok ? 200 : 503, body };
}

/** How a backend serves healthCheckNodePorts; both proxy backends take these in their deps. */
export interface HealthCheckOptions {
  /** Where healthCheckNodePort servers listen (default all IPv4 addresses). */
  healthHostname?: string;
  /** Whether to serve healthCheckNodePorts at all (unit tests turn it off). */
  serveHealthChecks?: boolean;
}

/** The healthCheckNodePort servers a backend runs, or undefined when `serveHealthChecks` is false. */
export function healthCheckServers(
  log: Logger,
  opts: HealthCheckOptions,
  healthy: () => boolean,
): HealthCheckServers | undefined {
  if (opts.serveHealthChecks === false) return undefined;
  return new HealthCheckServers(log.with({ component: "healthcheck" }), {
    ...(opts.healthHostname ? { hostname: opts.healthHostname } : {}),
    healthy,
  });
}

export class HealthCheckServers {
  readonly #servers = new Map<number, Server>();
  readonly #failed = new Map<number, string>();
  readonly #log: Logger;
  readonly #hostname: string;
  #healthy = () => true;

  constructor(log: Logger, opts: { hostname?: string; healthy?: () => boolean } = {}) {
    this.#log = log;
    this.#hostname = opts.hostname ?? "0.0.0.0";
    if (opts.healthy) this.#healthy = opts.healthy;
  }

  /** The ports currently served. */
  ports(): number[] {
    return [...this.#servers.keys()].sort((a, b) => a - b);
  }

  /** Makes the set of servers match `wanted` (healthCheckNodePort -> service key and counts). */
  async sync(wanted: ReadonlyMap<number, HealthCheckTarget & { key: string }>): Promise<void> {
    for (const [port, s] of this.#servers) {
      if (wanted.get(port)?.key !== s.key) {
        this.#servers.delete(port);
        await s.server.shutdown();
      }
    }
    for (const [port, t] of wanted) {
      const existing = this.#servers.get(port);
      if (existing) {
        existing.target = t;
        continue;
      }
      const entry: Server = { key: t.key, target: t, server: undefined as unknown as Deno.HttpServer };
      try {
        entry.server = Deno.serve({
          port,
          hostname: this.#hostname,
          onListen: () => {},
        }, () => {
          const r = healthResponse(entry.target, this.#healthy());
          return new Response(r.body, {
            status: r.status,
            headers: {
              "content-type": "application/json",
              "x-content-type-options": "nosniff",
              "x-load-balancing-endpoint-weight": String(entry.target.localEndpoints),
            },
          });
        });
        this.#servers.set(port, entry);
        this.#failed.delete(port);
      } catch (err) {
        if (this.#failed.get(port) !== t.key) {
          this.#log.error("cannot serve healthCheckNodePort", { service: t.key, port, err });
          this.#failed.set(port, t.key);
        }
      }
    }
  }

  async close(): Promise<void> {
    const all = [...this.#servers.values()];
    this.#servers.clear();
    await Promise.all(all.map((s) => s.server.shutdown()));
  }
}
