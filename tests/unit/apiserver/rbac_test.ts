// deno-lint-ignore-file no-explicit-any
/**
 * Service-account tokens and RBAC on the lab API server: tokens minted by the server (TokenRequest) are
 * accepted as their account, and every request of such a user is judged by the RBAC rules bound to it,
 * with kube-apiserver's 403 Status when refused. The admin credentials stay all-powerful.
 */
import assert from "node:assert/strict";
import { requestInfo, ruleAllows, startApiServer, TokenIssuer } from "../../../lab/apiserver/mod.ts";

const info = (method: string, path: string) => {
  const u = new URL(path, "https://x");
  return requestInfo(method, u.pathname, u.searchParams);
};

Deno.test("RBAC rules match verbs, groups, resources, subresources, names and paths as kube's RuleAllows", () => {
  const podsRead = { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] };
  assert.ok(ruleAllows(podsRead, info("GET", "/api/v1/pods")));
  assert.ok(ruleAllows(podsRead, info("GET", "/api/v1/pods?watch=true")), "watch is its own verb");
  assert.ok(ruleAllows(podsRead, info("GET", "/api/v1/namespaces/a/pods/x")));
  assert.ok(!ruleAllows(podsRead, info("DELETE", "/api/v1/namespaces/a/pods/x")));
  assert.ok(
    !ruleAllows(podsRead, info("GET", "/api/v1/namespaces/a/pods/x/status")),
    "a subresource is not the resource",
  );
  assert.ok(!ruleAllows(podsRead, info("GET", "/apis/apps/v1/deployments")), "another group");
  const nodeStatus = { apiGroups: [""], resources: ["nodes/status"], verbs: ["patch"] };
  assert.ok(ruleAllows(nodeStatus, info("PATCH", "/api/v1/nodes/n1/status")));
  assert.ok(!ruleAllows(nodeStatus, info("PATCH", "/api/v1/nodes/n1")));
  const anyScale = { apiGroups: ["apps"], resources: ["*/scale"], verbs: ["update", "patch"] };
  assert.ok(ruleAllows(anyScale, info("PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale")));
  assert.ok(!ruleAllows(anyScale, info("PATCH", "/apis/apps/v1/namespaces/a/deployments/web")));
  const named = { apiGroups: [""], resources: ["services"], resourceNames: ["web"], verbs: ["get", "list"] };
  assert.ok(ruleAllows(named, info("GET", "/api/v1/namespaces/a/services/web")));
  assert.ok(!ruleAllows(named, info("GET", "/api/v1/namespaces/a/services/db")));
  assert.ok(!ruleAllows(named, info("GET", "/api/v1/namespaces/a/services")), "a list names nothing");
  const all = { apiGroups: ["*"], resources: ["*"], verbs: ["*"] };
  assert.ok(ruleAllows(all, info("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles")));
  assert.ok(!ruleAllows(all, info("GET", "/healthz")), "resource rules never allow a path");
  const urls = { nonResourceURLs: ["/healthz", "/apis/*"], verbs: ["get"] };
  assert.ok(ruleAllows(urls, info("GET", "/healthz")));
  assert.ok(ruleAllows(urls, info("GET", "/apis/apps/v1")));
  assert.ok(!ruleAllows(urls, info("GET", "/version")));
  assert.ok(!ruleAllows(urls, info("POST", "/healthz")));
});

Deno.test("service-account tokens are signed, expire, name their account and survive a restart of the key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tokens-" });
  try {
    const issuer = await TokenIssuer.load(dir);
    const { token, claims } = await issuer.mint({ namespace: "kube-system", name: "kube-router", uid: "u1" });
    assert.equal(claims.sub, "system:serviceaccount:kube-system:kube-router");
    assert.equal(claims.exp - claims.iat, 3600);
    assert.deepEqual((await issuer.verify(token))?.["kubernetes.io"].serviceaccount, {
      name: "kube-router",
      uid: "u1",
    });
    const again = await TokenIssuer.load(dir);
    assert.ok(await again.verify(token), "the key is kept in the state directory");
    assert.equal(await issuer.verify(token, undefined, Date.now() + 3601_000), undefined, "expired");
    const [h, b, s] = token.split(".");
    const forged = JSON.parse(atob(b!.replace(/-/g, "+").replace(/_/g, "/")));
    forged["kubernetes.io"].namespace = "default";
    const body = btoa(JSON.stringify(forged)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    assert.equal(await again.verify(`${h}.${body}.${s}`), undefined, "a changed payload fails the signature");
    const other = await TokenIssuer.load(await Deno.makeTempDir({ dir }));
    assert.equal(await other.verify(token), undefined, "another server's key");
    const { token: foreign } = await issuer.mint({
      namespace: "a",
      name: "b",
      uid: "c",
      audiences: ["vault"],
    });
    assert.equal(await issuer.verify(foreign), undefined, "a token for another audience");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the API server enforces RBAC for service-account tokens with kube-apiserver's 403, and admin stays all-powerful", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rbac-" });
  const server = await startApiServer({ stateDir: dir, serviceCidr: "172.16.0.0/16" });
  const client = Deno.createHttpClient({ caCerts: [server.caCertPem] });
  const call = async (
    token: string,
    method: string,
    path: string,
    body?: unknown,
    ct = "application/json",
  ) => {
    const res = await fetch(server.url + path, {
      method,
      client,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": ct } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined } as { status: number; body: any };
  };
  const admin = (m: string, p: string, b?: unknown) => call(server.token, m, p, b);
  try {
    assert.equal(
      (await admin("POST", "/api/v1/namespaces/kube-system/serviceaccounts", {
        metadata: { name: "kube-router" },
      })).status,
      201,
    );
    const tr = await admin("POST", "/api/v1/namespaces/kube-system/serviceaccounts/kube-router/token", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { expirationSeconds: 7200 },
    });
    assert.equal(tr.status, 201);
    assert.equal(tr.body.kind, "TokenRequest");
    const token: string = tr.body.status.token;
    assert.ok(Date.parse(tr.body.status.expirationTimestamp) > Date.now() + 7000_000);
    const sa = (m: string, p: string, b?: unknown, ct?: string) => call(token, m, p, b, ct);

    const refused = await sa("GET", "/api/v1/pods");
    assert.equal(refused.status, 403);
    assert.deepEqual(refused.body, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message:
        `pods is forbidden: User "system:serviceaccount:kube-system:kube-router" cannot list resource "pods" in API group "" at the cluster scope`,
      reason: "Forbidden",
      details: { group: "", kind: "pods" },
      code: 403,
    });
    assert.equal((await sa("GET", "/api")).status, 200, "discovery is open to every authenticated user");
    assert.equal((await sa("GET", "/apis/apps/v1")).status, 200);
    assert.equal((await sa("GET", "/version")).status, 200);

    assert.equal(
      (await admin("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
        metadata: { name: "kube-router" },
        rules: [
          { apiGroups: [""], resources: ["pods", "services", "nodes"], verbs: ["get", "list", "watch"] },
          { apiGroups: [""], resources: ["nodes/status"], verbs: ["patch"] },
        ],
      })).status,
      201,
    );
    const binding = {
      metadata: { name: "kube-router" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "kube-router" },
      subjects: [{ kind: "ServiceAccount", name: "kube-router", namespace: "kube-system" }],
    };
    assert.equal(
      (await admin("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)).status,
      201,
    );
    assert.equal((await sa("GET", "/api/v1/pods")).status, 200);
    assert.equal((await sa("GET", "/api/v1/pods?watch=true&timeoutSeconds=0")).status, 200);
    await admin("POST", "/api/v1/nodes", { metadata: { name: "n1" } });
    const merge = "application/merge-patch+json";
    assert.equal(
      (await sa("PATCH", "/api/v1/nodes/n1/status", { status: { phase: "x" } }, merge)).status,
      200,
    );
    const nodePatch = await sa("PATCH", "/api/v1/nodes/n1", { metadata: { labels: { a: "b" } } }, merge);
    assert.equal(nodePatch.status, 403);
    assert.equal(
      nodePatch.body.message,
      `nodes "n1" is forbidden: User "system:serviceaccount:kube-system:kube-router" cannot patch resource "nodes" in API group "" at the cluster scope`,
    );
    const del = await sa("DELETE", "/api/v1/namespaces/default/services/kubernetes");
    assert.equal(del.status, 403);
    assert.match(
      del.body.message,
      /cannot delete resource "services" in API group "" in the namespace "default"$/,
    );
    const np = await sa("GET", "/apis/networking.k8s.io/v1/networkpolicies");
    assert.match(
      np.body.message,
      /^networkpolicies.networking.k8s.io is forbidden: .* in API group "networking.k8s.io" at the cluster scope$/,
    );

    // A RoleBinding grants within its namespace only; a ServiceAccount subject defaults to it.
    await admin("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {
      metadata: { name: "np-reader" },
      rules: [{ apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ["list"] }],
    });
    await admin("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", {
      metadata: { name: "np-reader" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "np-reader" },
      subjects: [{ kind: "ServiceAccount", name: "kube-router", namespace: "kube-system" }],
    });
    assert.equal(
      (await sa("GET", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies")).status,
      200,
    );
    assert.equal(
      (await sa("GET", "/apis/networking.k8s.io/v1/namespaces/kube-system/networkpolicies")).status,
      403,
    );

    // Bindings are immutable in their roleRef; a binding to a missing role says so in the refusal.
    const changed = await admin("PUT", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kube-router", {
      ...binding,
      roleRef: { ...binding.roleRef, name: "cluster-admin" },
    });
    assert.equal(changed.status, 422);
    assert.match(changed.body.message, /cannot change roleRef/);
    assert.equal(
      (await admin("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterroles/kube-router")).status,
      200,
    );
    const missing = await sa("GET", "/api/v1/pods");
    assert.equal(missing.status, 403);
    assert.match(
      missing.body.message,
      /: RBAC: \[clusterrole.rbac.authorization.k8s.io "kube-router" not found\]$/,
    );

    // The admin token is in system:masters.
    assert.equal(
      (await admin("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin")).status,
      200,
    );
    assert.equal((await admin("GET", "/api/v1/pods")).status, 200, "system:masters needs no binding");

    // A deleted (or recreated) account's tokens stop working.
    await admin("DELETE", "/api/v1/namespaces/kube-system/serviceaccounts/kube-router");
    assert.equal((await sa("GET", "/api")).status, 401);
    await admin("POST", "/api/v1/namespaces/kube-system/serviceaccounts", {
      metadata: { name: "kube-router" },
    });
    assert.equal((await sa("GET", "/api")).status, 401, "a new account of the same name has another uid");

    // Tokens bound to a pod die with it.
    await admin("POST", "/api/v1/namespaces/default/pods", {
      metadata: { name: "p" },
      spec: { containers: [{ name: "c", image: "x" }] },
    });
    const podToken = await server.mintServiceAccountToken("default", "default", {
      boundObjectRef: { kind: "Pod", name: "p" },
    });
    assert.equal((await call(podToken.token, "GET", "/api")).status, 200);
    await admin("DELETE", "/api/v1/namespaces/default/pods/p");
    assert.equal((await call(podToken.token, "GET", "/api")).status, 401);
    const short = await admin("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", {
      spec: { expirationSeconds: 60 },
    });
    assert.equal(short.status, 422, "at least 10 minutes, as kube-apiserver");
  } finally {
    client.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
