/**
 * The Kubernetes objects the service benchmarks feed their agents: Service `svc-i` in namespace `bench`
 * with one TCP port 80 → 8080, and its EndpointSlice. One definition, so the proxy, IPVS and router
 * benchmarks measure the same shape of object.
 */
import type { V1Endpoint, V1EndpointSlice, V1Service } from "@kubernetes/client-node";

/** ClusterIP Service i at `clusterIP`, port http 80 → 8080. */
export function benchService(i: number, clusterIP: string): V1Service {
  return {
    metadata: { namespace: "bench", name: `svc-${i}`, uid: `u${i}`, resourceVersion: "1" },
    spec: {
      type: "ClusterIP",
      clusterIP,
      clusterIPs: [clusterIP],
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
    },
  };
}

/** The EndpointSlice of Service i at resourceVersion v, port http 8080. */
export function benchSlice(i: number, v: number, endpoints: V1Endpoint[]): V1EndpointSlice {
  return {
    addressType: "IPv4",
    metadata: {
      namespace: "bench",
      name: `svc-${i}-abcde`,
      labels: { "kubernetes.io/service-name": `svc-${i}` },
      resourceVersion: String(v),
    },
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints,
  };
}
