// When to retry and when to refresh: pure arithmetic, so it can be tested without a browser.

/** Exponential backoff with full jitter: a random wait in [0, min(cap, base * 2^attempt)).
 *
 * Full jitter spreads clients that lost their connection at the same moment (a service
 * restart, a network blip) so that they do not all negotiate and reconnect in lockstep.
 * `attempt` counts failures since the last successful connection, from 0.
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30_000, random = Math.random } = {}) {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const ceiling = Math.min(capMs, baseMs * 2 ** exponent);
  return Math.floor(random() * ceiling);
}

/** How long until the page should negotiate again, in milliseconds from now.
 *
 * Measured on the server's clock (`serverNow`, from the response's Date header) so that a
 * device whose clock is wrong still refreshes in time. The margin before `expiresOn` is a
 * quarter of the remaining lifetime, at most five minutes: 45 s for a one-minute token,
 * 55 minutes into the default one-hour token.
 */
export function refreshDelay(expiresOn, serverNow, { marginShare = 0.25, maxMarginMs = 5 * 60_000 } = {}) {
  const remaining = expiresOn - serverNow;
  if (!Number.isFinite(remaining) || remaining <= 0) {
    return 0;
  }
  return Math.round(remaining - Math.min(maxMarginMs, remaining * marginShare));
}

/** Milliseconds from a Retry-After header (seconds or an HTTP date), or 0 when absent or invalid. */
export function retryAfterMs(header, now = Date.now()) {
  if (!header) {
    return 0;
  }
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) {
    return Number(trimmed) * 1000;
  }
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? 0 : Math.max(0, date - now);
}
