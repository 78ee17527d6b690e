/**
 * What a request asks for, in the terms kube-apiserver's RequestInfoFactory uses for both routing and
 * authorization: a resource request has a verb (get, list, watch, create, update, patch, delete,
 * deletecollection), an API group and version, a resource, maybe a subresource, namespace and name; any
 * other path (`/healthz`, `/api`, `/apis/apps`) is a non-resource request with the HTTP verb in lower case.
 */

export interface ResourceRequest {
  resourceRequest: true;
  verb: string;
  apiGroup: string;
  apiVersion: string;
  resource: string;
  subresource: string | undefined;
  namespace: string | undefined;
  name: string | undefined;
  path: string;
}

export interface NonResourceRequest {
  resourceRequest: false;
  verb: string;
  path: string;
}

export type RequestInfo = ResourceRequest | NonResourceRequest;

/**
 * Parses a request line. `/api/v1/namespaces/ns/pods/name/status` → verb from the method, resource
 * `pods`, subresource `status`; `/api/v1/namespaces/ns` → resource `namespaces`, name `ns`.
 */
export function requestInfo(method: string, rawPath: string, query: URLSearchParams): RequestInfo {
  const path = rawPath.replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const nonResource: NonResourceRequest = { resourceRequest: false, verb: method.toLowerCase(), path };
  let apiGroup: string, apiVersion: string, rest: string[];
  if (parts[0] === "api" && parts.length >= 3) [apiGroup, apiVersion, rest] = ["", parts[1]!, parts.slice(2)];
  else if (parts[0] === "apis" && parts.length >= 4) {
    [apiGroup, apiVersion, rest] = [parts[1]!, parts[2]!, parts.slice(3)];
  } else return nonResource;
  let namespace: string | undefined;
  // `/namespaces/<ns>/<resource>…` is namespaced; `/namespaces/<ns>` and `/namespaces/<ns>/status` are the
  // namespace itself (kube-apiserver's special case for the core group's namespaces).
  if (
    rest[0] === "namespaces" && rest.length >= 3 &&
    !(apiGroup === "" && rest.length === 3 && isNsSub(rest[2]!))
  ) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  if (rest.length > 3) return nonResource;
  const [resource, name, subresource] = rest as [string, string | undefined, string | undefined];
  let verb: string;
  switch (method) {
    case "GET":
    case "HEAD": {
      const watch = query.get("watch") === "true" || query.get("watch") === "1";
      verb = name === undefined ? (watch ? "watch" : "list") : watch ? "watch" : "get";
      break;
    }
    case "POST":
      verb = "create";
      break;
    case "PUT":
      verb = "update";
      break;
    case "PATCH":
      verb = "patch";
      break;
    case "DELETE":
      verb = name === undefined ? "deletecollection" : "delete";
      break;
    default:
      verb = method.toLowerCase();
  }
  return { resourceRequest: true, verb, apiGroup, apiVersion, resource, subresource, namespace, name, path };
}

function isNsSub(s: string): boolean {
  return s === "status" || s === "finalize";
}
