import { ProblemError, ScorerClient } from "@interview-scorer/client";

const scorer = new ScorerClient({
  baseUrl: "https://scorer.example.com",
  apiKey: process.env.SCORER_API_KEY,
});
try {
  const { body: evaluation, replayed } = await scorer.createEvaluation({
    candidate: { name: "Jane Doe", email: "jane@example.com" },
    position: { title: "Backend Engineer" },
    transcript: [{ question: "When would you not use asyncio?", answer: "For CPU-bound work." }],
  });
  console.log(evaluation.overall_score, evaluation.recommendation, replayed ? "(stored before)" : "");
} catch (error) {
  if (!(error instanceof ProblemError)) throw error;
  for (const { field, message } of error.errors) console.error(`${field}: ${message}`);
}
