// The demo chat page: wires ChatConnection to the elements of shared/client/index.html.

import { ChatConnection, randomId } from "./chat-connection.js";
import { describeNegotiateFailure, NegotiateError } from "./negotiate.js";
import { describePresenceFailure, fetchPresence, PresenceWatch } from "./presence.js";
import {
  describeAck,
  describeData,
  describeJoinFailure,
  describeSendFailure,
  plural,
  sendHint,
  shortTime,
} from "./wording.js";

const byTestId = (name) => document.querySelector(`[data-testid="${name}"]`);
const status = byTestId("status");
const statusDetail = byTestId("status-detail");
const identity = byTestId("identity");
const signIn = byTestId("sign-in");
const errorBox = byTestId("error");
const groupInput = byTestId("group-input");
const joinButton = byTestId("join-button");
const messageInput = byTestId("message-input");
const sendButton = byTestId("send-button");
const sendHintText = byTestId("send-hint");
const messages = byTestId("messages");
const activity = byTestId("activity");
const presenceTitle = byTestId("presence-title");
const presenceSummary = byTestId("presence-summary");
const presenceList = byTestId("presence-list");

const MAX_SHOWN_TEXT = 2000;
const negotiateAuth = document.body.dataset.negotiateAuth;
let currentGroup;
let joining = false;

/** NEGOTIATE_AUTH=anonymous (local development only): the page names its user; one id per tab. */
function localUserId() {
  try {
    const saved = sessionStorage.getItem("chat-user-id");
    if (saved) {
      return saved;
    }
    const created = `user-${randomId().slice(0, 8)}`;
    sessionStorage.setItem("chat-user-id", created);
    return created;
  } catch {
    return `user-${randomId().slice(0, 8)}`; // storage disabled: a new id per load
  }
}

function negotiateUrl() {
  const url = new URL("negotiate", location.href); // /api/client -> /api/negotiate
  if (negotiateAuth === "anonymous") {
    url.searchParams.set("userId", localUserId());
  }
  return url.toString();
}

function showPresence(group, { users, connections, truncated }) {
  presenceTitle.textContent = `Online in ${group}`;
  presenceSummary.className = "";
  presenceSummary.textContent =
    `${plural(users.length, "person", "people")}, ${plural(connections, "connection", "connections")}` +
    (truncated ? " (the group is too large to list everyone)" : "");
  const items = users.map(({ userId, connections: count }) => {
    const item = document.createElement("li");
    item.dataset.userId = userId;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = userId;
    if (userId === chat.userId) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = " (you)";
      name.append(you);
    }
    const where = document.createElement("span");
    where.className = "connections";
    where.textContent = ` ${plural(count, "connection", "connections")}`;
    item.append(name, where);
    return item;
  });
  presenceList.replaceChildren(...items);
}

function showPresenceFailure(group, error) {
  presenceTitle.textContent = `Online in ${group}`;
  presenceSummary.className = "error";
  presenceSummary.textContent = describePresenceFailure(error, group);
  if (error.permanent) {
    presenceList.replaceChildren();
  }
}

const presence = new PresenceWatch({
  load: (group) =>
    fetchPresence(location.href, group, { userId: negotiateAuth === "anonymous" ? localUserId() : undefined }),
  onUpdate: showPresence,
  onError: showPresenceFailure,
  isHidden: () => document.hidden,
});

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  activity.prepend(item);
  while (activity.children.length > 100) {
    activity.lastElementChild.remove();
  }
}

/** Show a problem once: the same text again (each retry of a refused negotiate) changes nothing. */
function showError(error) {
  const text = error instanceof Error ? error.message : String(error);
  if (!errorBox.hidden && errorBox.textContent === text) {
    return;
  }
  errorBox.textContent = text;
  errorBox.hidden = false;
  log(`Error: ${text}`);
}

function hideError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

/** Join and Send are enabled only when they can work; the hint says what to do otherwise. */
function updateControls() {
  const connected = chat.status === "connected";
  joinButton.disabled = !connected || joining;
  sendButton.disabled = !connected || currentGroup === undefined;
  const hint = sendHint(chat.status, currentGroup);
  sendHintText.textContent = hint;
  sendHintText.hidden = hint === "";
  messageInput.placeholder = currentGroup === undefined ? "Join a group first" : `Message to ${currentGroup}`;
}

function timeOf(date) {
  const time = document.createElement("time");
  time.dateTime = date.toISOString();
  time.title = date.toLocaleString();
  time.textContent = shortTime(date);
  return time;
}

/** One line of the conversation: a user's message (yours: `state` tracks its delivery) or the server's. */
function addMessage({ id, kind, group, from, data, at }, state) {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  if (id) {
    item.dataset.messageId = id;
  }
  if (state) {
    item.dataset.state = state;
  }
  const sender = document.createElement("strong");
  sender.className = "sender";
  const where = document.createElement("span");
  where.className = "group";
  if (kind === "server") {
    sender.textContent = "Server";
    item.title = "Sent by the app's server, not by a user";
    where.textContent = group === undefined ? " " : ` to ${group}: `;
  } else {
    sender.textContent = from;
    where.textContent = ` in ${group}: `;
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = describeData(data).slice(0, MAX_SHOWN_TEXT);
  item.append(timeOf(at), " ", sender, where, text);
  if (state) {
    const ack = document.createElement("span");
    ack.className = "ack";
    ack.textContent = " sending…";
    item.append(ack);
  }
  messages.append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function setAck(item, state, text) {
  item.dataset.state = state;
  item.querySelector(".ack").textContent = ` ${text}`;
}

const chat = new ChatConnection({
  negotiateUrl: negotiateUrl(),
  onStatus(value, detail) {
    if (status.textContent !== value) {
      status.textContent = value;
      status.dataset.state = value.replace(" ", "-");
    }
    if (detail !== statusDetail.textContent) {
      statusDetail.textContent = detail;
      statusDetail.hidden = detail === "";
      if (detail) {
        log(detail);
      }
    }
    updateControls();
    if (value === "connected") {
      identity.textContent = `You are ${chat.userId}.`;
      hideError();
      signIn.hidden = true;
      void presence.refresh(); // back after an outage: who is here now
    }
  },
  onMessage(message) {
    addMessage(message);
    if (message.kind === "user" && message.group === currentGroup) {
      presence.expect(message.from); // someone the list does not show yet (or no longer shows)
    }
  },
  onNotice(text) {
    log(text);
  },
  onError(error) {
    showError(error instanceof NegotiateError ? new Error(describeNegotiateFailure(error)) : error);
  },
  onSignInRequired(error) {
    if (negotiateAuth === "appservice") {
      if (signIn.hidden) {
        const link = signIn.querySelector("a");
        link.href = `/.auth/login/aad?post_login_redirect_uri=${location.pathname}`;
        signIn.hidden = false;
        log("Sign in to chat.");
      }
    } else {
      showError(
        new Error(
          `${describeNegotiateFailure(error)} This page cannot sign in by itself: the app expects a caller ` +
            `it can identify (NEGOTIATE_AUTH=${negotiateAuth}). Use a client that signs you in; see docs/clients.md.`,
        ),
      );
    }
  },
});

byTestId("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const group = groupInput.value.trim();
  if (!group) {
    return;
  }
  joining = true;
  updateControls();
  try {
    await chat.join(group);
    currentGroup = group;
    hideError();
    presence.watch(group);
    presence.expect(chat.userId);
    log(`Joined group ${group}.`);
  } catch (error) {
    showError(new Error(describeJoinFailure(group, error, chat.joinable)));
  } finally {
    joining = false;
    updateControls();
  }
});

byTestId("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = messageInput.value;
  if (!text.trim() || currentGroup === undefined) {
    return;
  }
  messageInput.value = "";
  const { id, acked } = chat.send(currentGroup, text);
  const group = currentGroup;
  const item = addMessage({ id, kind: "own", group, from: "you", data: { text }, at: new Date() }, "pending");
  try {
    setAck(item, "acked", describeAck(await acked));
  } catch (error) {
    setAck(item, "failed", "✗ not delivered");
    showError(new Error(describeSendFailure(group, error)));
  }
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    void presence.refresh();
  }
});

// Leaving: a normal close lets the service end the connection now instead of holding it for recovery.
addEventListener("pagehide", () => chat.stop());
addEventListener("pageshow", (event) => {
  if (event.persisted) {
    location.reload(); // restored from the back/forward cache with a stopped connection
  }
});

updateControls();
chat.start();
