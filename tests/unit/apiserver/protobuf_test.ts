/**
 * The protobuf bodies kubectl v1.32 sends (captured from `kubectl create …` against a recording server),
 * decoded into the JSON objects kube-apiserver would see.
 */
import assert from "node:assert/strict";
import { decodeProtobufObject, isProtobuf } from "../../../lab/apiserver/_protobuf.ts";

/** Base64 of request bodies as kubectl sent them. */
const CAPTURED = {
  service:
    "azhzAAoNCgJ2MRIHU2VydmljZRKMAQofCgN3ZWISABoAIgAqADIAOABCAFoKCgNhcHASA3dlYhJlChsKBzgwLTgwODASA1RD" +
    "UBhQIgcIABCQPxoAKAAKIgoJNDQzLWh0dHBzEgNUQ1AYuwMiCwgBEAAaBWh0dHBzKAASCgoDYXBwEgN3ZWIaACIITm9kZVBv" +
    "cnQ6AEIAUgBaAGAAaAAaAgoAGgAiAA==",
  deployment:
    "azhzAAoVCgdhcHBzL3YxEgpEZXBsb3ltZW50Er0BCh8KA3dlYhIAGgAiACoAMgA4AEIAWgoKA2FwcBIDd2ViEosBCAASDAoK" +
    "CgNhcHASA3dlYhpxChwKABIAGgAiACoAMgA4AEIAWgoKA2FwcBIDd2ViElESMwoFbmdpbngSCm5naW54OjEuMjUqADIKCgAQ" +
    "ABhQIgAqAEIAagByAIABAIgBAJABAKIBABoAMgBCAEoAUgBYAGAAaACCAQCKAQCaAQDCAQAiAgoAKAA4ABoMCAAQABgAIAAo" +
    "ADgAGgAiAA==",
  tokenRequest:
    "azhzAAooChhhdXRoZW50aWNhdGlvbi5rOHMuaW8vdjESDFRva2VuUmVxdWVzdBIwChAKABIAGgAiACoAMgA4AEIAEhYaEQoD" +
    "UG9kEgJ2MRoCcDEiAnUxIKA4GgQKABIAGgAiAA==",
  roleBinding:
    "azhzAAorChxyYmFjLmF1dGhvcml6YXRpb24uazhzLmlvL3YxEgtSb2xlQmluZGluZxKbAQoSCgJyYhIAGgAiACoAMgA4AEIA" +
    "EioKBFVzZXISGXJiYWMuYXV0aG9yaXphdGlvbi5rOHMuaW8aBWFsaWNlIgASLAoOU2VydmljZUFjY291bnQSABoLa3ViZS1y" +
    "b3V0ZXIiC2t1YmUtc3lzdGVtGisKGXJiYWMuYXV0aG9yaXphdGlvbi5rOHMuaW8SC0NsdXN0ZXJSb2xlGgFyGgAiAA==",
};

const bytes = (b64: string) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

Deno.test("kubectl create service nodeport --tcp=80:8080 --tcp=443:https decodes to its Service", () => {
  const body = bytes(CAPTURED.service);
  assert.ok(isProtobuf(body));
  assert.deepEqual(decodeProtobufObject(body), {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", labels: { app: "web" } },
    spec: {
      ports: [
        { name: "80-8080", protocol: "TCP", port: 80, targetPort: 8080 },
        { name: "443-https", protocol: "TCP", port: 443, targetPort: "https" },
      ],
      selector: { app: "web" },
      type: "NodePort",
    },
    status: { loadBalancer: {} },
  });
});

Deno.test("kubectl create deployment --replicas=0 keeps the explicit zero and the pod template", () => {
  const d = decodeProtobufObject(bytes(CAPTURED.deployment))!;
  assert.equal(d.kind, "Deployment");
  assert.equal(d.apiVersion, "apps/v1");
  assert.equal(d.spec.replicas, 0, "a pointer field's zero is a value, not an absence");
  assert.deepEqual(d.spec.selector, { matchLabels: { app: "web" } });
  assert.deepEqual(d.spec.template.metadata, { labels: { app: "web" } });
  assert.deepEqual(d.spec.template.spec.containers, [
    { name: "nginx", image: "nginx:1.25", ports: [{ containerPort: 80 }], resources: {} },
  ]);
  assert.equal(d.metadata?.creationTimestamp, undefined, "a zero timestamp is absent, as in JSON");
});

Deno.test("kubectl create token with a bound pod decodes to its TokenRequest", () => {
  const t = decodeProtobufObject(bytes(CAPTURED.tokenRequest))!;
  assert.equal(t.kind, "TokenRequest");
  assert.equal(t.spec.expirationSeconds, 7200);
  assert.deepEqual(t.spec.boundObjectRef, { kind: "Pod", apiVersion: "v1", name: "p1", uid: "u1" });
});

Deno.test("kubectl create rolebinding decodes subjects and roleRef", () => {
  const rb = decodeProtobufObject(bytes(CAPTURED.roleBinding))!;
  assert.deepEqual(rb.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "r" });
  assert.deepEqual(rb.subjects, [
    { kind: "User", apiGroup: "rbac.authorization.k8s.io", name: "alice" },
    { kind: "ServiceAccount", name: "kube-router", namespace: "kube-system" },
  ]);
});

Deno.test("a body of an unknown kind or with broken bytes is refused, not guessed", () => {
  const body = bytes(CAPTURED.service);
  // The envelope's kind "Service" (at a known offset) changed to "Servixe".
  const text = new TextDecoder().decode(body);
  const i = text.indexOf("Service");
  const other = body.slice();
  other[i + 5] = "x".charCodeAt(0);
  assert.equal(decodeProtobufObject(other), undefined);
  assert.throws(() => decodeProtobufObject(body.subarray(0, body.length - 7)), RangeError);
  assert.ok(!isProtobuf(new TextEncoder().encode('{"kind":"Service"}')));
});
