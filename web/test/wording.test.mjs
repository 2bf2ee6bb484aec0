import assert from "node:assert/strict";
import { test } from "node:test";
import { SendMessageError } from "@azure/web-pubsub-client";
import { GroupNotPermitted } from "../src/chat-connection.js";
import { describeAck, describeData, describeJoinFailure, describeSendFailure, sendHint } from "../src/wording.js";

const refused = (name, message) =>
  new SendMessageError("Failed to send message.", { ackId: 1, errorDetail: { name, message } });

test("a join refused by the page itself names the allowed groups", () => {
  const error = new GroupNotPermitted("secret", ["chat", "lobby"]);
  assert.equal(
    describeJoinFailure("secret", error, ["chat", "lobby"]),
    "You may not join secret. Groups you may join: chat, lobby.",
  );
});

test("a join the service refused says so, with the groups the token allows when known", () => {
  const error = refused("Forbidden", "The client does not have permission to join group 'x'.");
  assert.equal(
    describeJoinFailure("x", error, ["chat"]),
    "You may not join x: the service refused (The client does not have permission to join group 'x'.). " +
      "Groups you may join: chat.",
  );
  assert.equal(
    describeJoinFailure("x", error, null),
    "You may not join x: the service refused (The client does not have permission to join group 'x'.).",
  );
  assert.equal(
    describeJoinFailure("x", new Error("The connection is not connected"), null),
    "Could not join x (The connection is not connected).",
  );
});

test("sending failures say the message was not delivered", () => {
  assert.equal(
    describeSendFailure("chat", refused("Forbidden", "No permission to send to group 'chat'.")),
    "You may not send to chat: the service refused (No permission to send to group 'chat'.).",
  );
  assert.equal(
    describeSendFailure("chat", refused("InternalServerError", "Internal server error")),
    "Your message to chat was not delivered (Internal server error). Send it again.",
  );
});

test("an acknowledged message reads delivered, never an ack id", () => {
  assert.equal(describeAck({ ackId: 7, isDuplicated: false }), "✓ delivered");
  assert.equal(describeAck({ ackId: 7, isDuplicated: true }), "✓ delivered (the service had it already)");
});

test("the hint says why Send is off and what to do", () => {
  assert.equal(sendHint("connecting", undefined), "Connecting… You can join a group and send once connected.");
  assert.equal(sendHint("connected", undefined), "Join a group above to send messages to it.");
  assert.equal(sendHint("connected", "chat"), "");
  assert.equal(
    sendHint("reconnecting", "chat"),
    "Sending is paused until the connection is back; the page reconnects by itself.",
  );
  assert.equal(sendHint("signed out", undefined), "Sign in to send messages.");
});

test("message contents are shown as text", () => {
  assert.equal(describeData("hi"), "hi");
  assert.equal(describeData({ id: "1", text: "hello" }), "hello");
  assert.equal(describeData({ level: "warning" }), '{"level":"warning"}');
  assert.equal(describeData(new Uint8Array([0, 1, 2]).buffer), "(3 bytes of binary data)");
  assert.equal(describeData(new ArrayBuffer(1)), "(1 byte of binary data)");
});
