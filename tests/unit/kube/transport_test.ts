import assert from "node:assert/strict";
import { FetchTransport, isAbort, loadKubeConfig, NodeHttpTransport } from "../../../core/kube/mod.ts";
import { pod, withLab } from "./_support.ts";

const PODS = "/api/v1/pods";

for (const Transport of [FetchTransport, NodeHttpTransport]) {
  Deno.test(`${Transport.name} watch delivers each event, fails once silent past idleTimeoutMs, stops when aborted from a handler, and rejects with a handler's error`, () =>
    withLab({}, async (lab) => {
      const t = new Transport(loadKubeConfig({ kubeconfig: lab.kubeconfigPath, master: "" }), {
        idleTimeoutMs: 200,
      });
      try {
        const { resourceVersion } = await t.list(PODS, {}, new AbortController().signal);
        lab.server.store.create("pods", pod("default", "a"));
        const seen: string[] = [];
        let connected = 0;
        await assert.rejects(
          t.watch(PODS, { resourceVersion }, new AbortController().signal, () => connected++, (e) => {
            seen.push(`${e.type} ${e.object?.metadata?.name}`);
          }),
          /silent for 200 ms/,
        );
        assert.equal(connected, 1);
        assert.deepEqual(seen, ["ADDED a"]);

        lab.server.store.create("pods", pod("default", "b"));
        const stop = new AbortController();
        let calls = 0;
        await assert.rejects(
          t.watch(PODS, { resourceVersion }, stop.signal, () => {}, () => {
            calls++;
            stop.abort();
          }),
          (err) => isAbort(err),
        );
        // Two events are pending; whether the second was in the same chunk as the first is up to TCP.
        assert.ok(calls >= 1);

        await assert.rejects(
          t.watch(PODS, { resourceVersion }, new AbortController().signal, () => {}, () => {
            throw new Error("handler failed");
          }),
          /handler failed/,
        );
      } finally {
        t.close();
      }
    }));
}
