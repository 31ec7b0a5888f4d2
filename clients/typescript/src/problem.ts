import type { components } from "./generated/openapi.js";
import { isRecord } from "./json.js";

/** An RFC 9457 problem: every error the API answers is one (`application/problem+json`). */
export type Problem = components["schemas"]["Problem"];
/** One invalid field of a request, in a 422 problem's `errors`. */
export type FieldError = components["schemas"]["FieldError"];

/** An answer of the API that is not a success, carrying the problem it was sent with. */
export class ProblemError extends Error {
  override readonly name = "ProblemError";
  /** The problem as the service sent it (or, for a body that was none, made from the status). */
  readonly problem: Problem;
  /** The request's X-Request-ID: quote it when asking the service's operators. */
  readonly requestId: string | null;
  /** Seconds the service asked to wait before trying again (Retry-After), if it did. */
  readonly retryAfterS: number | null;

  constructor(problem: Problem, options: { requestId?: string | null; retryAfterS?: number | null } = {}) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
    this.problem = problem;
    this.requestId = options.requestId ?? null;
    this.retryAfterS = options.retryAfterS ?? null;
  }

  get status(): number {
    return this.problem.status;
  }

  get type(): string {
    return this.problem.type;
  }

  get title(): string {
    return this.problem.title;
  }

  get detail(): string {
    return this.problem.detail;
  }

  /** The invalid fields of a 422 (empty for other problems). */
  get errors(): FieldError[] {
    return this.problem.errors ?? [];
  }
}

function isFieldError(value: unknown): value is FieldError {
  return (
    isRecord(value) &&
    typeof value.field === "string" &&
    typeof value.message === "string" &&
    typeof value.type === "string"
  );
}

/** Whether `value` has the shape of a problem (a proxy's HTML error page does not). */
export function isProblem(value: unknown): value is Problem {
  return (
    isRecord(value) &&
    typeof value.type === "string" &&
    typeof value.title === "string" &&
    typeof value.status === "number" &&
    typeof value.detail === "string" &&
    (value.instance === undefined || value.instance === null || typeof value.instance === "string") &&
    (value.errors === undefined ||
      value.errors === null ||
      (Array.isArray(value.errors) && value.errors.every(isFieldError)))
  );
}

/** Seconds from a Retry-After value (delay-seconds or an HTTP date), or null. */
export function retryAfterSeconds(value: string | null, nowMs: number = Date.now()): number | null {
  if (value === null || value.trim() === "") {
    return null;
  }
  if (/^\d+$/.test(value.trim())) {
    return Number(value.trim());
  }
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/** The ProblemError of a failed response whose body openapi-fetch parsed as `body`. */
export function problemError(response: Response, body: unknown): ProblemError {
  const problem: Problem = isProblem(body)
    ? body
    : {
        type: "about:blank",
        title: response.statusText || `HTTP ${response.status}`,
        status: response.status,
        detail: typeof body === "string" ? body.slice(0, 500) : "",
      };
  return new ProblemError(problem, {
    requestId: response.headers.get("X-Request-ID"),
    retryAfterS: retryAfterSeconds(response.headers.get("Retry-After")),
  });
}
