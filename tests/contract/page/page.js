// What a recruiting frontend does: call the API on another origin with fetch and read what
// it needs from the answer. Each call resolves to what JavaScript could read, or to the error
// fetch threw (as it does when CORS refuses the origin).
window.scorer = {
  async call(base, path, { method = "GET", key, body, headers = {} } = {}) {
    try {
      const response = await fetch(base + path, {
        method,
        headers: {
          ...(key ? { Authorization: `Bearer ${key}` } : {}),
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const read = (name) => response.headers.get(name);
      const text = await response.text();
      return {
        status: response.status,
        headers: {
          contentType: read("Content-Type"),
          location: read("Location"),
          replayed: read("Idempotent-Replayed"),
          retryAfter: read("Retry-After"),
          preferenceApplied: read("Preference-Applied"),
          requestId: read("X-Request-ID"),
        },
        body: text ? JSON.parse(text) : null,
      };
    } catch (error) {
      return { error: `${error.name}: ${error.message}` };
    }
  },
};
