/** kubectl v1.32 against a lab API server of its own, for the kubectl-driven tests. */
import assert from "node:assert/strict";
import { run, type RunResult } from "../../_support/netns.ts";
import { type ApiServer, type ApiServerOptions, startApiServer } from "../../../lab/apiserver/mod.ts";

export interface Kubectl {
  server: ApiServer;
  dir: string;
  /** Runs kubectl against the server and asserts it succeeded; its stdout. */
  k(...args: string[]): Promise<string>;
  /** Runs kubectl against the server, whatever its exit code. */
  kubectl(...args: string[]): Promise<RunResult>;
}

/**
 * Runs `fn` with a lab API server in a temp dir and kubectl pointed at it (its own kubeconfig and
 * cache dir); stops the server and removes the dir even when `fn` fails.
 */
export async function withKubectl(
  opts: Omit<ApiServerOptions, "stateDir">,
  auth: "token" | "cert",
  fn: (t: Kubectl) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kubectl-test-" });
  const server = await startApiServer({ stateDir: dir, ...opts });
  try {
    const kubeconfig = await server.writeKubeconfig(`${dir}/kubeconfig`, { auth });
    const kubectl = (...args: string[]) =>
      run(["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", `${dir}/cache`, ...args], { check: false });
    const k = async (...args: string[]) => {
      const r = await kubectl(...args);
      assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed: ${r.stderr}`);
      return r.stdout;
    };
    await fn({ server, dir, k, kubectl });
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
