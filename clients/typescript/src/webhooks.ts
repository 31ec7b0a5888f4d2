import type { components } from "./generated/openapi.js";
import { isRecord } from "./json.js";

export type EvaluationEvent = components["schemas"]["EvaluationEvent"];
export type BatchEvent = components["schemas"]["BatchEvent"];
/** What a webhook delivery carries: the events of the document's `webhooks` section. */
export type WebhookEvent = EvaluationEvent | BatchEvent;

export const SIGNATURE_HEADER = "X-Scorer-Signature";
/** Deliveries signed longer ago than this are refused: a replayed request is too old. */
export const DEFAULT_TOLERANCE_S = 300;

const EVENT_TYPES: ReadonlySet<string> = new Set([
  "evaluation.completed",
  "evaluation.failed",
  "batch.completed",
]);

export interface VerifyOptions {
  toleranceS?: number | undefined;
  /** The current Unix time in seconds (default: the clock's). */
  nowS?: number | undefined;
}

/** The delivery is not signed by the secret, or too old, or not an event. */
export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";
}

function bytes(text: string): Uint8Array<ArrayBuffer> {
  const encoded = new TextEncoder().encode(text);
  const copy = new Uint8Array(new ArrayBuffer(encoded.byteLength));
  copy.set(encoded);
  return copy;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(hex.length / 2));
  for (let i = 0; i < out.length; i++) {
    out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** Whether `header` (X-Scorer-Signature: `t=<unix>,v1=<hex>`) signs the raw `body` under the
 * API key's webhook secret, within `toleranceS` of now. Verify the bytes as received, before
 * parsing them. Works in browsers and Node.js (Web Crypto). */
export async function verifyWebhookSignature(
  secret: string,
  header: string,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): Promise<boolean> {
  const fields = new Map<string, string>();
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at > 0) {
      fields.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
    }
  }
  const timestamp = fields.get("t") ?? "";
  const signature = fields.get("v1") ?? "";
  if (!/^\d{1,15}$/.test(timestamp) || !/^[0-9a-f]{64}$/.test(signature)) {
    return false;
  }
  const nowS = options.nowS ?? Date.now() / 1000;
  if (Math.abs(nowS - Number(timestamp)) > (options.toleranceS ?? DEFAULT_TOLERANCE_S)) {
    return false;
  }
  const raw = typeof body === "string" ? bytes(body) : body;
  const prefix = bytes(`${timestamp}.`);
  const message = new Uint8Array(new ArrayBuffer(prefix.byteLength + raw.byteLength));
  message.set(prefix);
  message.set(raw, prefix.byteLength);
  const key = await crypto.subtle.importKey("raw", bytes(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "verify",
  ]);
  // verify() compares in constant time.
  return crypto.subtle.verify("HMAC", key, fromHex(signature), message);
}

function isWebhookEvent(value: unknown): value is WebhookEvent {
  return (
    isRecord(value) &&
    typeof value.id === "string" &&
    typeof value.type === "string" &&
    EVENT_TYPES.has(value.type) &&
    typeof value.created_at === "string" &&
    isRecord(value.data) &&
    typeof value.data.id === "string"
  );
}

/** Verify a delivery and return its event; throws WebhookVerificationError otherwise. */
export async function receiveWebhook(
  secret: string,
  signatureHeader: string | null | undefined,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): Promise<WebhookEvent> {
  if (!signatureHeader || !(await verifyWebhookSignature(secret, signatureHeader, body, options))) {
    throw new WebhookVerificationError(`the ${SIGNATURE_HEADER} header does not sign this body`);
  }
  const text = typeof body === "string" ? body : new TextDecoder().decode(body);
  const event: unknown = JSON.parse(text);
  if (!isWebhookEvent(event)) {
    throw new WebhookVerificationError("the body is not a webhook event");
  }
  return event;
}
