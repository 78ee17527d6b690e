/**
 * Where the agent finds the Kubernetes API and its credentials, as kube-router does
 * (`clientcmd.BuildConfigFromFlags(--master, --kubeconfig)`): a kubeconfig file, whose server `--master`
 * overrides; `--master` alone (no credentials); or, with neither, the in-cluster service account
 * (token and CA under /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT).
 */
import { KubeConfig } from "@kubernetes/client-node";

/** No usable Kubernetes client configuration; `message` says what was tried. */
export class KubeConfigError extends Error {
  override readonly name = "KubeConfigError";
}

export interface InClusterSource {
  /** Default /var/run/secrets/kubernetes.io/serviceaccount/token. */
  tokenPath: string;
  /** Default /var/run/secrets/kubernetes.io/serviceaccount/ca.crt. */
  caPath: string;
  /** Environment lookup; default `Deno.env.get`. */
  env: (name: string) => string | undefined;
}

export interface LoadKubeConfigOptions {
  /** Path of a kubeconfig file (--kubeconfig); "" for none. */
  kubeconfig: string;
  /** API server URL (--master); overrides the kubeconfig's server; "" for none. */
  master: string;
  /** Overrides where the in-cluster configuration is read from (tests). */
  inCluster?: Partial<InClusterSource>;
}

const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

function fileExists(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

/** `--master` may be given as host:port; like client-go, assume https when no scheme is given. */
function normalizeMaster(master: string): string {
  return /^[a-z]+:\/\//i.test(master) ? master.replace(/\/+$/, "") : `https://${master.replace(/\/+$/, "")}`;
}

/** Builds the client configuration from the flags; throws {@link KubeConfigError} if there is none. */
export function loadKubeConfig(opts: LoadKubeConfigOptions): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    if (!fileExists(opts.kubeconfig)) {
      throw new KubeConfigError(`kubeconfig file ${opts.kubeconfig} does not exist`);
    }
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (err) {
      throw new KubeConfigError(
        `cannot read kubeconfig ${opts.kubeconfig}: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    const cluster = kc.getCurrentCluster();
    if (!cluster) {
      throw new KubeConfigError(`kubeconfig ${opts.kubeconfig} has no current context with a cluster`);
    }
    if (opts.master) {
      const server = normalizeMaster(opts.master);
      // KubeConfig's clusters are read-only objects: replace the current one with a copy.
      kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server } : c));
    }
    if (!kc.getCurrentCluster()?.server) {
      throw new KubeConfigError(`kubeconfig ${opts.kubeconfig} names no API server`);
    }
    return kc;
  }
  if (opts.master) {
    const server = normalizeMaster(opts.master);
    kc.loadFromClusterAndUser(
      { name: "master", server, skipTLSVerify: server.startsWith("http:") },
      { name: "anonymous" },
    );
    return kc;
  }
  const src: InClusterSource = {
    tokenPath: opts.inCluster?.tokenPath ?? `${SA_DIR}/token`,
    caPath: opts.inCluster?.caPath ?? `${SA_DIR}/ca.crt`,
    env: opts.inCluster?.env ?? ((n) => Deno.env.get(n)),
  };
  const host = src.env("KUBERNETES_SERVICE_HOST");
  const port = src.env("KUBERNETES_SERVICE_PORT");
  if (host && port && fileExists(src.tokenPath)) {
    const h = host.includes(":") ? `[${host}]` : host;
    kc.loadFromClusterAndUser(
      {
        name: "in-cluster",
        server: `https://${h}:${port}`,
        skipTLSVerify: false,
        ...(fileExists(src.caPath) ? { caFile: src.caPath } : {}),
      },
      // client-node's tokenFile provider re-reads the file, so a rotated (projected) token keeps working.
      { name: "in-cluster", authProvider: { name: "tokenFile", config: { tokenFile: src.tokenPath } } },
    );
    return kc;
  }
  throw new KubeConfigError(
    "no Kubernetes API configuration: pass --kubeconfig or --master, or run in a pod " +
      `(KUBERNETES_SERVICE_HOST/PORT ${
        host && port ? "are set" : "are not set"
      }, service account token ${src.tokenPath} ${fileExists(src.tokenPath) ? "exists" : "is missing"})`,
  );
}
