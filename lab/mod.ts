/**
 * @module
 * The lab: the seed's cluster (kube-master 192.168.1.99, kube-node1..N at 192.168.1.100+, pod CIDRs
 * 10.1.N.0/24, service CIDR 172.16.0.0/16) rebuilt in network namespaces on one machine, with the lab
 * API server, node CIDR allocation, a scheduler, an EndpointSlice controller, a kubelet per node that
 * wires pods with the real CNI plugins, one agent per node, and the narrated demo. `lab/cli.ts` is the
 * command line; this module is what tests and benchmarks import.
 */
export {
  addExternalHost,
  AGENT_HEALTH_PORT,
  agentHealthy,
  DAEMONSET_MANIFEST,
  daemonSetAgentPid,
  daemonSetFlags,
  defaultAgentFlags,
  defaultCniMode,
  type DownReport,
  execCommand,
  installDaemonSet,
  kubectl,
  kubectlCommand,
  labDown,
  LabError,
  labManifest,
  type LabPaths,
  labStatus,
  labUp,
  machineNetns,
  NODE_COLUMNS,
  POD_COLUMNS,
  podNetns,
  preflight,
  REPO_ROOT,
  requireState,
  restartAgent,
  splitFlags,
  startAgent,
  type StatusReport,
  type UpOptions,
} from "./lab.ts";
export {
  birdConfig,
  CLUSTER_ASN,
  EXTERNAL_ROUTER_ASN,
  EXTERNAL_ROUTER_IP,
  EXTERNAL_ROUTER_KINDS,
  externalRouterFlags,
  type ExternalRouterKind,
  externalRouterRoutes,
  gobgpdConfig,
  type LearnedRoute,
  parseBirdRoutes,
  routerCli,
  routerPeersCommand,
} from "./external_router.ts";
export {
  defaultPrefix,
  defaultStateDir,
  type ExternalRouterInfo,
  type LabProcess,
  type LabState,
  nodeDir,
  readState,
  STATE_FILE,
} from "./state.ts";
export {
  allocatePodCidr,
  API_PORT,
  CLUSTER_CIDR,
  DEFAULT_PREFIX,
  ipInCidr,
  type LabHost,
  MASTER_IP,
  MAX_NODES,
  MAX_NODES_IN_SLASH24,
  NODE_PORT_RANGE,
  podCidrForIndex,
  podNetnsName,
  SERVICE_CIDR,
  type Topology,
  topology,
} from "./topology.ts";
export {
  canonicalJson,
  desiredEndpointSlices,
  HEADLESS_LABEL,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  matchesSelector,
  MAX_ENDPOINTS_PER_SLICE,
  podIpOf,
  podIsReady,
  resolveTargetPort,
  sameSliceContent,
  SERVICE_NAME_LABEL,
} from "./endpointslices.ts";
export { pickNode, Scheduler } from "./scheduler.ts";
export { NodeIpamController } from "./node_ipam.ts";
export { EndpointSliceController } from "./endpointslice_controller.ts";
export {
  cniAdd,
  cniDel,
  CniError,
  type CniRuntime,
  hasIpamRange,
  labNetworkConfig,
  loadNetworkConfig,
  type NetworkList,
  resultIPs,
} from "./cni.ts";
export {
  CNI_CONF_NAME,
  type CniMode,
  type KubeletOptions,
  LabKubelet,
  netexecPorts,
  type PodRecord,
  READY_ANNOTATION,
  TERMINATE_AFTER_ANNOTATION,
} from "./kubelet.ts";
export {
  ApiError,
  Informer,
  isConflict,
  isGone,
  isNotFound,
  keyOf,
  type KList,
  type KObject,
  KubeClient,
  type WatchEvent,
} from "./kube_client.ts";
export {
  type Act,
  ACTS,
  clusterAct,
  crossNodeAct,
  daemonSetAct,
  demoActs,
  type DemoContext,
  type DemoOptions,
  type DemoResult,
  ExpectationFailed,
  runActs,
  runDemo,
  sameNodeAct,
  type Step,
} from "./demo.ts";
