// The console's access to PM: typed Connect clients from the generated
// code (gen/ts) over the Connect protocol on the page's own origin, and a
// small REST helper for what only the REST face offers (YAML bodies, field
// validation, ETags, the topology graph, feature discovery). Both send the
// signed-in token and report a refused credential in one place.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuditService } from "../../../gen/ts/oaas/pm/v1/audit_service_pb.js";
import { ClusterService } from "../../../gen/ts/oaas/pm/v1/cluster_service_pb.js";
import { DeploymentService } from "../../../gen/ts/oaas/pm/v1/deployment_service_pb.js";
import { PackageService } from "../../../gen/ts/oaas/pm/v1/package_service_pb.js";
import { WatchService } from "../../../gen/ts/oaas/pm/v1/watch_service_pb.js";

const TOKEN_KEY = "oaas-pm.token";

/** token is the signed-in bearer token; kept for the tab only. */
export function token(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** setToken stores (or, with null, forgets) the bearer token. */
export function setToken(t: string | null): void {
  if (t === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, t);
}

/** authEvents fires "unauthenticated" whenever PM refuses the credential. */
export const authEvents = new EventTarget();

function refused(): void {
  authEvents.dispatchEvent(new Event("unauthenticated"));
}

function check(err: unknown): never {
  if (ConnectError.from(err).code === Code.Unauthenticated) refused();
  throw err;
}

// A refused stream answers 200 and carries the error at its end (Connect's
// streaming protocol), so the messages are watched as well as the call.
async function* watched<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    check(err);
  }
}

const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("Authorization", `Bearer ${t}`);
  try {
    const res = await next(req);
    return res.stream ? { ...res, message: watched(res.message) } : res;
  } catch (err) {
    return check(err);
  }
};

const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [bearer] });

export const packages = createClient(PackageService, transport);
export const deployments = createClient(DeploymentService, transport);
export const clusters = createClient(ClusterService, transport);
export const audit = createClient(AuditService, transport);
export const watch = createClient(WatchService, transport);

/** RestError is a non-2xx REST answer; message is PM's {"error"} text. */
export class RestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface RestResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

export interface RestOptions {
  body?: string;
  contentType?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** rest calls a REST route and decodes its JSON; errors throw RestError. */
export async function rest<T = unknown>(method: string, path: string, opts: RestOptions = {}): Promise<RestResponse<T>> {
  const headers: Record<string, string> = { Accept: "application/json", ...opts.headers };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (opts.body !== undefined) headers["Content-Type"] = opts.contentType ?? "application/json";
  const res = await fetch(path, { method, headers, body: opts.body, signal: opts.signal, credentials: "same-origin" });
  const text = await res.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!res.ok) {
    if (res.status === 401) refused();
    const msg = body && typeof body === "object" && typeof (body as { error?: unknown }).error === "string"
      ? (body as { error: string }).error
      : `${res.status} ${res.statusText}`;
    throw new RestError(res.status, msg);
  }
  return { status: res.status, headers: res.headers, body: body as T };
}

/** Problem classifies an error from either face for the views. */
export type Problem = "unauthenticated" | "forbidden" | "notfound" | "unimplemented" | "conflict" | "invalid" | "other";

export function problem(err: unknown): Problem {
  if (err instanceof RestError) {
    switch (err.status) {
      case 401: return "unauthenticated";
      case 403: return "forbidden";
      case 404: return "notfound";
      case 405: case 501: return "unimplemented";
      case 409: case 412: return "conflict";
      case 400: case 422: return "invalid";
    }
    return "other";
  }
  switch (ConnectError.from(err).code) {
    case Code.Unauthenticated: return "unauthenticated";
    case Code.PermissionDenied: return "forbidden";
    case Code.NotFound: return "notfound";
    case Code.Unimplemented: return "unimplemented";
    case Code.Aborted: case Code.FailedPrecondition: case Code.AlreadyExists: return "conflict";
    case Code.InvalidArgument: return "invalid";
  }
  return "other";
}

/** message is the text to show for an error. */
export function message(err: unknown): string {
  if (err instanceof RestError) return err.message;
  if (err instanceof DOMException && err.name === "AbortError") return "cancelled";
  const ce = ConnectError.from(err);
  return ce.rawMessage || ce.message;
}

/** isAbort reports a call cancelled by the console itself. */
export function isAbort(err: unknown): boolean {
  return (err instanceof DOMException && err.name === "AbortError") || ConnectError.from(err).code === Code.Canceled;
}

/** Features are the optional routes this PM serves (from its OpenAPI document). */
export interface Features {
  updateDeployment: boolean;
  rollbackPath: string | null;
  revisionsPath: string | null;
}

let features: Promise<Features> | null = null;

/**
 * serverFeatures reads /api/v1/openapi.json (always open) once, to show
 * update and rollback only when this PM serves them: the document is
 * generated from the routes PM serves, so it cannot promise one it lacks.
 */
export function serverFeatures(): Promise<Features> {
  features ??= rest<{ paths?: Record<string, Record<string, unknown>> }>("GET", "/api/v1/openapi.json")
    .then(({ body }) => {
      const paths = body.paths ?? {};
      const find = (re: RegExp, method: string) =>
        Object.keys(paths).find((p) => re.test(p) && paths[p] && method in paths[p]!) ?? null;
      return {
        updateDeployment: find(/^\/api\/v1\/deployments\/\{key\}$/, "put") !== null,
        rollbackPath: find(/^\/api\/v1\/deployments\/\{key\}.*rollback/, "post"),
        revisionsPath: find(/^\/api\/v1\/deployments\/\{key\}\/revisions$/, "get"),
      };
    })
    .catch(() => ({ updateDeployment: false, rollbackPath: null, revisionsPath: null }));
  return features;
}
