/** The lab's REST client and informer against the lab API server on loopback (no root). */
import assert from "node:assert/strict";
import { startApiServer } from "../../../lab/apiserver/mod.ts";
import { ApiError, Informer, isNotFound, type KObject, KubeClient } from "../../../lab/mod.ts";
import { getLogger, MemorySink } from "../../../core/mod.ts";

async function eventually(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`not within ${ms} ms: ${what}`);
}

const ns = (name: string): KObject => ({ apiVersion: "v1", kind: "Namespace", metadata: { name } });

Deno.test("the client maps API errors to ApiError with the HTTP status", async () => {
  const dir = await Deno.makeTempDir({ prefix: "krl-kc-" });
  const api = await startApiServer({ stateDir: dir, log: getLogger({}, new MemorySink()) });
  const c = new KubeClient({ server: api.url, caCert: api.caCertPem, token: api.token });
  const anon = new KubeClient({ server: api.url, caCert: api.caCertPem });
  try {
    await assert.rejects(() => c.get("/api/v1/namespaces/nope"), (e) => isNotFound(e));
    await c.create("/api/v1/namespaces", ns("a"));
    await assert.rejects(
      () => c.create("/api/v1/namespaces", ns("a")),
      (e) => e instanceof ApiError && e.status === 409,
    );
    await assert.rejects(
      () => anon.list("/api/v1/namespaces"),
      (e) => e instanceof ApiError && e.status === 401,
    );
    const patched = await c.mergePatch<KObject>("/api/v1/namespaces/a", { metadata: { labels: { x: "1" } } });
    assert.equal(patched.metadata.labels?.x, "1");
  } finally {
    c.close();
    anon.close();
    await api.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an informer delivers the initial list, then changes, and re-lists after the API server restarts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "krl-kc-" });
  let api = await startApiServer({ stateDir: dir, log: getLogger({}, new MemorySink()) });
  const c = new KubeClient({ server: api.url, caCert: api.caCertPem, token: api.token });
  const seen: string[] = [];
  const errors: unknown[] = [];
  await c.create("/api/v1/namespaces", ns("before"));
  const inf = new Informer<KObject>(c, "/api/v1/namespaces", (e) => errors.push(e))
    .on((type, o) => seen.push(`${type} ${o.metadata.name}`));
  try {
    await inf.start();
    assert.ok(inf.synced);
    assert.ok(seen.includes("ADDED before"));
    await c.create("/api/v1/namespaces", ns("live"));
    await eventually("the watch delivers a new namespace", () => seen.includes("ADDED live"));

    // Restart the server on the same port with the same store: the watch breaks, the informer recovers.
    const { port, store } = api;
    await api.stop();
    api = await startApiServer({ stateDir: dir, port, store, log: getLogger({}, new MemorySink()) });
    await c.create("/api/v1/namespaces", ns("after"));
    await eventually("changes after the restart arrive", () => seen.includes("ADDED after"), 15_000);
    await c.delete("/api/v1/namespaces/live");
    await eventually(
      "a deletion arrives",
      () => seen.includes("DELETED live"),
    );
    assert.equal(inf.get("after")?.metadata.name, "after");
    assert.equal(inf.get("live"), undefined);
    assert.equal(inf.get("live"), undefined);
  } finally {
    inf.stop();
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    await api.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
