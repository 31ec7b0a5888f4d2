import type { EvaluationCreate } from "../src/index.js";

/** A valid interview; `tag` makes it distinct (and so scored anew, not from the cache). */
export function interview(tag: string, changes: Partial<EvaluationCreate> = {}): EvaluationCreate {
  return {
    candidate: { name: "Jane Doe", email: "jane@example.com", external_id: `ts-${tag}` },
    position: { title: "Backend Engineer", level: "senior" },
    transcript: [
      {
        question: "When would you not use asyncio?",
        answer: `For CPU-bound work the event loop gives nothing; I would use processes (${tag}).`,
      },
    ],
    notify: { candidate: false },
    ...changes,
  };
}
