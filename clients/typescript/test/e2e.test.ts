// The compiled client against a live `interview-scorer serve` with the simulators: what a
// frontend sees. tests/contract/test_typescript_client.py starts the processes and runs this
// with SCORER_URL, SCORER_API_KEY and SCORER_WEBHOOK_SECRET set.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";

import { ProblemError, ScorerClient, WebhookVerificationError, receiveWebhook } from "../src/index.js";
import { interview } from "./interview.js";

const baseUrl = process.env.SCORER_URL ?? "";
const apiKey = process.env.SCORER_API_KEY ?? "";
const secret = process.env.SCORER_WEBHOOK_SECRET ?? "";
const skip =
  baseUrl && apiKey && secret
    ? false
    : "no live service: tests/contract/test_typescript_client.py sets SCORER_URL, SCORER_API_KEY and SCORER_WEBHOOK_SECRET";
const WITHIN_MS = 60_000;

function isProblem(status: number, type?: string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof ProblemError, String(error));
    assert.equal(error.status, status);
    if (type !== undefined) {
      assert.equal(error.type, `https://interview-scorer.dev/problems/${type}`);
    }
    assert.ok(error.requestId);
    return true;
  };
}

interface Delivery {
  headers: IncomingHttpHeaders;
  body: string;
}

/** An HTTP receiver on loopback; `next` resolves with the first delivery. */
async function receiver(): Promise<{ url: string; next: Promise<Delivery>; close: () => void }> {
  let deliver: (delivery: Delivery) => void = () => undefined;
  const next = new Promise<Delivery>((resolve) => {
    deliver = resolve;
  });
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      response.writeHead(204).end();
      deliver({ headers: request.headers, body: Buffer.concat(chunks).toString("utf8") });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/scorer`,
    next,
    close: () => {
      server.close();
    },
  };
}

describe("the client against a live service", { skip }, () => {
  const client = new ScorerClient({ baseUrl, apiKey });

  it("scores an interview: 201 with its Location", async () => {
    const created = await client.createEvaluation(interview("created"));

    assert.equal(created.status, 201);
    assert.equal(created.location, `/v1/evaluations/${created.body.id}`);
    assert.equal(created.replayed, false);
    assert.equal(created.body.status, "completed");
    assert.equal(created.body.model, "simulated");
    assert.ok(created.body.criteria.length > 0);
    assert.ok(created.requestId);
  });

  it("answers the same Idempotency-Key twice with one evaluation, the replay reported", async () => {
    const body = interview("replayed");
    const key = randomUUID();

    const first = await client.createEvaluation(body, { idempotencyKey: key });
    const second = await client.createEvaluation(body, { idempotencyKey: key });

    assert.equal(first.replayed, false);
    assert.equal(second.replayed, true);
    assert.equal(second.body.id, first.body.id);
    assert.equal(second.location, first.location);
    assert.deepEqual(second.body, first.body);
  });

  it("rejects a bad body with a typed problem naming each field", async () => {
    const bad = interview("bad", { candidate: { name: "", email: "not-an-email" }, transcript: [] });

    await assert.rejects(client.createEvaluation(bad), (error: unknown) => {
      isProblem(422, "validation")(error);
      assert.ok(error instanceof ProblemError);
      const fields = error.errors.map((e) => e.field).sort();
      assert.deepEqual(fields, ["candidate.email", "candidate.name", "transcript"]);
      assert.ok(error.errors.every((e) => e.message && e.type));
      return true;
    });
  });

  it("answers a request without a key with 401", async () => {
    const anonymous = new ScorerClient({ baseUrl });

    await assert.rejects(anonymous.createEvaluation(interview("anonymous")), isProblem(401, "unauthorized"));
    await assert.rejects(anonymous.getEvaluation(randomUUID()), isProblem(401, "unauthorized"));
  });

  it("lists every page exactly once, following next_cursor", async () => {
    const position = { title: `Lister ${randomUUID()}` };
    const made = await Promise.all(
      [0, 1, 2, 3, 4].map(
        async (i) => (await client.createEvaluation(interview(`list-${i}`, { position }))).body.id,
      ),
    );

    const pages: string[][] = [];
    for await (const page of client.listEvaluationPages({ position: position.title, limit: 2 })) {
      pages.push(page.items.map((e) => e.id));
    }
    const listed: string[] = [];
    for await (const evaluation of client.listEvaluations({ position: position.title, limit: 2 })) {
      listed.push(evaluation.id);
    }

    assert.deepEqual(
      pages.map((p) => p.length),
      [2, 2, 1],
    );
    assert.deepEqual([...pages.flat()].sort(), [...made].sort());
    assert.deepEqual(listed, pages.flat());
  });

  it("polls an asynchronous score to completion", async () => {
    const accepted = await client.createEvaluation(interview("async"), { respondAsync: true });

    assert.equal(accepted.status, 202);
    assert.equal(accepted.body.status, "pending");
    assert.equal(accepted.location, `/v1/evaluations/${accepted.body.id}`);
    assert.equal(accepted.retryAfterS, 1);
    const done = await client.waitForEvaluation(accepted.body.id, { signal: AbortSignal.timeout(WITHIN_MS) });
    assert.equal(done.status, "completed");
    assert.ok(done.overall_score !== null);
    assert.ok(done.criteria.length > 0);
  });

  it("reads an evaluation with its provenance", async () => {
    const { body } = await client.createEvaluation(interview("provenance"));

    const plain = await client.getEvaluation(body.id);
    const explained = await client.getEvaluation(body.id, { include: "provenance" });

    assert.equal(plain.provenance, null);
    assert.ok(explained.provenance);
    assert.equal(explained.provenance.prompt_version, body.prompt_version);
    assert.ok(explained.provenance.samples.length >= 1);
  });

  it("records a review and reads it back", async () => {
    const { body } = await client.createEvaluation(interview("reviewed"));

    const reviewed = await client.createReview(body.id, {
      decision: "strong_no_hire",
      reason: "The follow-up questions went unanswered.",
    });
    const read = await client.getEvaluation(body.id);

    assert.equal(reviewed.status, 201);
    assert.equal(reviewed.location, `/v1/evaluations/${body.id}`);
    assert.equal(read.review?.decision, "strong_no_hire");
    assert.equal(read.recommendation, "strong_no_hire");
    assert.equal(read.model_recommendation, body.recommendation);
    assert.equal(read.reviews.length, 1);
  });

  it("erases an evaluation: then it is 404", async () => {
    const { body } = await client.createEvaluation(interview("erased"));

    await client.deleteEvaluation(body.id);

    await assert.rejects(client.getEvaluation(body.id), isProblem(404, "not-found"));
    await assert.rejects(client.deleteEvaluation(body.id), isProblem(404, "not-found"));
  });

  it("scores a batch in the background", async () => {
    const accepted = await client.createEvaluationBatch({
      items: [interview("batch-0"), interview("batch-1")],
    });

    assert.equal(accepted.status, 202);
    assert.equal(accepted.location, `/v1/evaluation-batches/${accepted.body.id}`);
    const done = await client.waitForEvaluationBatch(accepted.body.id, {
      signal: AbortSignal.timeout(WITHIN_MS),
    });
    assert.deepEqual(done.counts, { pending: 0, completed: 2, failed: 0, invalid: 0 });
    for (const item of done.items) {
      assert.ok(item.evaluation_id);
      assert.equal((await client.getEvaluation(item.evaluation_id)).status, "completed");
    }
  });

  it("verifies a real webhook delivery with the key's secret", async () => {
    const hook = await receiver();
    try {
      const accepted = await client.createEvaluation(interview("webhook", { callback_url: hook.url }), {
        respondAsync: true,
      });
      const delivery = await Promise.race([
        hook.next,
        new Promise<never>((_, reject) => {
          setTimeout(() => {
            reject(new Error(`no delivery within ${WITHIN_MS} ms`));
          }, WITHIN_MS).unref();
        }),
      ]);
      const signature = delivery.headers["x-scorer-signature"];
      assert.equal(typeof signature, "string");

      const event = await receiveWebhook(secret, String(signature), delivery.body);

      assert.equal(event.type, "evaluation.completed");
      assert.equal(event.id, delivery.headers["x-scorer-delivery"]);
      assert.equal(event.data.id, accepted.body.id);
      assert.equal(event.data.href, accepted.location);
      await assert.rejects(
        receiveWebhook(secret, String(signature), delivery.body.replace("completed", "failed")),
        WebhookVerificationError,
      );
      await assert.rejects(
        receiveWebhook(`${secret}x`, String(signature), delivery.body),
        WebhookVerificationError,
      );
    } finally {
      hook.close();
    }
  });
});
