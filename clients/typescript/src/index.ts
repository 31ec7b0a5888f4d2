export {
  ScorerClient,
  type Created,
  type CreateEvaluationOptions,
  type Evaluation,
  type EvaluationBatch,
  type EvaluationBatchCreate,
  type EvaluationCreate,
  type EvaluationPage,
  type ListEvaluationsQuery,
  type PollOptions,
  type RequestOptions,
  type ReviewCreate,
  type ScorerClientOptions,
} from "./client.js";
export { ProblemError, isProblem, retryAfterSeconds, type FieldError, type Problem } from "./problem.js";
export {
  DEFAULT_TOLERANCE_S,
  SIGNATURE_HEADER,
  WebhookVerificationError,
  receiveWebhook,
  verifyWebhookSignature,
  type BatchEvent,
  type EvaluationEvent,
  type VerifyOptions,
  type WebhookEvent,
} from "./webhooks.js";
export type { components, operations, paths, webhooks } from "./generated/openapi.js";
