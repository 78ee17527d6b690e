import assert from "node:assert/strict";
import { KubeConfigError, loadKubeConfig } from "../../../core/kube/mod.ts";

const KUBECONFIG = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://192.168.1.99:6443
    certificate-authority-data: ${btoa("not-a-real-ca")}
users:
- name: admin
  user:
    token: secret-token
contexts:
- name: lab
  context: {cluster: lab, user: admin}
current-context: lab
`;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kubecfg-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function authHeader(kc: ReturnType<typeof loadKubeConfig>): Promise<string | undefined> {
  // deno-lint-ignore no-explicit-any
  const o: any = { headers: {} };
  await kc.applyToHTTPSOptions(o);
  return o.headers.Authorization;
}

Deno.test("loadKubeConfig reads the server and token of a kubeconfig file", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/kc`, KUBECONFIG);
    const kc = loadKubeConfig({ kubeconfig: `${dir}/kc`, master: "" });
    assert.equal(kc.getCurrentCluster()?.server, "https://192.168.1.99:6443");
    assert.equal(await authHeader(kc), "Bearer secret-token");
  }));

Deno.test("loadKubeConfig lets --master override the kubeconfig's server and keeps its credentials", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/kc`, KUBECONFIG);
    const kc = loadKubeConfig({ kubeconfig: `${dir}/kc`, master: "https://10.0.0.1:443/" });
    assert.equal(kc.getCurrentCluster()?.server, "https://10.0.0.1:443");
    assert.equal(await authHeader(kc), "Bearer secret-token");
    const bare = loadKubeConfig({ kubeconfig: `${dir}/kc`, master: "10.0.0.2:6443" });
    assert.equal(bare.getCurrentCluster()?.server, "https://10.0.0.2:6443");
  }));

Deno.test("loadKubeConfig with only --master talks to it without credentials", async () => {
  const kc = loadKubeConfig({ kubeconfig: "", master: "http://127.0.0.1:8080" });
  assert.equal(kc.getCurrentCluster()?.server, "http://127.0.0.1:8080");
  assert.equal(
    kc.getCurrentCluster()?.skipTLSVerify,
    true,
    "plain http needs insecure-skip-tls-verify in client-node",
  );
  assert.equal(await authHeader(kc), undefined);
});

Deno.test("loadKubeConfig uses the in-cluster service account when there are no flags", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/token`, "sa-token");
    await Deno.writeTextFile(`${dir}/ca.crt`, "not-a-real-ca");
    const env: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: "172.16.0.1",
      KUBERNETES_SERVICE_PORT: "443",
    };
    const kc = loadKubeConfig({
      kubeconfig: "",
      master: "",
      inCluster: { tokenPath: `${dir}/token`, caPath: `${dir}/ca.crt`, env: (n) => env[n] },
    });
    assert.equal(kc.getCurrentCluster()?.server, "https://172.16.0.1:443");
    assert.equal(kc.getCurrentCluster()?.caFile, `${dir}/ca.crt`);
    assert.equal(await authHeader(kc), "Bearer sa-token");
    const v6 = loadKubeConfig({
      kubeconfig: "",
      master: "",
      inCluster: {
        tokenPath: `${dir}/token`,
        caPath: `${dir}/ca.crt`,
        env: (n) => ({ ...env, KUBERNETES_SERVICE_HOST: "fd00::1" })[n],
      },
    });
    assert.equal(v6.getCurrentCluster()?.server, "https://[fd00::1]:443");
  }));

Deno.test("loadKubeConfig throws a KubeConfigError naming what is missing", () =>
  withDir(async (dir) => {
    assert.throws(
      () =>
        loadKubeConfig({
          kubeconfig: "",
          master: "",
          inCluster: { tokenPath: `${dir}/none`, env: () => undefined },
        }),
      (e: unknown) =>
        e instanceof KubeConfigError && /--kubeconfig or --master/.test(e.message) &&
        /are not set/.test(e.message),
    );
    assert.throws(() => loadKubeConfig({ kubeconfig: `${dir}/missing`, master: "" }), (e: unknown) =>
      e instanceof KubeConfigError && /does not exist/.test(e.message));
    await Deno.writeTextFile(`${dir}/empty`, "apiVersion: v1\nkind: Config\n");
    assert.throws(() =>
      loadKubeConfig({ kubeconfig: `${dir}/empty`, master: "" }), KubeConfigError);
  }));
