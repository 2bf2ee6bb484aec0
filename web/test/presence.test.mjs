import assert from "node:assert/strict";
import { test } from "node:test";
import { describePresenceFailure, fetchPresence, PresenceError, PresenceWatch } from "../src/presence.js";

/** A fetch that answers from `pages` (keyed by the `after` parameter) and records every URL. */
function presenceRoute(pages, { status = 200 } = {}) {
  const urls = [];
  const fetchImpl = async (url) => {
    urls.push(new URL(url));
    const after = new URL(url).searchParams.get("after") ?? "";
    return new Response(JSON.stringify(pages[after]), { status });
  };
  return { fetchImpl, urls };
}

test("follows next until the last page and sums up every user", async () => {
  const { fetchImpl, urls } = presenceRoute({
    "": { users: [{ userId: "alice", connections: 2 }], next: "alice", connections: 3, truncated: false },
    alice: { users: [{ userId: "bob", connections: 1 }], next: null, connections: 3, truncated: false },
  });
  const snapshot = await fetchPresence("http://app/api/client", "room 1", { userId: "alice", fetchImpl, pageSize: 1 });
  assert.deepEqual(snapshot, {
    users: [
      { userId: "alice", connections: 2 },
      { userId: "bob", connections: 1 },
    ],
    connections: 3,
    truncated: false,
  });
  assert.deepEqual(
    urls.map((url) => url.pathname),
    ["/api/groups/room%201/users", "/api/groups/room%201/users"],
  );
  assert.deepEqual(Object.fromEntries(urls[0].searchParams), { top: "1", userId: "alice" });
  assert.deepEqual(Object.fromEntries(urls[1].searchParams), { top: "1", after: "alice", userId: "alice" });
});

test("stops after maxPages and says the list is incomplete", async () => {
  const { fetchImpl, urls } = presenceRoute({
    "": { users: [{ userId: "a", connections: 1 }], next: "a", connections: 9, truncated: false },
    a: { users: [{ userId: "b", connections: 1 }], next: "b", connections: 9, truncated: false },
  });
  const snapshot = await fetchPresence("http://app/api/client", "g", { fetchImpl, maxPages: 2 });
  assert.equal(snapshot.truncated, true);
  assert.equal(snapshot.users.length, 2);
  assert.equal(urls.length, 2);
  assert.equal(urls[0].searchParams.has("userId"), false); // only anonymous negotiate sends it
});

test("passes on the app's own truncation", async () => {
  const { fetchImpl } = presenceRoute({ "": { users: [], next: null, connections: 10_000, truncated: true } });
  assert.equal((await fetchPresence("http://app/api/client", "g", { fetchImpl })).truncated, true);
});

test("403 is a permanent refusal with the app's message", async () => {
  const { fetchImpl } = presenceRoute(
    { "": { error: { code: "group_not_permitted", message: "User 'a' may not use group 'x'." } } },
    { status: 403 },
  );
  await assert.rejects(fetchPresence("http://app/api/client", "x", { fetchImpl }), (error) => {
    assert.ok(error instanceof PresenceError);
    assert.equal(error.status, 403);
    assert.equal(error.code, "group_not_permitted");
    assert.equal(error.permanent, true);
    assert.equal(describePresenceFailure(error, "x"), "You may not see who is in x: User 'a' may not use group 'x'.");
    return true;
  });
});

test("an unreachable app is not permanent and is told as such", async () => {
  const fetchImpl = async () => {
    throw new TypeError("Failed to fetch");
  };
  await assert.rejects(fetchPresence("http://app/api/client", "g", { fetchImpl }), (error) => {
    assert.equal(error.status, 0);
    assert.equal(error.permanent, false);
    assert.match(describePresenceFailure(error, "g"), /^Cannot reach the app to see who is online .*; retrying\.$/);
    return true;
  });
});

/** PresenceWatch on fake timers; `answers` is what each load returns, in order (Error: it throws). */
function watcher(t, answers, options = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const seen = { loads: [], updates: [], errors: [] };
  const watch = new PresenceWatch({
    load: async (group) => {
      seen.loads.push(group);
      const answer = answers.length > 1 ? answers.shift() : answers[0];
      if (answer instanceof Error) {
        throw answer;
      }
      return answer;
    },
    onUpdate: (group, snapshot) => seen.updates.push([group, snapshot.users.map((user) => user.userId)]),
    onError: (group, error) => seen.errors.push([group, error.status]),
    pollMs: 5000,
    cacheMs: 2000,
    ...options,
  });
  const after = async (ms) => {
    t.mock.timers.tick(ms);
    for (let i = 0; i < 10; i += 1) {
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  return { watch, seen, after };
}

const users = (...names) => ({ users: names.map((userId) => ({ userId, connections: 1 })), connections: names.length });

test("asks at once when watching, then every poll interval", async (t) => {
  const { watch, seen, after } = watcher(t, [users("alice")]);
  watch.watch("room");
  await after(0);
  assert.equal(seen.loads.length, 1);
  await after(4999);
  assert.equal(seen.loads.length, 1);
  await after(1);
  assert.equal(seen.loads.length, 2);
  watch.stop();
  await after(60_000);
  assert.equal(seen.loads.length, 2);
});

test("someone missing from the list is asked for again once the app's cache has expired", async (t) => {
  // The first answer is the app's cached one from before alice joined.
  const { watch, seen, after } = watcher(t, [users("bob"), users("alice", "bob")]);
  watch.watch("room");
  watch.expect("alice");
  await after(0);
  assert.deepEqual(seen.updates, [["room", ["bob"]]]);
  await after(2249);
  assert.equal(seen.loads.length, 1);
  await after(1);
  assert.deepEqual(seen.updates.at(-1), ["room", ["alice", "bob"]]);
  watch.expect("alice"); // shown now: nothing to ask
  await after(4999);
  assert.equal(seen.loads.length, 2);
  watch.stop();
});

test("a message from an unknown user asks no sooner than the cache allows, and only once", async (t) => {
  const { watch, seen, after } = watcher(t, [users("alice")]);
  watch.watch("room");
  await after(0);
  await after(1000);
  watch.expect("carol");
  watch.expect("carol");
  await after(999);
  assert.equal(seen.loads.length, 1);
  await after(1);
  assert.equal(seen.loads.length, 2); // two seconds after the last answer
  await after(2250);
  assert.equal(seen.loads.length, 3); // one retry in case that answer was cached too
  await after(4999);
  assert.equal(seen.loads.length, 3); // then back to polling: carol is not in the group
  watch.stop();
});

test("a 403 is reported and ends the polling; another group starts afresh", async (t) => {
  const { watch, seen, after } = watcher(t, [new PresenceError(403, "group_not_permitted", "no"), users("alice")]);
  watch.watch("secret");
  await after(0);
  assert.deepEqual(seen.errors, [["secret", 403]]);
  watch.expect("bob");
  await after(30_000);
  assert.equal(seen.loads.length, 1);
  watch.watch("room");
  await after(0);
  assert.deepEqual(seen.updates, [["room", ["alice"]]]);
});

test("a failure that may pass is reported and polling goes on", async (t) => {
  const { watch, seen, after } = watcher(t, [new PresenceError(0, "unreachable", "down"), users("alice")]);
  watch.watch("room");
  await after(0);
  assert.deepEqual(seen.errors, [["room", 0]]);
  await after(5000);
  assert.deepEqual(seen.updates, [["room", ["alice"]]]);
  watch.stop();
});

test("no polling while the page is hidden", async (t) => {
  let hidden = false;
  const { watch, seen, after } = watcher(t, [users("alice")], { isHidden: () => hidden });
  watch.watch("room");
  await after(0);
  hidden = true;
  await after(20_000);
  assert.equal(seen.loads.length, 1);
  hidden = false;
  await after(5000);
  assert.equal(seen.loads.length, 2);
  watch.stop();
});

test("an answer for the group the user left is not shown", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const pending = [];
  const updates = [];
  const watch = new PresenceWatch({
    load: (group) => new Promise((resolve) => pending.push(() => resolve(users(group)))),
    onUpdate: (group) => updates.push(group),
  });
  watch.watch("first");
  watch.watch("second");
  assert.equal(pending.length, 2); // the new group does not wait for the old one's answer
  pending[0]();
  pending[1]();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(updates, ["second"]);
  watch.stop();
});
