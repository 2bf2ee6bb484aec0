// The one call that turns the page's identity into a client access URL: GET /api/negotiate.

import { refreshDelay, retryAfterMs } from "./timing.js";

/** Negotiate failed; `status` is the HTTP status (0 when the app could not be reached). */
export class NegotiateError extends Error {
  constructor(status, code, message, { retryAfter = 0 } = {}) {
    super(message);
    this.name = "NegotiateError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfter;
  }

  /** 401: the caller has no identity the app accepts; signing in (again) is the fix. */
  get needsSignIn() {
    return this.status === 401;
  }
}

/** What the page tells its user when negotiate failed: what happened, in words, and what comes next. */
export function describeNegotiateFailure(error) {
  const reason = error.message;
  if (error.status === 0) {
    return `Cannot reach the app: ${reason} Check the network; retrying.`;
  }
  if (error.status === 401) {
    return `You are not signed in (HTTP 401): ${reason}`;
  }
  if (error.status === 403) {
    return `You are not allowed to chat here (HTTP 403): ${reason} Retrying, in case access is granted.`;
  }
  if (error.status === 503) {
    return `The app cannot connect you for now (HTTP 503): ${reason} Retrying automatically.`;
  }
  if (error.status >= 500) {
    return `The app failed to connect you (HTTP ${error.status}): ${reason} Retrying automatically.`;
  }
  return `The app refused to connect you (HTTP ${error.status}): ${reason}`;
}

/** The groups a client access URL's token lets its connection join, or null when that is not known.
 *
 * Web PubSub access tokens are JWTs whose `role` claims are the connection's initial permissions
 * (learn.microsoft.com/azure/azure-web-pubsub/concept-client-protocols, "Supported claims"), here
 * `webpubsub.joinLeaveGroup.<group>` per group of the app's policy. The page reads its own token only to
 * tell the user at once, without a round trip, which groups it may join; the service enforces.
 * null (ask the service) when the token is unreadable, lets it join any group, or names no group
 * (the app's connect handler may still grant roles).
 */
export function joinableGroups(url) {
  let payload;
  try {
    const token = new URL(url).searchParams.get("access_token") ?? "";
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")), (c) =>
      c.charCodeAt(0),
    );
    payload = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
  const claim = payload?.role ?? payload?.["http://schemas.microsoft.com/ws/2008/06/identity/claims/role"];
  const roles = [claim].flat().filter((role) => typeof role === "string");
  if (roles.includes("webpubsub.joinLeaveGroup")) {
    return null;
  }
  const prefix = "webpubsub.joinLeaveGroup.";
  const groups = roles.filter((role) => role.startsWith(prefix) && role.length > prefix.length);
  return groups.length === 0 ? null : [...new Set(groups.map((role) => role.slice(prefix.length)))];
}

/** Ask the app for a client access URL.
 *
 * Resolves to `{ url, expiresOn, refreshInMs, joinable }`: connect to `url`, and negotiate again
 * within `refreshInMs` (before `expiresOn`, a Date); `joinable` is joinableGroups(url). Cookies go
 * along (same origin), which is how App Service Authentication identifies a signed-in user; the
 * response is never cached.
 */
export async function negotiate(endpoint, { fetchImpl = globalThis.fetch.bind(globalThis) } = {}) {
  let response;
  try {
    response = await fetchImpl(endpoint, {
      method: "GET",
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw new NegotiateError(0, "unreachable", `The app could not be reached (${error.message}).`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body?.error ?? {};
    throw new NegotiateError(
      response.status,
      typeof detail.code === "string" ? detail.code : `http_${response.status}`,
      typeof detail.message === "string" ? detail.message : `Negotiate answered HTTP ${response.status}.`,
      { retryAfter: retryAfterMs(response.headers.get("Retry-After")) },
    );
  }
  const expiresOn = Date.parse(body?.expiresOn ?? "");
  if (typeof body?.url !== "string" || !/^wss?:\/\//.test(body.url) || Number.isNaN(expiresOn)) {
    throw new NegotiateError(response.status, "invalid_response", "Negotiate answered without a usable url and expiresOn.");
  }
  const serverDate = Date.parse(response.headers.get("Date") ?? "");
  const serverNow = Number.isNaN(serverDate) ? Date.now() : serverDate;
  return {
    url: body.url,
    expiresOn: new Date(expiresOn),
    refreshInMs: refreshDelay(expiresOn, serverNow),
    joinable: joinableGroups(body.url),
  };
}
