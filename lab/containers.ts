/**
 * What the lab kubelet runs for each container of a pod, decided from the container's image, command and
 * args (pure functions, unit-tested). The lab has no container runtime: it knows a few images
 * ({@link KNOWN_IMAGES}, any registry, tag or digest) and plays them:
 *
 * - `kube-router` (any repository named `…kube-router…`) is the agent from this checkout (or `lab up
 *   --agent-bin`), with the container's args, in the node's namespace for a hostNetwork pod: the
 *   DaemonSet path;
 * - `agnhost` and `netexec` are played by lab/netexec.ts, honouring agnhost's arguments per container:
 *   `netexec --http-port=N --udp-port=N` (defaults 8080 and 8081) and
 *   `serve-hostname [--tcp|--udp] [--http=false] [--port=N]` (default 9376, HTTP), as Kubernetes' own e2e
 *   tests run them; without agnhost arguments the container's declared ports are served (agnhost's
 *   netexec defaults when a single container declares none);
 * - `nginx` and `httpd` serve HTTP (netexec's answers) on their declared ports, port 80 when none;
 * - `busybox` and `pause` serve their declared ports, and with none hold no port at all (a sleeping process).
 *
 * Any other image is one the lab cannot run: the kubelet reports it as a real one reports an image it
 * cannot pull (ErrImagePull, then ImagePullBackOff, with events), and never plays it silently.
 *
 * Each container is its own process with its own ports, log file and restart count.
 */
import type { KObject } from "./kube_client.ts";

export interface ContainerSpec {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  ports?: Array<{ name?: string; containerPort: number; protocol?: string; hostPort?: number }>;
  env?: Array<{
    name: string;
    value?: string;
    valueFrom?: { fieldRef?: { fieldPath: string }; [k: string]: unknown };
  }>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
}

export interface Probe {
  httpGet?: { path?: string; port: number | string; host?: string; scheme?: string };
  tcpSocket?: { port: number | string };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
}

/** How the lab plays one container. */
export type ContainerProgram =
  | { kind: "netexec"; ports: string[] }
  | { kind: "agent"; args: string[] }
  | { kind: "idle" }
  | { kind: "unknown-image"; image: string };

/** The images the lab plays (besides kube-router), by repository name, and how. */
export const KNOWN_IMAGES: Readonly<Record<string, "agnhost" | "http" | "idle">> = {
  agnhost: "agnhost",
  netexec: "agnhost",
  nginx: "http",
  httpd: "http",
  busybox: "idle",
  pause: "idle",
};

/** The repository's last path element of an image reference: `registry.k8s.io/pause:3.10` -> `pause`. */
export function imageName(image: string): string {
  const repo = image.split("@")[0]!.replace(/:[^/:]*$/, "");
  return repo.slice(repo.lastIndexOf("/") + 1);
}

/** Whether the lab can run this image (kube-router or one of {@link KNOWN_IMAGES}). */
export function isKnownImage(image: string | undefined): boolean {
  return image === undefined || isAgentImage(image) || Object.hasOwn(KNOWN_IMAGES, imageName(image));
}

/** Is this image the agent (the kube-router image, whatever registry or tag)? */
export function isAgentImage(image: string | undefined): boolean {
  const repo = (image ?? "").split("@")[0]!.replace(/:[^/:]*$/, "");
  return /(^|\/)kube-router[^/]*$/.test(repo);
}

/** Value of `--name=V` or `--name V` in `argv`; `true` for a bare boolean `--name`. */
export function flagValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === `--${name}` || a === `-${name}`) {
      const next = argv[i + 1];
      return next !== undefined && !next.startsWith("-") ? next : "true";
    }
    for (const p of [`--${name}=`, `-${name}=`]) if (a.startsWith(p)) return a.slice(p.length);
  }
  return undefined;
}

function port(v: string | undefined, dflt: number): number {
  const n = Number(v ?? dflt);
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : dflt;
}

const truthy = (v: string | undefined) => v !== undefined && v !== "false" && v !== "0";

/**
 * The netexec port specs (`tcp:N` HTTP, `tcpraw:N` hostname-and-close, `udp:N`) for one container.
 * `only`: the pod has a single container (then agnhost's defaults apply when nothing is declared).
 */
export function netexecPorts(c: ContainerSpec, only: boolean): string[] {
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  if (argv.some((a) => a === "netexec" || a.endsWith("/netexec"))) {
    const out = [`tcp:${port(flagValue(argv, "http-port"), 8080)}`];
    const udp = port(flagValue(argv, "udp-port"), 8081);
    if (udp > 0) out.push(`udp:${udp}`);
    return out;
  }
  if (argv.includes("serve-hostname")) {
    const p = port(flagValue(argv, "port"), 9376);
    if (truthy(flagValue(argv, "udp"))) return [`udp:${p}`];
    const http = flagValue(argv, "http");
    if (truthy(flagValue(argv, "tcp")) && http !== undefined && !truthy(http)) return [`tcpraw:${p}`];
    return [`tcp:${p}`];
  }
  const out: string[] = [];
  for (const p of c.ports ?? []) {
    const proto = (p.protocol ?? "TCP").toUpperCase();
    if (proto === "TCP" || proto === "UDP") out.push(`${proto.toLowerCase()}:${p.containerPort}`);
  }
  return out.length || !only ? [...new Set(out)] : ["tcp:8080", "udp:8081"];
}

/** The program for container `c` of `pod`. */
export function containerProgram(pod: KObject, c: ContainerSpec): ContainerProgram {
  if (isAgentImage(c.image)) {
    // The image's entrypoint is the agent; a command naming it (or nothing) leaves only flags.
    const cmd = c.command ?? [];
    const rest = cmd.length && /(^|\/)kube-router$/.test(cmd[0]!) ? cmd.slice(1) : cmd;
    return { kind: "agent", args: [...rest, ...(c.args ?? [])] };
  }
  if (!isKnownImage(c.image)) return { kind: "unknown-image", image: c.image! };
  const containers = (pod.spec?.containers ?? []) as ContainerSpec[];
  const role = c.image === undefined ? "agnhost" : KNOWN_IMAGES[imageName(c.image)];
  if (role === "agnhost") return { kind: "netexec", ports: netexecPorts(c, containers.length === 1) };
  const declared = netexecPorts({ name: c.name, ...(c.ports ? { ports: c.ports } : {}) }, false);
  if (declared.length) return { kind: "netexec", ports: declared };
  return role === "http" ? { kind: "netexec", ports: ["tcp:80"] } : { kind: "idle" };
}

/** Values of the downward API's fieldRefs a container's env can name. */
export function fieldRefValue(pod: KObject, fieldPath: string): string | undefined {
  const m = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(fieldPath);
  if (m) {
    return (pod.metadata[m[1] as "labels" | "annotations"] as Record<string, string> | undefined)?.[m[2]!];
  }
  switch (fieldPath) {
    case "metadata.name":
      return pod.metadata.name;
    case "metadata.namespace":
      return pod.metadata.namespace ?? "default";
    case "metadata.uid":
      return pod.metadata.uid;
    case "spec.nodeName":
      return pod.spec?.nodeName as string | undefined;
    case "spec.serviceAccountName":
      return (pod.spec?.serviceAccountName as string | undefined) ?? "default";
    case "status.podIP":
      return pod.status?.podIP as string | undefined;
    case "status.hostIP":
      return pod.status?.hostIP as string | undefined;
  }
  return undefined;
}

/**
 * The container's environment: `base` (KUBERNETES_SERVICE_HOST/PORT…), then its own `env` entries in order,
 * `$(VAR)` references expanded as Kubernetes does. Entries it cannot resolve (secretKeyRef, configMapKeyRef,
 * unknown fieldRefs) are left out and listed in `problems` for the pod's events.
 */
export function containerEnv(
  pod: KObject,
  c: ContainerSpec,
  base: Record<string, string>,
  overrides: { podIP?: string; hostIP?: string } = {},
): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = { ...base };
  const problems: string[] = [];
  const expand = (v: string) => v.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, n) => env[n] ?? all);
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = expand(e.value);
    else if (e.valueFrom?.fieldRef) {
      const path = e.valueFrom.fieldRef.fieldPath;
      const v = path === "status.podIP" && overrides.podIP
        ? overrides.podIP
        : path === "status.hostIP" && overrides.hostIP
        ? overrides.hostIP
        : fieldRefValue(pod, path);
      if (v !== undefined) env[e.name] = v;
      else problems.push(`env ${e.name}: fieldRef ${path} is not supported by the lab kubelet`);
    } else if (e.valueFrom) {
      problems.push(
        `env ${e.name}: ${Object.keys(e.valueFrom).join(",")} is not supported by the lab kubelet`,
      );
    } else env[e.name] = "";
  }
  return { env, problems };
}
