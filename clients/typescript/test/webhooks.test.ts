import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";

import { WebhookVerificationError, receiveWebhook, verifyWebhookSignature } from "../src/index.js";

interface Vector {
  secret: string;
  timestamp: number;
  body: string;
  signature_header: string;
}

// The known answer computed with openssl, shared by every verifier the project ships.
const VECTOR_URL = new URL("../../../../tests/fixtures/webhook_signature_vector.json", import.meta.url);

async function vector(): Promise<Vector> {
  return JSON.parse(await readFile(VECTOR_URL, "utf8")) as Vector;
}

describe("verifyWebhookSignature", () => {
  it("accepts the known answer", async () => {
    const v = await vector();
    assert.equal(
      await verifyWebhookSignature(v.secret, v.signature_header, v.body, { nowS: v.timestamp }),
      true,
    );
    const bytes = new TextEncoder().encode(v.body);
    assert.equal(
      await verifyWebhookSignature(v.secret, v.signature_header, bytes, { nowS: v.timestamp }),
      true,
    );
  });

  it("refuses another body, another secret, a stale timestamp and a malformed header", async () => {
    const v = await vector();
    const at = { nowS: v.timestamp };
    assert.equal(
      await verifyWebhookSignature(v.secret, v.signature_header, v.body.replace("completed", "failed"), at),
      false,
    );
    assert.equal(await verifyWebhookSignature("whsec_other", v.signature_header, v.body, at), false);
    assert.equal(
      await verifyWebhookSignature(v.secret, v.signature_header, v.body, { nowS: v.timestamp + 301 }),
      false,
    );
    assert.equal(
      await verifyWebhookSignature(v.secret, v.signature_header, v.body, { nowS: v.timestamp + 300 }),
      true,
    );
    const other = v.signature_header.replace(`t=${v.timestamp}`, `t=${v.timestamp + 1}`);
    assert.equal(await verifyWebhookSignature(v.secret, other, v.body, at), false);
    for (const header of [
      "",
      "v1=abc",
      `t=${v.timestamp}`,
      `t=x,${v.signature_header.split(",")[1] ?? ""}`,
    ]) {
      assert.equal(await verifyWebhookSignature(v.secret, header, v.body, at), false, header);
    }
  });
});

describe("receiveWebhook", () => {
  const secret = "whsec_receiver_test";
  const nowS = 1_796_500_000;
  const body = JSON.stringify({
    id: "d-1",
    type: "batch.completed",
    created_at: "2026-12-05T10:00:00Z",
    data: { id: "b-1", status: "completed", href: "/v1/evaluation-batches/b-1", total: 1, counts: {} },
  });
  // Signed by node:crypto, not by the code under test.
  const header = `t=${nowS},v1=${createHmac("sha256", secret).update(`${nowS}.${body}`).digest("hex")}`;

  it("returns the event of a signed delivery", async () => {
    const event = await receiveWebhook(secret, header, body, { nowS });
    assert.equal(event.type, "batch.completed");
    assert.equal(event.data.id, "b-1");
  });

  it("refuses a delivery without a signature, with a wrong one, or with no event", async () => {
    await assert.rejects(receiveWebhook(secret, undefined, body, { nowS }), WebhookVerificationError);
    await assert.rejects(receiveWebhook("whsec_other", header, body, { nowS }), WebhookVerificationError);
    const v = await vector();
    // Signed, but not an event: the vector's body has no id.
    await assert.rejects(
      receiveWebhook(v.secret, v.signature_header, v.body, { nowS: v.timestamp }),
      /not a webhook event/,
    );
  });
});
