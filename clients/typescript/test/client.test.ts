// The wrapper's own rules, against a scripted fetch: retries, waits and problems that a live
// service shows only by chance (tests/contract runs the same client against a real one).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ProblemError, ScorerClient } from "../src/index.js";
import { interview } from "./interview.js";

type Step = Response | Error;

/** A fetch that answers `steps` in order and records the requests it got. */
function scripted(steps: Step[]): { fetch: (request: Request) => Promise<Response>; requests: Request[] } {
  const requests: Request[] = [];
  return {
    requests,
    fetch: (request: Request): Promise<Response> => {
      requests.push(request);
      const step = steps.shift();
      if (step === undefined) {
        return Promise.reject(new Error("no more scripted answers"));
      }
      return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
    },
  };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  const type = status >= 400 ? "application/problem+json" : "application/json";
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": type, ...headers } });
}

function problem(status: number, slug: string): Record<string, unknown> {
  return { type: `https://interview-scorer.dev/problems/${slug}`, title: slug, status, detail: slug };
}

function client(steps: Step[], options: { retries?: number } = {}) {
  const sleeps: number[] = [];
  const fake = scripted(steps);
  const scorer = new ScorerClient({
    baseUrl: "http://scorer.test",
    apiKey: "sk-test",
    fetch: fake.fetch,
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
    ...options,
  });
  return { scorer, sleeps, requests: fake.requests };
}

const EVALUATION = { id: "e-1", status: "completed" };

describe("createEvaluation", () => {
  it("retries a 503 with the same Idempotency-Key after its Retry-After", async () => {
    const { scorer, sleeps, requests } = client([
      json(503, problem(503, "llm-unavailable"), { "Retry-After": "7" }),
      json(201, EVALUATION, { Location: "/v1/evaluations/e-1" }),
    ]);

    const created = await scorer.createEvaluation(interview("retry"));

    assert.equal(created.status, 201);
    assert.equal(created.location, "/v1/evaluations/e-1");
    assert.deepEqual(sleeps, [7000]);
    const keys = requests.map((r) => r.headers.get("Idempotency-Key"));
    assert.equal(keys.length, 2);
    assert.ok(keys[0]);
    assert.equal(keys[1], keys[0]);
    assert.equal(created.idempotencyKey, keys[0]);
    assert.equal(requests[0]?.headers.get("Authorization"), "Bearer sk-test");
  });

  it("retries a network error with the same key and reports the replay it gets", async () => {
    const { scorer, requests } = client([
      new TypeError("fetch failed"),
      json(201, EVALUATION, { Location: "/v1/evaluations/e-1", "Idempotent-Replayed": "true" }),
    ]);

    const created = await scorer.createEvaluation(interview("network"), { idempotencyKey: "mine-1" });

    assert.equal(created.replayed, true);
    assert.deepEqual(
      requests.map((r) => r.headers.get("Idempotency-Key")),
      ["mine-1", "mine-1"],
    );
  });

  it("retries a 409 for a key in use, and nothing else of 4xx", async () => {
    const inUse = client([
      json(409, problem(409, "idempotency-key-in-use"), { "Retry-After": "1" }),
      json(201, EVALUATION, { Location: "/v1/evaluations/e-1" }),
    ]);
    assert.equal((await inUse.scorer.createEvaluation(interview("409"))).status, 201);
    assert.deepEqual(inUse.sleeps, [1000]);

    const reused = client([json(422, problem(422, "idempotency-key-reused"))]);
    await assert.rejects(reused.scorer.createEvaluation(interview("422")), ProblemError);
    assert.equal(reused.requests.length, 1);
  });

  it("gives up after its retries with the last problem", async () => {
    const { scorer, requests } = client(
      [503, 503, 503].map((s) => json(s, problem(s, "llm-unavailable"), { "Retry-After": "1" })),
      { retries: 2 },
    );
    await assert.rejects(scorer.createEvaluation(interview("give-up")), (error: unknown) => {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.status, 503);
      assert.equal(error.retryAfterS, 1);
      return true;
    });
    assert.equal(requests.length, 3);
  });

  it("asks for respond-async with Prefer", async () => {
    const { scorer, requests } = client([
      json(202, { id: "e-1", status: "pending" }, { Location: "/v1/evaluations/e-1", "Retry-After": "1" }),
    ]);
    const accepted = await scorer.createEvaluation(interview("async"), { respondAsync: true });
    assert.equal(accepted.status, 202);
    assert.equal(accepted.retryAfterS, 1);
    assert.equal(requests[0]?.headers.get("Prefer"), "respond-async");
  });
});

describe("problems", () => {
  it("are typed even when the body is none", async () => {
    const html = new Response("<html>Bad gateway</html>", {
      status: 502,
      statusText: "Bad Gateway",
      headers: { "Content-Type": "text/html", "X-Request-ID": "r-1" },
    });
    const { scorer } = client([html]);
    await assert.rejects(scorer.getEvaluation("e-1"), (error: unknown) => {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.status, 502);
      assert.equal(error.type, "about:blank");
      assert.equal(error.requestId, "r-1");
      assert.deepEqual(error.errors, []);
      return true;
    });
  });
});

describe("waitForEvaluation", () => {
  it("waits what each answer's Retry-After asks, else the interval", async () => {
    const { scorer, sleeps, requests } = client([
      json(200, { id: "e-1", status: "pending" }, { "Retry-After": "2" }),
      json(200, { id: "e-1", status: "pending" }, { "Retry-After": "3" }),
      json(200, { id: "e-1", status: "pending" }),
      json(200, { id: "e-1", status: "failed" }),
    ]);

    const done = await scorer.waitForEvaluation("e-1", { intervalS: 5 });

    assert.equal(done.status, "failed");
    assert.deepEqual(sleeps, [2000, 3000, 5000]);
    assert.equal(requests.length, 4);
  });

  it("stops when its signal is aborted", async () => {
    const controller = new AbortController();
    const scorer = new ScorerClient({
      baseUrl: "http://scorer.test",
      fetch: () => {
        controller.abort();
        return Promise.resolve(json(200, { id: "e-1", status: "pending" }, { "Retry-After": "60" }));
      },
    });
    await assert.rejects(scorer.waitForEvaluation("e-1", { signal: controller.signal }), {
      name: "AbortError",
    });
  });
});

describe("listEvaluations", () => {
  it("follows next_cursor to the last page", async () => {
    const { scorer, requests } = client([
      json(200, { items: [{ id: "a" }, { id: "b" }], next_cursor: "c1" }),
      json(200, { items: [{ id: "c" }], next_cursor: null }),
    ]);
    const ids: string[] = [];
    for await (const evaluation of scorer.listEvaluations({ limit: 2, status: "completed" })) {
      ids.push(evaluation.id);
    }
    assert.deepEqual(ids, ["a", "b", "c"]);
    const [first, second] = requests.map((r) => new URL(r.url).searchParams);
    assert.ok(first && second);
    assert.equal(first.get("cursor"), null);
    assert.equal(second.get("cursor"), "c1");
    assert.equal(second.get("status"), "completed");
  });

  it("refuses a cursor it was given before", async () => {
    const { scorer } = client([
      json(200, { items: [], next_cursor: "c1" }),
      json(200, { items: [], next_cursor: "c1" }),
    ]);
    await assert.rejects(async () => {
      for await (const page of scorer.listEvaluationPages()) {
        assert.deepEqual(page.items, []);
      }
    }, /cursor c1 twice/);
  });
});
