// Who is online in the joined group: GET /api/groups/{group}/users, every page of it, kept fresh.
//
// The service sends group members nothing when someone joins or leaves, so the page asks the app.
// It stays cheap: one request when the user joins, then one every POLL_MS while the page is visible
// (the app answers from a 2 s cache, so a crowd of pages costs the service one call per group every
// two seconds at most), and one more when a message comes from someone the list does not show yet.

export const POLL_MS = 5_000;
// The app caches the answer this long: asking again sooner can only give the same answer.
export const SERVER_CACHE_MS = 2_000;
export const PAGE_SIZE = 100;
export const MAX_PAGES = 20;

/** The presence route refused or failed; `status` is the HTTP status (0 when the app could not be reached). */
export class PresenceError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "PresenceError";
    this.status = status;
    this.code = code;
  }

  /** 401 and 403 do not go away by asking again. */
  get permanent() {
    return this.status === 401 || this.status === 403;
  }
}

/** What the page says when presence failed: what happened, in words, and what comes next. */
export function describePresenceFailure(error, group) {
  if (error.status === 0) {
    return `Cannot reach the app to see who is online (${error.message}); retrying.`;
  }
  if (error.status === 403) {
    return `You may not see who is in ${group}: ${error.message}`;
  }
  if (error.status === 401) {
    return `Sign in to see who is online: ${error.message}`;
  }
  return `Could not load who is online (HTTP ${error.status}): ${error.message} Retrying.`;
}

async function fetchPage(url, fetchImpl) {
  let response;
  try {
    response = await fetchImpl(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw new PresenceError(0, "unreachable", `the app could not be reached: ${error.message}`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body?.error ?? {};
    throw new PresenceError(
      response.status,
      typeof detail.code === "string" ? detail.code : `http_${response.status}`,
      typeof detail.message === "string" ? detail.message : `The app answered HTTP ${response.status}.`,
    );
  }
  if (!Array.isArray(body?.users)) {
    throw new PresenceError(response.status, "invalid_response", "The app answered without a list of users.");
  }
  return body;
}

/** Every user online in `group`, following `next` up to MAX_PAGES pages.
 *
 * Resolves to `{ users: [{userId, connections}], connections, truncated }`; `truncated` is true
 * when the list is not complete (the app listed only part of a huge group, or there were more pages).
 * `userId` is sent as the negotiate route takes it (NEGOTIATE_AUTH=anonymous), when given.
 */
export async function fetchPresence(
  baseUrl,
  group,
  { userId, fetchImpl = globalThis.fetch.bind(globalThis), pageSize = PAGE_SIZE, maxPages = MAX_PAGES } = {},
) {
  const users = [];
  let after = null;
  let connections = 0;
  let truncated = false;
  for (let page = 0; page < maxPages; page += 1) {
    const url = new URL(`groups/${encodeURIComponent(group)}/users`, baseUrl);
    url.searchParams.set("top", String(pageSize));
    if (after !== null) {
      url.searchParams.set("after", after);
    }
    if (userId !== undefined) {
      url.searchParams.set("userId", userId);
    }
    const body = await fetchPage(url.toString(), fetchImpl);
    for (const user of body.users) {
      if (typeof user?.userId === "string" && Number.isInteger(user.connections)) {
        users.push({ userId: user.userId, connections: user.connections });
      }
    }
    connections = Number.isInteger(body.connections) ? body.connections : connections;
    truncated = body.truncated === true;
    after = typeof body.next === "string" ? body.next : null;
    if (after === null) {
      return { users, connections, truncated };
    }
  }
  return { users, connections, truncated: true };
}

/** Keeps one group's presence fresh while the user is in it.
 *
 * `load(group)` fetches it (fetchPresence); `onUpdate(group, snapshot)` and `onError(group, error)`
 * report. After a permanent failure (401, 403) it stops asking until `watch` is called again.
 */
export class PresenceWatch {
  constructor({
    load,
    onUpdate = () => {},
    onError = () => {},
    isHidden = () => false,
    pollMs = POLL_MS,
    cacheMs = SERVER_CACHE_MS,
    timers = globalThis,
    now = () => Date.now(),
  }) {
    this.load = load;
    this.onUpdate = onUpdate;
    this.onError = onError;
    this.isHidden = isHidden;
    this.pollMs = pollMs;
    this.cacheMs = cacheMs;
    this.timers = timers;
    this.now = now;
    this.loadedAt = -Infinity;
    this.group = undefined;
    this.snapshot = undefined;
    this.timer = undefined;
    this.loading = undefined;
    this.again = false;
    this.awaited = new Set(); // users expected in the list (just joined, just spoke)
    this.retriedFor = undefined;
    this.failed = false;
  }

  /** Show `group` from now on: ask at once, then poll. */
  watch(group) {
    this.stop();
    this.group = group;
    this.snapshot = undefined;
    this.failed = false;
    this.again = false;
    this.retriedFor = undefined;
    void this.refresh();
  }

  stop() {
    this.group = undefined;
    this.awaited.clear();
    this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** True when the latest list shows `userId`. */
  shows(userId) {
    return this.snapshot?.users.some((user) => user.userId === userId) ?? false;
  }

  /** `userId` should be in the list (it joined, or just spoke): unless the list shows it, ask as
   * soon as the app's cache can have a newer answer. */
  expect(userId) {
    if (this.group === undefined || this.failed || this.shows(userId)) {
      return;
    }
    this.awaited.add(userId);
    if (this.loading === this.group) {
      return; // the answer on its way is checked for it
    }
    // Sooner than the app's cache expires would only fetch the same answer again.
    this.schedule(Math.max(0, this.loadedAt + this.cacheMs - this.now()));
  }

  /** Ask now; a call while a request is out asks once more after it, never twice at a time. */
  async refresh() {
    if (this.group === undefined || this.failed) {
      return;
    }
    if (this.loading === this.group) {
      this.again = true;
      return;
    }
    const group = this.group;
    this.timers.clearTimeout(this.timer);
    this.loading = group;
    let snapshot;
    let failure;
    try {
      snapshot = await this.load(group);
    } catch (error) {
      failure = error;
    }
    if (this.loading === group) {
      this.loading = undefined;
      this.loadedAt = this.now();
    }
    if (group !== this.group) {
      return; // the user moved on to another group meanwhile
    }
    if (failure !== undefined) {
      this.onError(group, failure);
      if (failure.permanent) {
        this.failed = true;
        return;
      }
      this.schedule(this.pollMs);
      return;
    }
    this.snapshot = snapshot;
    this.onUpdate(group, snapshot);
    let next = this.pollMs;
    for (const userId of [...this.awaited]) {
      if (this.shows(userId)) {
        this.awaited.delete(userId);
      }
    }
    // Still missing: the answer may be from the app's cache; ask once more when that has expired.
    const key = [...this.awaited].sort().join("\n");
    if (this.awaited.size > 0 && key !== this.retriedFor) {
      this.retriedFor = key;
      next = this.cacheMs + 250;
    } else {
      this.awaited.clear();
      this.retriedFor = undefined;
    }
    if (this.again) {
      this.again = false;
      next = Math.min(next, this.cacheMs);
    }
    this.schedule(next);
  }

  schedule(delayMs) {
    this.timers.clearTimeout(this.timer);
    this.timer = this.timers.setTimeout(() => {
      if (this.isHidden()) {
        this.schedule(this.pollMs); // nobody looks: skip this round (the page asks when shown again)
      } else {
        void this.refresh();
      }
    }, delayMs);
  }
}
