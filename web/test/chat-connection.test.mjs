import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatConnection, GroupNotPermitted } from "../src/chat-connection.js";
import { NegotiateError } from "../src/negotiate.js";

/** Stands in for WebPubSubClient: connects to whatever URL getClientAccessUrl gives it. */
class FakeClient {
  static instances = [];

  constructor(credential, options, observer) {
    this.credential = credential;
    this.options = options;
    this.observer = observer;
    this.handlers = new Map();
    this.joined = [];
    this.stopped = false;
    this.failStarts = 0;
    FakeClient.instances.push(this);
  }

  on(event, handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
  }

  emit(event, args) {
    for (const handler of this.handlers.get(event) ?? []) {
      handler(args);
    }
  }

  async start() {
    this.url = await this.credential.getClientAccessUrl();
    if (this.failStarts > 0) {
      this.failStarts -= 1;
      throw new Error("Failed to start WebSocket: 1006");
    }
    this.emit("connected", { connectionId: `c-${this.url}`, userId: "alice" });
  }

  async joinGroup(group) {
    this.joined.push(group);
    return { ackId: this.joined.length, isDuplicated: false };
  }

  async sendToGroup() {
    return { ackId: 99, isDuplicated: false };
  }

  stop() {
    this.stopped = true;
    this.emit("stopped", {});
  }
}

function harness({ negotiate } = {}) {
  FakeClient.instances = [];
  const seen = { statuses: [], details: [], messages: [], errors: [], signIns: 0, negotiations: 0 };
  const chat = new ChatConnection({
    negotiate:
      negotiate ??
      (async () => {
        seen.negotiations += 1;
        return { url: `wss://service/${seen.negotiations}`, refreshInMs: 3_600_000 };
      }),
    createClient: (credential, options, observer) => new FakeClient(credential, options, observer),
    onStatus: (status, detail) => {
      if (seen.statuses.at(-1) !== status) {
        seen.statuses.push(status);
      }
      seen.details.push(detail);
    },
    onMessage: (message) => seen.messages.push(message),
    onError: (error) => seen.errors.push(error),
    onSignInRequired: () => {
      seen.signIns += 1;
    },
  });
  return { chat, seen };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
const settle0 = () => new Promise((resolve) => setImmediate(resolve));

test("leaves reconnect pacing to the page and keeps the official recovery and rejoin on", async () => {
  const { chat } = harness();
  chat.start();
  await settle();
  const { options } = FakeClient.instances[0];
  assert.equal(options.autoReconnect, true);
  assert.equal(options.autoRejoinGroups, true);
  assert.deepEqual(options.reconnectRetryOptions, { mode: "Fixed", retryDelayInMs: 0 });
  chat.stop();
});

test("connects on start and reports the status", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  assert.deepEqual(seen.statuses, ["connecting", "connected"]);
  assert.equal(FakeClient.instances[0].url, "wss://service/1");
  chat.stop();
});

test("a failed first connection is retried with a new negotiate", async () => {
  const { chat, seen } = harness();
  chat.start();
  FakeClient.instances[0].failStarts = 1;
  await new Promise((resolve) => setTimeout(resolve, 1100)); // backoff for one failure is under a second
  assert.equal(seen.negotiations, 2);
  assert.equal(FakeClient.instances[0].url, "wss://service/2");
  assert.equal(seen.statuses.at(-1), "connected");
  chat.stop();
});

test("refresh moves to a new connection in the same groups before dropping the old one", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  await chat.join("chat");
  const [old] = FakeClient.instances;
  await chat.refresh();
  const fresh = FakeClient.instances[1];
  assert.equal(fresh.url, "wss://service/2");
  assert.deepEqual(fresh.joined, ["chat"]);
  assert.equal(old.stopped, true);
  assert.equal(fresh.stopped, false);
  assert.equal(chat.link.client, fresh);
  assert.deepEqual(seen.statuses, ["connecting", "connected"]); // the user saw no change
  chat.stop();
});

test("a message that both connections receive during a refresh is shown once", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const copy = { group: "chat", fromUserId: "bob", data: { id: "m1", text: "hi" } };
  chat.received(copy);
  chat.received({ ...copy });
  chat.received({ group: "chat", fromUserId: "bob", data: "plain text has no id" });
  assert.deepEqual(
    seen.messages.map((message) => message.data),
    [{ id: "m1", text: "hi" }, "plain text has no id"],
  );
  chat.stop();
});

test("messages the server sends are told apart from users' messages", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const [client] = FakeClient.instances;
  client.emit("server-message", { message: { kind: "serverData", dataType: "text", data: "maintenance at six" } });
  client.emit("group-message", { message: { kind: "groupData", group: "chat", dataType: "text", data: "no sender" } });
  client.emit("group-message", {
    message: { kind: "groupData", group: "chat", fromUserId: "bob", dataType: "json", data: { id: "m2", text: "hi" } },
  });
  assert.deepEqual(
    seen.messages.map(({ kind, group, from, data }) => ({ kind, group, from, data })),
    [
      { kind: "server", group: undefined, from: undefined, data: "maintenance at six" },
      { kind: "server", group: "chat", from: undefined, data: "no sender" },
      { kind: "user", group: "chat", from: "bob", data: { id: "m2", text: "hi" } },
    ],
  );
  assert.ok(seen.messages.every((message) => message.at instanceof Date));
  chat.stop();
});

test("own messages are not shown again when the service echoes them", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const { id, acked } = chat.send("chat", "hello");
  assert.equal((await acked).ackId, 99);
  chat.received({ group: "chat", fromUserId: "alice", data: { id, text: "hello" } });
  assert.deepEqual(seen.messages, []);
  chat.stop();
});

test("401 from negotiate asks the user to sign in", async () => {
  const { chat, seen } = harness({
    negotiate: async () => {
      throw new NegotiateError(401, "not_signed_in", "Sign in first.");
    },
  });
  chat.start();
  await settle();
  assert.equal(seen.signIns, 1);
  assert.deepEqual(seen.statuses, ["connecting", "signed out"]);
  assert.deepEqual(seen.errors, []);
  chat.stop();
});

test("a closed socket reads reconnecting at once, and connected again once recovered", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const [client] = FakeClient.instances;
  client.observer.closed(1006); // the official client says nothing while it recovers
  assert.equal(seen.statuses.at(-1), "reconnecting");
  client.observer.recovered(); // nor when it has recovered
  assert.deepEqual(seen.statuses, ["connecting", "connected", "reconnecting", "connected"]);
  chat.stop();
});

test("sockets of a replaced connection closing do not change the status", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const [old] = FakeClient.instances;
  await chat.refresh();
  old.observer.closed(1000);
  chat.stop();
  FakeClient.instances[1].observer.closed(1000);
  assert.deepEqual(seen.statuses, ["connecting", "connected"]);
});

test("failed negotiations back off exponentially with jitter, and at least Retry-After", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  t.mock.method(Math, "random", () => 0.999999); // the top of each jittered range
  const calls = [];
  const { chat, seen } = harness({
    negotiate: async () => {
      calls.push(calls.length);
      throw calls.length === 3
        ? new NegotiateError(503, "dependency_unavailable", "Key Vault is unavailable.", { retryAfter: 9000 })
        : new NegotiateError(0, "unreachable", "The app could not be reached.");
    },
  });
  chat.start();
  const attemptsAfter = async (ms) => {
    t.mock.timers.tick(ms);
    for (let i = 0; i < 20; i += 1) {
      await settle0();
    }
    return calls.length;
  };
  assert.equal(await attemptsAfter(0), 1); // the first attempt does not wait
  // Waits before attempts 2, 3, 4: up to 1 s, 2 s, then the 9 s Retry-After over the 4 s backoff.
  assert.equal(await attemptsAfter(998), 1);
  assert.equal(await attemptsAfter(1), 2);
  assert.equal(await attemptsAfter(1998), 2);
  assert.equal(await attemptsAfter(1), 3);
  assert.equal(await attemptsAfter(8998), 3);
  assert.equal(await attemptsAfter(2), 4);
  // Told next to the status, once per different reason: the app is what failed, and it retries.
  assert.deepEqual(seen.details, [
    "",
    "Cannot reach the app: The app could not be reached. Check the network; retrying.",
    "The app cannot connect you for now (HTTP 503): Key Vault is unavailable. Retrying automatically.",
    "Cannot reach the app: The app could not be reached. Check the network; retrying.",
  ]);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.statuses, ["connecting"]);
  chat.stop();
  t.mock.timers.tick(60_000);
});

test("a group the token does not allow is refused at once, naming the groups it allows", async () => {
  const { chat } = harness({
    negotiate: async () => ({ url: "wss://service/1", refreshInMs: 3_600_000, joinable: ["lobby", "chat"] }),
  });
  chat.start();
  await settle();
  assert.deepEqual(chat.joinable, ["lobby", "chat"]);
  await assert.rejects(chat.join("secret"), (error) => {
    assert.ok(error instanceof GroupNotPermitted);
    assert.equal(error.message, "You may not join secret. Groups you may join: lobby, chat.");
    return true;
  });
  assert.deepEqual(FakeClient.instances[0].joined, []); // the service was not asked
  await chat.join("chat");
  assert.deepEqual(FakeClient.instances[0].joined, ["chat"]);
  chat.stop();
});

test("when the token does not say, the service decides", async () => {
  const { chat } = harness(); // negotiate gives no `joinable`
  chat.start();
  await settle();
  assert.equal(chat.joinable, null);
  await chat.join("anything");
  assert.deepEqual(FakeClient.instances[0].joined, ["anything"]);
  chat.stop();
});

test("an outage of the service is told as the service's, with the retry", async () => {
  const { chat, seen } = harness();
  chat.start();
  await settle();
  const [client] = FakeClient.instances;
  client.observer.closed(1006);
  client.observer.closed(1006); // a recovery attempt the service did not take
  client.emit("disconnected", { message: { message: "recovery failed" } });
  client.observer.closed(1006);
  assert.deepEqual(seen.statuses, ["connecting", "connected", "reconnecting"]);
  assert.deepEqual(seen.details.slice(2), [
    "Lost the connection to the Web PubSub service (close code 1006); reconnecting automatically.",
    "The Web PubSub service cannot be reached or refused the connection (close code 1006); retrying automatically.",
  ]);
  client.observer.recovered();
  assert.equal(seen.details.at(-1), "");
  chat.stop();
});
