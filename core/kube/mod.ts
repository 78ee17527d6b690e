/**
 * @module
 * The Kubernetes watch layer: kubeconfig / --master / in-cluster configuration (via client-node's
 * `KubeConfig`) and one list/watch loop per resource the enabled modules need, publishing every change
 * on the bus exactly once, surviving API server restarts (backoff, re-watch, re-list + diff on 410).
 */
export {
  type InClusterSource,
  KubeConfigError,
  loadKubeConfig,
  type LoadKubeConfigOptions,
} from "./config.ts";
export { WatchLayer, type WatchLayerOptions } from "./watch_layer.ts";
export {
  type BackoffOptions,
  type ReflectorFailure,
  type ReflectorStats,
  RESOURCE_PATHS,
} from "./reflector.ts";
export {
  FetchTransport,
  HttpTransport,
  isAbort,
  isGone,
  isTooLargeResourceVersion,
  KubeApiError,
  type ListPage,
  NodeHttpTransport,
  type RawWatchEvent,
  type Transport,
  type TransportOptions,
} from "./transport.ts";
