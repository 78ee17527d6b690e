/**
 * The pods/log subresource (`kubectl logs`): the API server finds the container's log file through
 * `podLogFile` (the lab master maps it to the node's kubelet directory) and serves it as kube-apiserver
 * relays the kubelet's answer: text/plain, with `container`, `previous`, `tailLines`, `limitBytes` and
 * `follow` honoured.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { badRequest } from "./errors.ts";
import type { KubeObject } from "./types.ts";

/** Where a container's log is: a file path, or undefined when the pod has no log (not started). */
export type PodLogFile = (pod: KubeObject, container: string, previous: boolean) => string | undefined;

function readOrUndefined(path: string): Uint8Array | undefined {
  try {
    return Deno.readFileSync(path);
  } catch {
    return undefined;
  }
}

/** The last `n` lines of `data`. */
export function tailLines(data: Uint8Array, n: number): Uint8Array {
  if (n <= 0) return new Uint8Array();
  let end = data.length;
  if (end > 0 && data[end - 1] === 10) end--;
  let i = end;
  let seen = 0;
  while (i > 0) {
    if (data[i - 1] === 10 && ++seen === n) break;
    i--;
  }
  return data.subarray(i);
}

export async function servePodLog(
  req: IncomingMessage,
  res: ServerResponse,
  pod: KubeObject,
  q: URLSearchParams,
  podLogFile: PodLogFile | undefined,
): Promise<void> {
  const name = pod.metadata?.name ?? "";
  // deno-lint-ignore no-explicit-any
  const containers = ((pod as any).spec?.containers ?? []) as Array<{ name: string }>;
  let container = q.get("container") ?? "";
  if (!container) {
    if (containers.length !== 1) {
      throw badRequest(
        `a container name must be specified for pod ${name}, choose one of: [${
          containers.map((c) => c.name).join(" ")
        }]`,
      );
    }
    container = containers[0]!.name;
  }
  if (!containers.some((c) => c.name === container)) {
    throw badRequest(`container ${container} is not valid for pod ${name}`);
  }
  const previous = q.get("previous") === "true";
  const file = podLogFile?.(pod, container, previous);
  let data = file ? readOrUndefined(file) : undefined;
  if (data === undefined) {
    throw badRequest(
      previous
        ? `previous terminated container "${container}" in pod "${name}" not found`
        : `container "${container}" in pod "${name}" is waiting to start: ContainerCreating`,
    );
  }
  const tail = q.get("tailLines");
  if (tail !== null) data = tailLines(data, Number(tail));
  const limit = q.get("limitBytes");
  if (limit !== null && Number(limit) >= 0) data = data.subarray(0, Number(limit));
  res.writeHead(200, { "content-type": "text/plain" });
  res.write(data);
  if (q.get("follow") !== "true" || previous || !file) return void res.end();
  // Follow: send what is appended until the client goes away (or the file is removed with the pod).
  let offset = (readOrUndefined(file) ?? new Uint8Array()).length;
  let closed = false;
  req.on("close", () => closed = true);
  while (!closed) {
    await new Promise((r) => setTimeout(r, 250));
    const now = readOrUndefined(file);
    if (now === undefined) break;
    if (now.length < offset) offset = 0;
    if (now.length > offset) {
      res.write(now.subarray(offset));
      offset = now.length;
    }
  }
  res.end();
}
