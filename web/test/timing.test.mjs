import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay, refreshDelay, retryAfterMs } from "../src/timing.js";

const highest = () => 0.999999;

test("backoff doubles per attempt up to the cap", () => {
  const ceilings = [0, 1, 2, 3, 6, 7, 20].map((attempt) => backoffDelay(attempt, { random: highest }));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 29999, 29999, 29999]);
});

test("backoff is jittered over the whole range", () => {
  assert.equal(backoffDelay(4, { random: () => 0 }), 0);
  assert.equal(backoffDelay(4, { random: () => 0.5 }), 4000);
});

test("refresh leaves a quarter of the lifetime, at most five minutes", () => {
  const issued = Date.parse("2030-01-01T00:00:00Z");
  assert.equal(refreshDelay(issued + 60_000, issued), 45_000);
  assert.equal(refreshDelay(issued + 3_600_000, issued), 3_300_000);
});

test("an expired or unreadable expiry refreshes at once", () => {
  assert.equal(refreshDelay(1_000, 2_000), 0);
  assert.equal(refreshDelay(Number.NaN, 2_000), 0);
});

test("Retry-After in seconds or as a date", () => {
  const now = Date.parse("2030-01-01T00:00:00Z");
  assert.equal(retryAfterMs("5", now), 5000);
  assert.equal(retryAfterMs("Tue, 01 Jan 2030 00:00:07 GMT", now), 7000);
  assert.equal(retryAfterMs("soon", now), 0);
  assert.equal(retryAfterMs(null, now), 0);
});
