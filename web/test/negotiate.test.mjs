import assert from "node:assert/strict";
import { test } from "node:test";
import { describeNegotiateFailure, joinableGroups, negotiate, NegotiateError } from "../src/negotiate.js";

function answer(status, body, headers = {}) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, init });
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status, headers });
  };
  return { fetchImpl, calls };
}

test("returns the URL and schedules the refresh on the server's clock", async () => {
  // The server says it is 00:00:00 and the token lasts a minute; the local clock does not matter.
  const { fetchImpl, calls } = answer(
    200,
    { url: "wss://x.webpubsub.azure.com/client/hubs/chat?access_token=t", expiresOn: "2030-01-01T00:01:00Z" },
    { Date: "Tue, 01 Jan 2030 00:00:00 GMT" },
  );
  const access = await negotiate("http://localhost/api/negotiate?userId=a", { fetchImpl });
  assert.equal(access.url, "wss://x.webpubsub.azure.com/client/hubs/chat?access_token=t");
  assert.equal(access.expiresOn.toISOString(), "2030-01-01T00:01:00.000Z");
  assert.equal(access.refreshInMs, 45_000);
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(calls[0].init.cache, "no-store");
});

test("401 asks for sign-in and keeps the app's error code", async () => {
  const { fetchImpl } = answer(401, { error: { code: "not_signed_in", message: "Sign in first." } });
  await assert.rejects(negotiate("/api/negotiate", { fetchImpl }), (error) => {
    assert.ok(error instanceof NegotiateError);
    assert.equal(error.needsSignIn, true);
    assert.equal(error.code, "not_signed_in");
    assert.equal(error.message, "Sign in first.");
    return true;
  });
});

test("503 carries Retry-After", async () => {
  const { fetchImpl } = answer(503, { error: { code: "dependency_unavailable", message: "x" } }, { "Retry-After": "7" });
  await assert.rejects(negotiate("/api/negotiate", { fetchImpl }), (error) => {
    assert.equal(error.needsSignIn, false);
    assert.equal(error.retryAfterMs, 7000);
    return true;
  });
});

test("a non-JSON error page still gives a readable error", async () => {
  const { fetchImpl } = answer(502, "<html>Bad gateway</html>");
  await assert.rejects(negotiate("/api/negotiate", { fetchImpl }), { status: 502, code: "http_502" });
});

test("a 200 without a WebSocket URL is refused", async () => {
  const { fetchImpl } = answer(200, { url: "https://example.test", expiresOn: "2030-01-01T00:01:00Z" });
  await assert.rejects(negotiate("/api/negotiate", { fetchImpl }), { code: "invalid_response" });
});

test("an unreachable app is status 0", async () => {
  const fetchImpl = async () => {
    throw new TypeError("Failed to fetch");
  };
  await assert.rejects(negotiate("/api/negotiate", { fetchImpl }), { status: 0, code: "unreachable" });
});

test("each negotiate failure is told in words, with the app's reason and what happens next", () => {
  const told = (status, message) => describeNegotiateFailure(new NegotiateError(status, "code", message));
  assert.equal(told(0, "The app could not be reached (Failed to fetch)."), "Cannot reach the app: The app could not be reached (Failed to fetch). Check the network; retrying.");
  assert.equal(told(401, "Sign in first."), "You are not signed in (HTTP 401): Sign in first.");
  assert.equal(
    told(403, "Negotiate answered HTTP 403."),
    "You are not allowed to chat here (HTTP 403): Negotiate answered HTTP 403. Retrying, in case access is granted.",
  );
  assert.equal(
    told(503, "Azure Key Vault is unavailable; retry later."),
    "The app cannot connect you for now (HTTP 503): Azure Key Vault is unavailable; retry later. Retrying automatically.",
  );
  assert.match(told(500, "An unexpected error occurred."), /^The app failed to connect you \(HTTP 500\): An unexpected error occurred\. Retrying/);
  assert.equal(told(400, "The userId query parameter is required."), "The app refused to connect you (HTTP 400): The userId query parameter is required.");
});

/** A client access URL whose token carries `claims` (unsigned: the page never checks signatures). */
function accessUrl(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `wss://x.webpubsub.azure.com/client/hubs/chat?access_token=${part({ alg: "HS256" })}.${part(claims)}.sig`;
}

test("the token's roles tell which groups the user may join", () => {
  const url = accessUrl({
    sub: "alice",
    role: [
      "webpubsub.joinLeaveGroup.chat",
      "webpubsub.sendToGroup.chat",
      "webpubsub.joinLeaveGroup.salle à manger",
      "webpubsub.sendToGroup.salle à manger",
    ],
  });
  assert.deepEqual(joinableGroups(url), ["chat", "salle à manger"]);
  assert.deepEqual(joinableGroups(accessUrl({ role: "webpubsub.joinLeaveGroup.one" })), ["one"]);
});

test("a token that does not name groups leaves the decision to the service", () => {
  assert.equal(joinableGroups(accessUrl({ role: ["webpubsub.joinLeaveGroup"] })), null); // any group
  assert.equal(joinableGroups(accessUrl({ role: ["webpubsub.sendToGroup"] })), null);
  assert.equal(joinableGroups(accessUrl({ sub: "alice" })), null);
  assert.equal(joinableGroups("wss://x/client/hubs/chat?access_token=not-a-jwt"), null);
  assert.equal(joinableGroups("wss://x/client/hubs/chat"), null);
});

test("negotiate passes on what the token allows", async () => {
  const url = accessUrl({ role: ["webpubsub.joinLeaveGroup.chat"] });
  const { fetchImpl } = answer(200, { url, expiresOn: "2030-01-01T00:01:00Z" });
  assert.deepEqual((await negotiate("/api/negotiate", { fetchImpl })).joinable, ["chat"]);
});
