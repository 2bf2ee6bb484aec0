// A chat connection that stays up: negotiate, connect, rejoin, refresh before the token expires.
//
// The official client (@azure/web-pubsub-client) already recovers a dropped reliable connection
// (same URL, up to 30 s), reconnects after a 1008 close or a failed recovery by asking for a new
// URL, and rejoins the groups it joined. This module adds what it leaves to the application:
//  - every URL comes from a fresh negotiate (the client calls getClientAccessUrl on every
//    (re)connect), so a URL is never reused after it expired or after a 401 at connect;
//  - exponential backoff with full jitter before each retry, at least the server's Retry-After;
//  - a first connection that fails is retried too (the client's own loop starts only after one
//    succeeded);
//  - the status reads "reconnecting" as soon as the socket closes, and "connected" once the same
//    connection is recovered: the client emits nothing for either, so the page watches its sockets;
//  - before expiresOn, a second connection is opened and joined to the same groups, and only then
//    does it replace the first ("make before break"), so the user sees no gap. Messages carry an
//    id so the copies both connections receive during the overlap are shown once.

import { WebPubSubClient } from "@azure/web-pubsub-client";
import { describeNegotiateFailure, negotiate as negotiateOnce } from "./negotiate.js";
import { backoffDelay } from "./timing.js";

const SEEN_MESSAGE_LIMIT = 1000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// A disposed client may still be inside its reconnect loop, which client.stop() does not end
// while no socket is open; handing it a promise that never settles parks that loop for good.
const parkForever = () => new Promise(() => {});

function clientOptions() {
  return {
    autoReconnect: true,
    autoRejoinGroups: true,
    // The backoff lives in Link.clientAccessUrl (exponential with jitter, before each negotiate),
    // so the client's own fixed pause between reconnect attempts is switched off.
    reconnectRetryOptions: { mode: "Fixed", retryDelayInMs: 0 },
  };
}

/** WebPubSubClient that also reports what it does not emit events for: a socket closing, and a
 * dropped connection recovered (it emits nothing from the drop until recovery fails, up to 30 s).
 *
 * `observer.closed(code)` runs when any socket closes; `observer.recovered()` when a recovery
 * socket (its URL names `awps_connection_id`) gets its first message, the service's `connected`,
 * which a refused recovery (close 1008) never sends. It overrides the factory method the client
 * opens each socket with (`_getWebSocketClientFactory` in the locked 1.0.x), so nothing else of
 * the client changes; the browser tests fail should an upgrade stop calling it.
 */
class ObservedWebPubSubClient extends WebPubSubClient {
  constructor(credential, options, observer) {
    super(credential, options);
    this.observer = observer;
  }

  _getWebSocketClientFactory() {
    const factory = super._getWebSocketClientFactory();
    return {
      create: (uri, protocol) => {
        const socket = factory.create(uri, protocol);
        const onclose = socket.onclose.bind(socket);
        socket.onclose = (handler) =>
          onclose((code, reason) => {
            this.observer.closed(code);
            handler(code, reason);
          });
        if (new URL(uri).searchParams.has("awps_connection_id")) {
          const onmessage = socket.onmessage.bind(socket);
          let first = true;
          socket.onmessage = (handler) =>
            onmessage((data) => {
              handler(data);
              if (first) {
                first = false;
                this.observer.recovered();
              }
            });
        }
        return socket;
      },
    };
  }
}

/** The page refused a join by itself: the token says the group is not one of the user's. */
export class GroupNotPermitted extends Error {
  constructor(group, permitted) {
    super(`You may not join ${group}. Groups you may join: ${permitted.join(", ")}.`);
    this.name = "GroupNotPermitted";
    this.group = group;
    this.permitted = permitted;
  }
}

const serviceLost = (reason) =>
  `Lost the connection to the Web PubSub service${reason ? ` (${reason})` : ""}; reconnecting automatically.`;

export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** One WebPubSubClient and the negotiate bookkeeping of its connection. */
class Link {
  constructor(chat) {
    this.chat = chat;
    this.failures = 0; // attempts since the last successful connection
    this.hasConnected = false;
    this.retryAfterMs = 0;
    this.refreshTimer = undefined;
    this.disposed = false;
    this.joined = new Set();
    this.joinable = null; // the groups its token lets it join (null: not known)
    this.client = chat.createClient({ getClientAccessUrl: () => this.clientAccessUrl() }, clientOptions(), {
      closed: (code) => chat.socketClosed(this, code),
      recovered: () => chat.recovered(this),
    });
  }

  async clientAccessUrl() {
    if (this.disposed) {
      return parkForever();
    }
    if (this.failures > 0 || this.hasConnected) {
      await sleep(Math.max(backoffDelay(this.failures), this.retryAfterMs));
      if (this.disposed) {
        return parkForever();
      }
    }
    this.failures += 1;
    this.retryAfterMs = 0;
    try {
      const access = await this.chat.negotiate();
      this.joinable = access.joinable ?? null;
      this.chat.scheduleRefresh(this, access.refreshInMs);
      return access.url;
    } catch (error) {
      this.retryAfterMs = error.retryAfterMs ?? 0;
      this.chat.negotiateFailed(this, error);
      throw error;
    }
  }

  markConnected() {
    this.failures = 0;
    this.hasConnected = true;
  }

  dispose() {
    this.disposed = true;
    clearTimeout(this.refreshTimer);
    this.client.stop();
  }
}

export class ChatConnection {
  /**
   * @param {object} options
   * @param {() => Promise<{url: string, refreshInMs: number}>} [options.negotiate] fetches a client access URL
   * @param {string} [options.negotiateUrl] where to negotiate, when `negotiate` is not given
   * @param {(status: string, detail: string) => void} [options.onStatus] connecting | connected |
   *   reconnecting | signed out | disconnected, and while not connected, what is wrong ("" when not known)
   * @param {(message: {id?: string, kind: "user" | "server", group?: string, from?: string, data: unknown,
   *   at: Date}) => void} [options.onMessage] `at` is when it arrived
   * @param {(text: string) => void} [options.onNotice] what happened, for the activity log
   * @param {(error: Error) => void} [options.onError]
   * @param {(error: Error) => void} [options.onSignInRequired] negotiate answered 401
   */
  constructor(options) {
    this.negotiate = options.negotiate ?? (() => negotiateOnce(options.negotiateUrl));
    this.createClient =
      options.createClient ??
      ((credential, settings, observer) => new ObservedWebPubSubClient(credential, settings, observer));
    this.onStatus = options.onStatus ?? (() => {});
    this.onMessage = options.onMessage ?? (() => {});
    this.onNotice = options.onNotice ?? (() => {});
    this.onError = options.onError ?? (() => {});
    this.onSignInRequired = options.onSignInRequired ?? (() => {});
    this.groups = new Set();
    this.seen = new Set();
    this.status = "";
    this.detail = "";
    this.userId = undefined; // as the service knows this user, from the first connection on
    this.link = undefined;
    this.refreshing = false;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.link = this.openLink();
    this.setStatus("connecting");
    void this.keepStarting(this.link);
  }

  /** Leave for good (page closed): a normal close tells the service not to wait for recovery. */
  stop() {
    this.stopped = true;
    this.link?.dispose();
  }

  /** The groups this user may join, as its token says; null when not known (the service decides). */
  get joinable() {
    return this.link?.joinable ?? null;
  }

  /** Join a group; rejects at once with GroupNotPermitted when the token does not allow it. */
  async join(group) {
    const link = this.link;
    if (link.joinable !== null && !link.joinable.includes(group)) {
      throw new GroupNotPermitted(group, link.joinable);
    }
    this.groups.add(group);
    try {
      await link.client.joinGroup(group);
      link.joined.add(group);
    } catch (error) {
      this.groups.delete(group);
      throw error;
    }
  }

  /** Send to a group; resolves with the service's ack, rejects with its error. */
  send(group, text) {
    const id = randomId();
    this.remember(id);
    const acked = this.link.client.sendToGroup(group, { id, text }, "json");
    return { id, acked };
  }

  openLink() {
    const link = new Link(this);
    const client = link.client;
    client.on("connected", (event) => this.connected(link, event));
    client.on("disconnected", (event) => {
      if (link === this.link && !link.disposed) {
        const reason = event.message?.message;
        if (this.status !== "reconnecting") {
          this.setStatus("reconnecting", serviceLost(reason));
        }
        this.onNotice(`Connection lost${reason ? ` (${reason})` : ""}; reconnecting.`);
      }
    });
    client.on("stopped", () => {
      if (link === this.link && !link.disposed && !this.stopped) {
        this.setStatus("disconnected", this.detail);
        void this.keepStarting(link);
      }
    });
    client.on("group-message", (event) => this.received(event.message));
    client.on("server-message", (event) => this.received(event.message));
    client.on("rejoin-group-failed", (event) => {
      this.onError(new Error(`Could not rejoin group ${event.group}: ${event.error?.message ?? "unknown error"}`));
    });
    return link;
  }

  /** start() rejects when the first connection fails and does not retry; retry it here. */
  async keepStarting(link) {
    while (!link.disposed) {
      const attempts = link.failures;
      try {
        await link.client.start();
        return true;
      } catch {
        // Negotiate errors were reported already, and Link.clientAccessUrl backs off before the
        // next try; should start() ever fail without asking for a URL, pause here instead.
        if (link.failures === attempts) {
          await sleep(backoffDelay(1));
        }
      }
    }
    return false;
  }

  connected(link, { connectionId, userId }) {
    link.markConnected();
    if (link.disposed) {
      link.client.stop();
      return;
    }
    if (link === this.link) {
      this.userId = userId;
      this.setStatus("connected");
      this.onNotice(`Connected as ${userId} (connection ${connectionId}).`);
    }
  }

  /** A socket closed: tell the user at once, while the client recovers or reconnects, and say
   * that it is the service that is gone or refusing (negotiate, the app's part, went through). */
  socketClosed(link, code) {
    if (link !== this.link || link.disposed || this.stopped) {
      return;
    }
    if (this.status === "connected") {
      this.setStatus("reconnecting", serviceLost(`close code ${code}`));
      this.onNotice(`Connection lost (close code ${code}); reconnecting.`);
    } else if (this.status !== "signed out") {
      const detail = `The Web PubSub service cannot be reached or refused the connection (close code ${code});`;
      this.setStatus(this.status, `${detail} retrying automatically.`);
    }
  }

  /** The same connection is back (no `connected` event comes for it). */
  recovered(link) {
    if (link === this.link && !link.disposed && this.status === "reconnecting") {
      this.setStatus("connected");
      this.onNotice("Connection recovered; no message was lost.");
    }
  }

  negotiateFailed(link, error) {
    if (link.disposed) {
      return;
    }
    if (error.needsSignIn) {
      if (link === this.link) {
        this.setStatus("signed out");
      }
      this.onSignInRequired(error);
      return;
    }
    if (link === this.link && this.status !== "connected") {
      this.setStatus(this.status, describeNegotiateFailure(error)); // the app's side is what failed
      return;
    }
    this.onError(error); // a renewal failed; the current connection stays
  }

  scheduleRefresh(link, delayMs) {
    clearTimeout(link.refreshTimer);
    link.refreshTimer = setTimeout(() => {
      if (link === this.link && !link.disposed) {
        void this.refresh();
      }
    }, delayMs);
  }

  /** Replace the connection before its token expires, without a gap. */
  async refresh() {
    if (this.refreshing || this.stopped) {
      return;
    }
    this.refreshing = true;
    const previous = this.link;
    const next = this.openLink();
    try {
      if (!(await this.keepStarting(next))) {
        return;
      }
      await this.joinAll(next);
    } catch (error) {
      next.dispose();
      this.onError(new Error(`Refreshing the connection failed (${error.message}); the current one stays.`));
      this.scheduleRefresh(previous, backoffDelay(previous.failures + 1));
      return;
    } finally {
      this.refreshing = false;
    }
    this.link = next;
    previous.dispose();
    this.onNotice("Renewed the access token on a new connection.");
  }

  /** Join `next` to every group the user is in, including groups joined while this runs. */
  async joinAll(next) {
    for (;;) {
      const missing = [...this.groups].filter((group) => !next.joined.has(group));
      if (missing.length === 0) {
        return;
      }
      await Promise.all(
        missing.map(async (group) => {
          await next.client.joinGroup(group);
          next.joined.add(group);
        }),
      );
    }
  }

  received(message) {
    const id = typeof message.data?.id === "string" ? message.data.id : undefined;
    if (id !== undefined) {
      if (this.seen.has(id)) {
        return;
      }
      this.remember(id);
    }
    // A server sending through the REST API reaches clients as `server-message` (no group), or as
    // a group message without a sender: both are the server's own, never a user's.
    const fromServer = message.kind === "serverData" || typeof message.fromUserId !== "string";
    this.onMessage({
      id,
      kind: fromServer ? "server" : "user",
      group: message.group,
      from: fromServer ? undefined : message.fromUserId,
      data: message.data,
      at: new Date(),
    });
  }

  remember(id) {
    this.seen.add(id);
    if (this.seen.size > SEEN_MESSAGE_LIMIT) {
      this.seen.delete(this.seen.values().next().value);
    }
  }

  setStatus(status, detail = "") {
    const shown = status === "connected" ? "" : detail;
    if (status !== this.status || shown !== this.detail) {
      this.status = status;
      this.detail = shown;
      this.onStatus(status, shown);
    }
  }
}
