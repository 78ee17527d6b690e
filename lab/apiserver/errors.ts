/**
 * Kubernetes API errors as the real API server reports them: an HTTP code plus a `Status` object
 * (`kind: Status`, `reason`, `message`, `details`). kubectl prints `message` and branches on `reason`,
 * so both must be right.
 */

export type StatusReason =
  | "NotFound"
  | "AlreadyExists"
  | "Conflict"
  | "Invalid"
  | "BadRequest"
  | "Gone"
  | "Expired"
  | "Unauthorized"
  | "Forbidden"
  | "MethodNotAllowed"
  | "Timeout"
  | "UnsupportedMediaType"
  | "InternalError";

export interface StatusCause {
  reason?: string;
  message: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: StatusCause[];
}

/** The wire form of a Kubernetes `Status` (meta/v1). */
export interface StatusObject {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure" | "Success";
  message: string;
  reason: StatusReason | "";
  details?: StatusDetails;
  code: number;
}

/** An API error carrying the HTTP code and the `Status` the server answers with. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: StatusDetails,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  toStatus(): StatusObject {
    return {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

/** Resource name as the API server words it in messages: `pods "web"`, `services "x"`. */
function what(resource: string, group: string): string {
  return group ? `${resource}.${group}` : resource;
}

export function notFound(resource: string, group: string, name: string): ApiError {
  return new ApiError(404, "NotFound", `${what(resource, group)} "${name}" not found`, {
    name,
    group,
    kind: resource,
  });
}

export function alreadyExists(resource: string, group: string, name: string): ApiError {
  return new ApiError(409, "AlreadyExists", `${what(resource, group)} "${name}" already exists`, {
    name,
    group,
    kind: resource,
  });
}

export function conflict(resource: string, group: string, name: string, why: string): ApiError {
  return new ApiError(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${what(resource, group)} "${name}": ${why}`,
    { name, group, kind: resource },
  );
}

export function invalid(kind: string, group: string, name: string, causes: StatusCause[]): ApiError {
  const list = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message)).join(", ");
  return new ApiError(422, "Invalid", `${kind} "${name}" is invalid: ${list}`, {
    name,
    group,
    kind,
    causes: causes.map((c) => ({
      reason: c.reason ?? "FieldValueInvalid",
      message: c.message,
      ...(c.field ? { field: c.field } : {}),
    })),
  });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, "BadRequest", message);
}

/** A watch or list from a resourceVersion older than the compacted history (etcd: "required revision has been compacted"). */
export function gone(message: string): ApiError {
  return new ApiError(410, "Expired", message);
}

export const isNotFound = (e: unknown): boolean => e instanceof ApiError && e.code === 404;
export const isAlreadyExists = (e: unknown): boolean => e instanceof ApiError && e.reason === "AlreadyExists";
export const isConflict = (e: unknown): boolean => e instanceof ApiError && e.reason === "Conflict";
export const isInvalid = (e: unknown): boolean => e instanceof ApiError && e.code === 422;
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.code === 410;
