/**
 * Unknown fields answered as kube-apiserver answers them, with the real kubectl v1.32: it finds
 * `fieldValidation` in the lab's OpenAPI v3 and sends Strict by default (`--validate=warn|false` for the
 * other modes), on create, apply (a strategic merge patch once the object exists) and replace.
 */
import assert from "node:assert/strict";
import { needs, run } from "../../_support/netns.ts";
import { withKubectl } from "./_kubectl.ts";
import { goValue, openApiV3, unknownFields } from "../../../lab/apiserver/field_validation.ts";
import { resourceInfo } from "../../../lab/apiserver/resources.ts";

const KUBECTL = { tools: ["kubectl", "curl"] };

const DEPLOYMENT = (extra: string) =>
  `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
${extra}`;

Deno.test("unknown fields are found by path, nested in lists and maps, and only Kubernetes' own fields pass", () => {
  // deno-lint-ignore no-explicit-any
  const pod: any = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "p", labels: { "any/key": "x" }, creationTimestamp: null, colour: "red" },
    spec: {
      containers: [
        {
          name: "a",
          image: "i",
          resources: { limits: { cpu: "1" } },
          ports: [{ containerPort: 1, hostIP: "" }],
        },
        {
          name: "b",
          image: "i",
          restartPolicy: "Always",
          imagePullSecret: "x",
          livenessProbe: { httpGet: { port: 1 } },
        },
      ],
      nodeSelector: { "kubernetes.io/os": "linux" },
      volumes: [{ name: "v", hostPath: { path: "/x" }, nfs: { server: "s", path: "/" }, disk: {} }],
      overhead: { memory: "1Mi" },
      foo: { bar: 1 },
    },
    status: { phase: "Pending", podIPs: [{ ip: "10.0.0.1", mask: 24 }] },
  };
  const copy = structuredClone(pod);
  assert.deepEqual(unknownFields(resourceInfo("pods"), copy, true), [
    "metadata.colour",
    "spec.containers[1].imagePullSecret",
    "spec.volumes[0].disk",
    "spec.foo",
    "status.podIPs[0].mask",
  ]);
  assert.deepEqual(unknownFields(resourceInfo("pods"), copy, false), [], "pruning leaves only known fields");
  assert.equal(copy.spec.containers[1]!.restartPolicy, "Always", "a sidecar's restartPolicy is a real field");
  assert.deepEqual(
    unknownFields(resourceInfo("services"), { spec: { ports: [{ port: 1, targetPort: "x" }] } }, false),
    [],
  );
  assert.equal(goValue({ spec: { b: [1, "x"], a: null } }), "map[spec:map[a:<nil> b:[1 x]]]");
});

Deno.test("the OpenAPI v3 index and group documents name fieldValidation on every served kind's PATCH", () => {
  const index = openApiV3("/openapi/v3")!;
  assert.ok(
    index.paths["api/v1"] && index.paths["apis/apps/v1"] && index.paths["apis/rbac.authorization.k8s.io/v1"],
  );
  const apps = openApiV3("/openapi/v3/apis/apps/v1")!;
  const op = apps.paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"].patch;
  assert.deepEqual(op["x-kubernetes-group-version-kind"], {
    group: "apps",
    version: "v1",
    kind: "Deployment",
  });
  assert.equal(op.parameters[0].name, "fieldValidation");
  assert.equal(op.requestBody, undefined, "no request body: kubectl keeps its built-in patch types");
  assert.equal(openApiV3("/openapi/v3/apis/batch/v1"), undefined);
});

Deno.test({
  ...needs(
    "kubectl create, apply and replace with an unknown field get kube-apiserver's answer in each mode",
    KUBECTL,
  ),
  fn: () =>
    withKubectl({}, "token", async ({ k, kubectl, dir, server }) => {
      const bad = `${dir}/bad.yaml`, good = `${dir}/good.yaml`;
      await Deno.writeTextFile(bad, DEPLOYMENT("        bar: 2\n  foo: 1\n"));
      await Deno.writeTextFile(good, DEPLOYMENT(""));

      // Strict (kubectl's default): 400 on create, nothing stored.
      let r = await kubectl("apply", "-f", bad);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr.trim(),
        `Error from server (BadRequest): error when creating "${bad}": Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.foo", unknown field "spec.template.spec.containers[0].bar"`,
      );
      assert.equal((await kubectl("get", "deployment", "web")).code, 1, "nothing was created");
      r = await kubectl("create", "-f", bad, "-v=8");
      assert.match(
        r.stderr,
        /POST https:\/\/[^ ]+\/apis\/apps\/v1\/namespaces\/default\/deployments\?fieldManager=kubectl-create&fieldValidation=Strict/,
      );
      assert.match(
        r.stderr,
        /strict decoding error: unknown field "spec.foo", unknown field "spec.template.spec.containers\[0\].bar"\n/,
      );

      // Warn: created, one Warning per field, the fields dropped.
      r = await kubectl("apply", "-f", bad, "--validate=warn");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /deployment.apps\/web created/);
      assert.deepEqual(r.stderr.trim().split("\n"), [
        'Warning: unknown field "spec.foo"',
        'Warning: unknown field "spec.template.spec.containers[0].bar"',
      ]);
      const stored = JSON.parse(await k("get", "deployment", "web", "-o", "json"));
      assert.equal(stored.spec.foo, undefined);
      assert.equal(stored.spec.template.spec.containers[0].bar, undefined);

      // Strict on an existing object: apply sends a strategic merge patch, refused with 422 on `patch`.
      await k("apply", "-f", good);
      r = await kubectl("apply", "-f", bad, "-v=6");
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /PATCH https:\/\/[^ ]+\/deployments\/web\?fieldManager=kubectl-client-side-apply&fieldValidation=Strict 422/,
      );
      assert.match(
        r.stderr,
        /The request is invalid: patch: Invalid value: "map\[metadata:map\[annotations:map\[kubectl.kubernetes.io\/last-applied-configuration:.*spec:map\[.*foo:1.*\]\]": strict decoding error: unknown field "spec\.[^"]+", unknown field "spec\.[^"]+"/s,
      );

      // replace (PUT): Strict 400; Ignore (--validate=false) silently drops the fields.
      r = await kubectl("replace", "-f", bad);
      assert.match(
        r.stderr,
        /error when replacing .* cannot be handled as a Deployment: strict decoding error: unknown field/,
      );
      r = await kubectl("replace", "-f", bad, "--validate=false");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "", "Ignore says nothing");
      assert.equal(JSON.parse(await k("get", "deployment", "web", "-o", "json")).spec.foo, undefined);

      // kubectl patch sends no directive: kube-apiserver's default, Warn, patches and warns.
      r = await kubectl(
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        '{"spec":{"paused":true,"colour":"red"}}',
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr.trim(), 'Warning: unknown field "spec.colour"');
      const patched = JSON.parse(await k("get", "deployment", "web", "-o", "json"));
      assert.deepEqual([patched.spec.paused, patched.spec.colour], [true, undefined]);
      // A merge patch with Strict: 422 whose value is the patched object, as kube-apiserver's JSON patcher.
      await Deno.writeTextFile(`${dir}/ca.crt`, server.caCertPem);
      const curl = await run([
        "curl",
        "-sS",
        "--cacert",
        `${dir}/ca.crt`,
        "-H",
        `Authorization: Bearer ${server.token}`,
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data",
        '{"spec":{"colour":"red"}}',
        `${server.url}/apis/apps/v1/namespaces/default/deployments/web?fieldValidation=Strict`,
      ]);
      const status = JSON.parse(curl.stdout);
      assert.deepEqual([status.code, status.reason, status.details.causes[0].field], [
        422,
        "Invalid",
        "patch",
      ]);
      assert.match(
        status.message,
        /^ "" is invalid: patch: Invalid value: "\{.*\\"colour\\":\\"red\\".*\}": strict decoding error: unknown field "spec.colour"$/,
      );
    }),
});

Deno.test({
  ...needs(
    "a v1 List's items are validated by the server too, and a kind the lab does not serve is no match",
    KUBECTL,
  ),
  fn: () =>
    withKubectl({}, "token", async ({ kubectl, dir }) => {
      const list = {
        apiVersion: "v1",
        kind: "List",
        items: [
          { apiVersion: "v1", kind: "Namespace", metadata: { name: "x" } },
          {
            apiVersion: "v1",
            kind: "Service",
            metadata: { name: "s", namespace: "x" },
            spec: { ports: [{ port: 80, protocl: "TCP" }] },
          },
        ],
      };
      await Deno.writeTextFile(`${dir}/list.json`, JSON.stringify(list));
      let r = await kubectl("apply", "-f", `${dir}/list.json`);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /namespace\/x created/);
      assert.match(
        r.stderr,
        /Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.ports\[0\].protocl"/,
      );
      await Deno.writeTextFile(`${dir}/cm.yaml`, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
      r = await kubectl("apply", "-f", `${dir}/cm.yaml`);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no matches for kind "ConfigMap" in version "v1"/);
    }),
});

Deno.test({
  ...needs("every manifest in dist/ passes strict field validation without a warning", KUBECTL),
  fn: () =>
    withKubectl({}, "token", async ({ kubectl }) => {
      await kubectl("create", "namespace", "kube-system");
      for await (const e of Deno.readDir(new URL("../../../dist/", import.meta.url))) {
        if (!e.name.endsWith(".yaml")) continue;
        const path = new URL(`../../../dist/${e.name}`, import.meta.url).pathname;
        const r = await kubectl("apply", "-f", path);
        assert.equal(r.code, 0, `${e.name}: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /Warning/, e.name);
        await kubectl("delete", "-f", path, "--wait=false");
      }
    }),
});
