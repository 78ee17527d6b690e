/**
 * The agent's HTTP endpoints: /healthz (200 while every enabled module is on time, else 500 with a JSON
 * body naming the late module) and Prometheus /metrics. When --metrics-port equals --health-port both
 * are served by one listener, as kube-router allows.
 */
import type { Health } from "./health.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

export interface HttpOptions {
  health: Health;
  metrics: Metrics;
  log: Logger;
  healthAddr: string;
  healthPort: number;
  metricsAddr: string;
  metricsPort: number;
  metricsPath: string;
}

export interface HttpServers {
  /** Ports actually bound (useful when 0 was not meant as "disabled" in tests). */
  healthPort: number | undefined;
  metricsPort: number | undefined;
  shutdown(): Promise<void>;
}

type Route = (req: Request) => Response | Promise<Response> | undefined;

function healthRoute(health: Health): Route {
  return (req) => {
    const path = new URL(req.url).pathname;
    if (path !== "/healthz" && path !== "/livez" && path !== "/readyz") return undefined;
    const report = health.report();
    return Response.json(report, { status: report.healthy ? 200 : 500 });
  };
}

function metricsRoute(metrics: Metrics, path: string): Route {
  return (req) => {
    if (new URL(req.url).pathname !== path) return undefined;
    // Collectors first (the proxy's per-Service counters are read from the kernel on a scrape).
    return metrics.collect().then(() =>
      new Response(metrics.stream(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      })
    );
  };
}

function serve(addr: string, port: number, routes: Route[], log: Logger): Deno.HttpServer<Deno.NetAddr> {
  const hostname = addr === "" ? "0.0.0.0" : addr;
  return Deno.serve({
    hostname,
    port,
    onListen: () => {},
    onError: (err) => {
      log.error("http handler failed", { err });
      return new Response("internal error\n", { status: 500 });
    },
  }, (req) => {
    for (const r of routes) {
      const res = r(req);
      if (res) return res;
    }
    return new Response("not found\n", { status: 404 });
  });
}

/** Starts the health and metrics listeners; a port of 0 disables that endpoint. */
export function startHttp(o: HttpOptions): HttpServers {
  const servers: Deno.HttpServer<Deno.NetAddr>[] = [];
  let healthPort: number | undefined;
  let metricsPort: number | undefined;
  const samePort = o.healthPort !== 0 && o.healthPort === o.metricsPort && o.healthAddr === o.metricsAddr;
  if (o.healthPort !== 0) {
    const routes = [healthRoute(o.health)];
    if (samePort) routes.push(metricsRoute(o.metrics, o.metricsPath));
    const s = serve(o.healthAddr, o.healthPort, routes, o.log);
    servers.push(s);
    healthPort = s.addr.port;
    if (samePort) metricsPort = healthPort;
  }
  if (o.metricsPort !== 0 && !samePort) {
    const s = serve(o.metricsAddr, o.metricsPort, [metricsRoute(o.metrics, o.metricsPath)], o.log);
    servers.push(s);
    metricsPort = s.addr.port;
  }
  return {
    healthPort,
    metricsPort,
    async shutdown() {
      await Promise.all(servers.map((s) => s.shutdown()));
    },
  };
}
