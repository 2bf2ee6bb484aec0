// What the page says: failures in words with what happens next, message contents and times.
// Pure functions, so the wording is tested without a browser.

import { GroupNotPermitted } from "./chat-connection.js";

export const plural = (count, one, many) => `${count} ${count === 1 ? one : many}`;

export const listOf = (groups) => groups.join(", ");

/** The reason the official client gives for a refused operation: the service's ack error, or its own. */
export function reasonOf(error) {
  const detail = error?.errorDetail;
  return detail?.message ?? detail?.name ?? error?.message ?? String(error);
}

/** Why joining `group` failed, and what to do; `permitted` is what the token allows (or null). */
export function describeJoinFailure(group, error, permitted) {
  if (error instanceof GroupNotPermitted) {
    return error.message;
  }
  const allowed = permitted ? ` Groups you may join: ${listOf(permitted)}.` : "";
  if (error?.errorDetail?.name === "Forbidden") {
    return `You may not join ${group}: the service refused (${reasonOf(error)}).${allowed}`;
  }
  return `Could not join ${group} (${reasonOf(error)}).${allowed}`;
}

/** Why a message to `group` was not delivered. */
export function describeSendFailure(group, error) {
  if (error?.errorDetail?.name === "Forbidden") {
    return `You may not send to ${group}: the service refused (${reasonOf(error)}).`;
  }
  return `Your message to ${group} was not delivered (${reasonOf(error)}). Send it again.`;
}

/** A message's content as text: text as is, `{text}` as its text, binary by its size, other JSON as JSON. */
export function describeData(data) {
  if (typeof data === "string") {
    return data;
  }
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    return `(${plural(data.byteLength, "byte", "bytes")} of binary data)`;
  }
  if (typeof data?.text === "string") {
    return data.text;
  }
  return JSON.stringify(data) ?? String(data);
}

/** The delivery note next to one of your messages, once the service acknowledged it. */
export function describeAck(result) {
  return result?.isDuplicated ? "✓ delivered (the service had it already)" : "✓ delivered";
}

/** What the hint under the message box says, or "" when the user can send. */
export function sendHint(status, group) {
  if (status === "signed out") {
    return "Sign in to send messages.";
  }
  if (status !== "connected") {
    return status === "connecting"
      ? "Connecting… You can join a group and send once connected."
      : "Sending is paused until the connection is back; the page reconnects by itself.";
  }
  return group === undefined ? "Join a group above to send messages to it." : "";
}

/** hh:mm in the user's locale, for a message's line. */
export function shortTime(date, locale) {
  return date.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
}
