// A Worker that serves the D1 part of Cloudflare's REST API (v4 envelope) over real D1
// bindings, so that the Go D1 client runs against Cloudflare's own engine (workerd and its
// D1 storage, authorizer and limits) instead of our fake. Started by serve.mjs through
// miniflare; see workerdtest.go.
//
//   POST /client/v4/accounts/{account}/d1/database/{db}/raw    rows as arrays + columns
//   POST /client/v4/accounts/{account}/d1/database/{db}/query  rows as objects
//   GET  .../time_travel/bookmark                                the database's current bookmark
//   POST .../time_travel/restore                                 refused (501): workerd cannot
//
// Body: {"sql": "...", "params": [...]} or {"batch": [{"sql", "params"}, ...]}. Every request
// runs in one transaction, as on D1. Each database id ("db-0", "db-1", ...) is its own D1
// database (binding DB0, DB1, ...), so every test gets a fresh one.
//
// The statements go to D1 through the binding's own wire request (the one env.DB.batch()
// sends: POST /query?resultsFormat=...), not through batch(): batch() turns rows into
// objects, which loses the column list of an empty result, duplicate column names and the
// column order of numeric names; the REST /raw endpoint returns rows and columns as D1
// produced them, and so does this Worker.

const envelope = (status, body) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });

const fail = (status, code, message) =>
  envelope(status, { success: false, errors: [{ code, message }], messages: [], result: null });

const ok = (result) => envelope(200, { success: true, errors: [], messages: [], result });

const route = /^\/client\/v4\/accounts\/([^/]+)\/d1\/database\/([^/]+)\/(raw|query|time_travel\/bookmark|time_travel\/restore)$/;

// The header in which D1 answers with the database's bookmark after a request.
const bookmarkHeader = "x-cf-d1-session-commit-token";

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = route.exec(url.pathname);
    if (!m) {
      return fail(404, 7000, "No route for that URI");
    }
    if (request.headers.get("authorization") !== `Bearer ${env.TOKEN}`) {
      return fail(403, 10000, "Authentication error");
    }
    const [, account, dbID, endpoint] = m;
    if (decodeURIComponent(account) !== env.ACCOUNT_ID) {
      return fail(404, 7003, `Could not route to ${url.pathname}, perhaps your object identifier is invalid?`);
    }
    const wantMethod = endpoint === "time_travel/bookmark" ? "GET" : "POST";
    if (request.method !== wantMethod) {
      return fail(405, 10405, "Method not allowed");
    }
    const binding = /^db-(\d+)$/.exec(decodeURIComponent(dbID));
    const db = binding && env[`DB${binding[1]}`];
    if (!db) {
      return fail(404, 7404, `The database ${decodeURIComponent(dbID)} could not be found`);
    }
    // The binding's transport to its database (see above); fail loudly when a new
    // workerd changes it rather than testing something else.
    if (!db.fetcher || typeof db.fetcher.fetch !== "function") {
      return fail(500, 7500, "workerdtest: the D1 binding has no fetcher (workerd changed?)");
    }

    if (endpoint === "time_travel/bookmark") {
      // D1 reports the bookmark after every request; a read-only statement asks for it.
      const resp = await db.fetcher.fetch("http://d1/query?resultsFormat=NONE", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify([{ sql: "SELECT 1", params: [] }]),
      });
      await resp.arrayBuffer();
      const bookmark = resp.headers.get(bookmarkHeader);
      if (!bookmark) {
        return fail(500, 7500, "workerdtest: D1 answered without a bookmark");
      }
      return ok({ bookmark });
    }
    if (endpoint === "time_travel/restore") {
      // workerd restores a bookmark only when a Durable Object restarts, which the
      // binding cannot ask for: refuse instead of pretending.
      return fail(501, 7501, "workerdtest: Time Travel restore is not available on workerd");
    }

    let body;
    try {
      body = await request.json();
    } catch (e) {
      return fail(400, 7400, `Invalid JSON body: ${e.message}`);
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return fail(400, 7400, "Request body must be a JSON object");
    }
    let statements;
    if (body.batch !== undefined && body.sql !== undefined) {
      return fail(400, 7400, 'Request body has both "sql" and "batch"');
    }
    if (body.batch !== undefined) {
      if (!Array.isArray(body.batch)) {
        return fail(400, 7400, "batch must be an array");
      }
      statements = body.batch;
    } else if (body.sql !== undefined) {
      statements = [{ sql: body.sql, params: body.params }];
    } else {
      return fail(400, 7400, 'Request body needs "sql" or "batch"');
    }
    for (const [i, st] of statements.entries()) {
      if (st === null || typeof st !== "object" || typeof st.sql !== "string") {
        return fail(400, 7400, `statement ${i + 1}: sql must be a string`);
      }
      if (st.params !== undefined && st.params !== null && !Array.isArray(st.params)) {
        return fail(400, 7400, `statement ${i + 1}: params must be an array`);
      }
    }

    const format = endpoint === "raw" ? "ROWS_AND_COLUMNS" : "ARRAY_OF_OBJECTS";
    const resp = await db.fetcher.fetch(`http://d1/query?resultsFormat=${format}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(statements.map((st) => ({ sql: st.sql, params: st.params ?? [] }))),
    });
    const text = await resp.text();
    let answer;
    try {
      answer = JSON.parse(text);
    } catch {
      return fail(500, 7500, `D1 answered HTTP ${resp.status} with a body that is not JSON: ${text.slice(0, 500)}`);
    }
    // D1 answers an array of per-statement results, or one {success: false, error} for
    // the whole (rolled back) request.
    if (!Array.isArray(answer)) {
      if (answer && answer.success === false) {
        return fail(400, 7500, String(answer.error));
      }
      return fail(500, 7500, `unexpected D1 answer: ${text.slice(0, 500)}`);
    }
    const failed = answer.find((r) => r.success === false || r.error);
    if (failed) {
      return fail(400, 7500, String(failed.error));
    }
    return ok(
      answer.map((r) => ({
        results: r.results ?? (format === "ROWS_AND_COLUMNS" ? { columns: [], rows: [] } : []),
        success: true,
        meta: r.meta ?? {},
      })),
    );
  },
};
