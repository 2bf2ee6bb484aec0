import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatConnection } from "../src/chat-connection.js";
import { NegotiateError } from "../src/negotiate.js";

/** Stands in for WebPubSubClient: connects to whatever URL getClientAccessUrl gives it. */
class FakeClient {
  static instances = [];

  constructor(credential, options) {
    this.credential = credential;
    this.options = options;
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
  const seen = { statuses: [], messages: [], errors: [], signIns: 0, negotiations: 0 };
  const chat = new ChatConnection({
    negotiate:
      negotiate ??
      (async () => {
        seen.negotiations += 1;
        return { url: `wss://service/${seen.negotiations}`, refreshInMs: 3_600_000 };
      }),
    createClient: (credential, options) => new FakeClient(credential, options),
    onStatus: (status) => seen.statuses.push(status),
    onMessage: (message) => seen.messages.push(message),
    onError: (error) => seen.errors.push(error),
    onSignInRequired: () => {
      seen.signIns += 1;
    },
  });
  return { chat, seen };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

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
