import createClient, { type Client } from "openapi-fetch";

import type { components, operations, paths } from "./generated/openapi.js";
import { ProblemError, problemError, retryAfterSeconds } from "./problem.js";

export type Evaluation = components["schemas"]["EvaluationRead"];
export type EvaluationCreate = components["schemas"]["EvaluationCreate"];
export type EvaluationPage = components["schemas"]["EvaluationPage"];
export type ReviewCreate = components["schemas"]["ReviewCreate"];
export type EvaluationBatch = components["schemas"]["BatchRead"];
/** A batch: the service takes any object as an item and reports an invalid one alone; the
 * client asks for evaluation requests. */
export type EvaluationBatchCreate = Omit<components["schemas"]["BatchCreate"], "items"> & {
  items: EvaluationCreate[];
};
/** The filters of listEvaluations (the cursor is the iterator's business). */
export type ListEvaluationsQuery = Omit<
  NonNullable<operations["listEvaluations"]["parameters"]["query"]>,
  "cursor"
>;

export interface ScorerClientOptions {
  /** The service's origin, e.g. `https://scorer.example.com`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <key>`; leave it out where a proxy adds the key. */
  apiKey?: string | undefined;
  /** How many times a request that is safe to repeat is retried after a network error, a
   * 429, a 503, a 504 or a 409 for an Idempotency-Key still in use. Default 2. */
  retries?: number | undefined;
  /** The longest Retry-After honoured, in seconds (a longer one is cut to this). Default 60. */
  maxRetryAfterS?: number | undefined;
  /** The fetch to use (default: the global one). */
  fetch?: ((input: Request) => Promise<Response>) | undefined;
  /** How the client waits between attempts and polls (tests replace it). */
  sleep?: ((ms: number, signal?: AbortSignal) => Promise<void>) | undefined;
  /** Makes the Idempotency-Key of a create that was given none (default: a random UUID). */
  newIdempotencyKey?: (() => string) | undefined;
}

/** What a request that created something answered, besides its body. */
export interface Created<T> {
  body: T;
  /** 201, or 202 when accepted to run in the background. */
  status: number;
  /** The path of what was created. */
  location: string;
  /** True when the service answered with the stored response of an earlier request that had
   * the same Idempotency-Key: nothing was scored or stored again. */
  replayed: boolean;
  /** The Idempotency-Key sent (reused on every retry of this call), or null where the
   * operation takes none. */
  idempotencyKey: string | null;
  /** Seconds to wait before polling, for a 202. */
  retryAfterS: number | null;
  requestId: string | null;
}

export interface RequestOptions {
  signal?: AbortSignal | undefined;
}

export interface CreateEvaluationOptions extends RequestOptions {
  /** Reuse a key of your own (say, derived from the ATS's interview id) to make a repeat after
   * a reload safe too; by default each call makes a new one. */
  idempotencyKey?: string | undefined;
  /** Answer 202 at once and score in the background (`Prefer: respond-async`); then poll with
   * waitForEvaluation. */
  respondAsync?: boolean | undefined;
}

export interface PollOptions extends RequestOptions {
  /** Seconds between polls when the service sends no Retry-After. Default 1. */
  intervalS?: number | undefined;
}

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

interface Success<T> {
  data: T;
  response: Response;
}

const RETRYABLE_STATUSES = new Set([429, 503, 504]);
const KEY_IN_USE = "/idempotency-key-in-use";

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException("The wait was aborted", "AbortError");
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      if (signal) {
        reject(abortReason(signal));
      }
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}

/** The typed client of the Interview Scorer API: one method per operation, named by its
 * operationId, problems thrown as ProblemError. */
export class ScorerClient {
  /** The underlying openapi-fetch client, typed by the document, for anything else. */
  readonly api: Client<paths>;
  readonly #retries: number;
  readonly #maxRetryAfterS: number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #newKey: () => string;

  constructor(options: ScorerClientOptions) {
    const headers: Record<string, string> = {};
    if (options.apiKey !== undefined) {
      headers.Authorization = `Bearer ${options.apiKey}`;
    }
    this.api = createClient<paths>({
      baseUrl: options.baseUrl,
      headers,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.#retries = options.retries ?? 2;
    this.#maxRetryAfterS = options.maxRetryAfterS ?? 60;
    this.#sleep = options.sleep ?? defaultSleep;
    this.#newKey = options.newIdempotencyKey ?? (() => crypto.randomUUID());
  }

  /** Score an interview (POST /v1/evaluations). Sends an Idempotency-Key, and retries with
   * the same key, so that a repeat never scores or stores twice. */
  async createEvaluation(
    body: EvaluationCreate,
    options: CreateEvaluationOptions = {},
  ): Promise<Created<Evaluation>> {
    const key = options.idempotencyKey ?? this.#newKey();
    const header = options.respondAsync
      ? { "Idempotency-Key": key, Prefer: "respond-async" }
      : { "Idempotency-Key": key };
    const { data, response } = await this.#send(
      () => this.api.POST("/v1/evaluations", { params: { header }, body, ...signalOf(options) }),
      { retry: true, signal: options.signal },
    );
    return created(data, response, key);
  }

  /** One evaluation (GET /v1/evaluations/{id}); with `include: "provenance"`, how it was
   * scored. */
  async getEvaluation(
    evaluationId: string,
    options: RequestOptions & { include?: "provenance" | undefined } = {},
  ): Promise<Evaluation> {
    return (await this.#getEvaluation(evaluationId, options)).data;
  }

  /** Poll an evaluation until it is no longer pending, waiting what each answer's Retry-After
   * asks; the evaluation completed or failed (`status`, `error`). Bound it with `signal`. */
  waitForEvaluation(evaluationId: string, options: PollOptions = {}): Promise<Evaluation> {
    return this.#poll(() => this.#getEvaluation(evaluationId, options), options);
  }

  /** Every page of evaluations, newest first (GET /v1/evaluations), following next_cursor. */
  async *listEvaluationPages(
    query: ListEvaluationsQuery = {},
    options: RequestOptions = {},
  ): AsyncGenerator<EvaluationPage, void, undefined> {
    const seen = new Set<string>();
    let cursor: string | undefined;
    for (;;) {
      const params = { query: cursor === undefined ? query : { ...query, cursor } };
      const { data } = await this.#send(
        () => this.api.GET("/v1/evaluations", { params, ...signalOf(options) }),
        { retry: true, signal: options.signal },
      );
      yield data;
      const next = data.next_cursor;
      if (next === null) {
        return;
      }
      if (seen.has(next)) {
        throw new Error(`the service sent cursor ${next} twice`);
      }
      seen.add(next);
      cursor = next;
    }
  }

  /** Every evaluation that matches `query`, newest first, fetched a page at a time. */
  async *listEvaluations(
    query: ListEvaluationsQuery = {},
    options: RequestOptions = {},
  ): AsyncGenerator<Evaluation, void, undefined> {
    for await (const page of this.listEvaluationPages(query, options)) {
      yield* page.items;
    }
  }

  /** Record a reviewer's adjusted scores or decision (POST /v1/evaluations/{id}/reviews);
   * the evaluation with the review applied. Not retried: the operation takes no key. */
  async createReview(
    evaluationId: string,
    review: ReviewCreate,
    options: RequestOptions = {},
  ): Promise<Created<Evaluation>> {
    const { data, response } = await this.#send(
      () =>
        this.api.POST("/v1/evaluations/{evaluation_id}/reviews", {
          params: { path: { evaluation_id: evaluationId } },
          body: review,
          ...signalOf(options),
        }),
      { retry: false, signal: options.signal },
    );
    return created(data, response, null);
  }

  /** Erase an evaluation and everything derived from it (DELETE /v1/evaluations/{id}). */
  async deleteEvaluation(evaluationId: string, options: RequestOptions = {}): Promise<void> {
    await this.#send(
      () =>
        this.api.DELETE("/v1/evaluations/{evaluation_id}", {
          params: { path: { evaluation_id: evaluationId } },
          ...signalOf(options),
        }),
      { retry: false, signal: options.signal },
    );
  }

  /** Score many interviews in the background (POST /v1/evaluation-batches). Not retried:
   * the operation takes no key. */
  async createEvaluationBatch(
    batch: EvaluationBatchCreate,
    options: RequestOptions = {},
  ): Promise<Created<EvaluationBatch>> {
    const { data, response } = await this.#send(
      () => this.api.POST("/v1/evaluation-batches", { body: batch, ...signalOf(options) }),
      { retry: false, signal: options.signal },
    );
    return created(data, response, null);
  }

  /** A batch and its progress (GET /v1/evaluation-batches/{id}). */
  async getEvaluationBatch(batchId: string, options: RequestOptions = {}): Promise<EvaluationBatch> {
    return (await this.#getEvaluationBatch(batchId, options)).data;
  }

  /** Poll a batch until no item is pending, waiting what each answer's Retry-After asks. */
  waitForEvaluationBatch(batchId: string, options: PollOptions = {}): Promise<EvaluationBatch> {
    return this.#poll(() => this.#getEvaluationBatch(batchId, options), options);
  }

  #getEvaluation(
    evaluationId: string,
    options: RequestOptions & { include?: "provenance" | undefined },
  ): Promise<Success<Evaluation>> {
    const query = options.include === undefined ? {} : { include: options.include };
    return this.#send(
      () =>
        this.api.GET("/v1/evaluations/{evaluation_id}", {
          params: { path: { evaluation_id: evaluationId }, query },
          ...signalOf(options),
        }),
      { retry: true, signal: options.signal },
    );
  }

  #getEvaluationBatch(batchId: string, options: RequestOptions): Promise<Success<EvaluationBatch>> {
    return this.#send(
      () =>
        this.api.GET("/v1/evaluation-batches/{batch_id}", {
          params: { path: { batch_id: batchId } },
          ...signalOf(options),
        }),
      { retry: true, signal: options.signal },
    );
  }

  /** Read until what is read is no longer pending, waiting what each Retry-After asks. */
  async #poll<T extends { status: string }>(
    read: () => Promise<Success<T>>,
    options: PollOptions,
  ): Promise<T> {
    for (;;) {
      const { data, response } = await read();
      if (data.status !== "pending") {
        return data;
      }
      const seconds = retryAfterSeconds(response.headers.get("Retry-After")) ?? options.intervalS ?? 1;
      await this.#sleep(Math.min(seconds, this.#maxRetryAfterS) * 1000, options.signal);
    }
  }

  /** One call, retried (when `retry`) while the answer says a repeat may succeed. */
  async #send<T>(
    call: () => Promise<Outcome<T>>,
    { retry, signal }: { retry: boolean; signal: AbortSignal | undefined },
  ): Promise<Success<T>> {
    for (let attempt = 0; ; attempt++) {
      const last = !retry || attempt >= this.#retries;
      let outcome: Outcome<T>;
      try {
        outcome = await call();
      } catch (error: unknown) {
        // A network error: the request may or may not have arrived.
        if (last || isAbort(error)) {
          throw error;
        }
        await this.#sleep(backoffMs(attempt), signal);
        continue;
      }
      const { response } = outcome;
      if (response.ok) {
        return { data: outcome.data as T, response };
      }
      const problem = problemError(response, outcome.error);
      if (last || !retryable(problem)) {
        throw problem;
      }
      const waitMs =
        problem.retryAfterS === null
          ? backoffMs(attempt)
          : Math.min(problem.retryAfterS, this.#maxRetryAfterS) * 1000;
      await this.#sleep(waitMs, signal);
    }
  }
}

function retryable(problem: ProblemError): boolean {
  return (
    RETRYABLE_STATUSES.has(problem.status) || (problem.status === 409 && problem.type.endsWith(KEY_IN_USE))
  );
}

function backoffMs(attempt: number): number {
  return 500 * 2 ** attempt;
}

function signalOf(options: RequestOptions): { signal?: AbortSignal } {
  return options.signal ? { signal: options.signal } : {};
}

function created<T>(body: T, response: Response, idempotencyKey: string | null): Created<T> {
  return {
    body,
    status: response.status,
    location: response.headers.get("Location") ?? "",
    replayed: response.headers.get("Idempotent-Replayed") === "true",
    idempotencyKey,
    retryAfterS: retryAfterSeconds(response.headers.get("Retry-After")),
    requestId: response.headers.get("X-Request-ID"),
  };
}
