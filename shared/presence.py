"""Who is online in a group: `GET /api/groups/{group}/users`, for callers negotiate would let use the group.

The answer is built from the service's list of the group's connections (one SDK iteration, bounded
to MAX_CONNECTIONS), grouped by user and sorted by user id, and kept for CACHE_SECONDS per hub and
group: a storm of page refreshes costs one service call per group every few seconds, and concurrent
requests for the same group wait for one call instead of making their own. Pages of users follow
with `?after=<the last user id of the previous page>` (the answer's `next`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import BadRequest, Forbidden
from shared.identity import CallerIdentifier
from shared.policy import GroupPolicy, validate_group_name
from shared.service_client import ServiceClient
from shared.web import Request, Response, json_response

CACHE_SECONDS = 2.0
MAX_CACHED_GROUPS = 1024
MAX_CONNECTIONS = 10_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A group's users with their connection counts, sorted by user id, as the service listed them."""

    users: tuple[tuple[str, int], ...]
    connections: int  # every connection, anonymous ones included
    truncated: bool  # more than MAX_CONNECTIONS: the counts cover the first ones only
    taken_at: float


class Presence:
    """The presence route; `clients(hub)` gives a served hub's server-side client (NotFound otherwise)."""

    def __init__(
        self,
        *,
        identifier: CallerIdentifier,
        policy: Callable[[str], GroupPolicy],
        clients: Callable[[str | None], ServiceClient],
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._identifier = identifier
        self._policy = policy
        self._clients = clients
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._snapshots: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def users(self, request: Request) -> Response:
        caller = self._identifier.identify(request)  # first: nothing is revealed to strangers
        group = validate_group_name(request.route.get("group", ""))
        client = self._clients(request.query_value("hub"))
        if group not in self._policy(client.hub).permitted_groups(caller.user_id):
            raise Forbidden(
                f"User {caller.user_id[:64]!r} may not use group {group[:64]!r} on hub {client.hub!r}, "
                "so may not see who is in it.",
                code="group_not_permitted",
            )
        top = _page_size(request.query_value("top"))
        after = request.query_value("after")
        snapshot = self._snapshot(client, group)
        remaining = [entry for entry in snapshot.users if after is None or entry[0] > after]
        page = remaining[:top]
        return json_response(
            200,
            {
                "hub": client.hub,
                "group": group,
                "users": [{"userId": user_id, "connections": count} for user_id, count in page],
                "next": page[-1][0] if len(remaining) > top else None,
                "connections": snapshot.connections,
                "truncated": snapshot.truncated,
            },
        )

    def _snapshot(self, client: ServiceClient, group: str) -> Snapshot:
        key = (client.hub.lower(), group)
        snapshot = self._fresh(key)
        if snapshot is not None:
            return snapshot
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one service call per group at a time; the others wait and read its result
            snapshot = self._fresh(key)
            if snapshot is None:
                snapshot = self._take(client, group)
                with self._lock:
                    self._snapshots[key] = snapshot
                    self._snapshots.move_to_end(key)
                    while len(self._snapshots) > MAX_CACHED_GROUPS:
                        self._snapshots.popitem(last=False)
        with self._lock:
            self._loading.pop(key, None)
        return snapshot

    def _fresh(self, key: tuple[str, str]) -> Snapshot | None:
        with self._lock:
            snapshot = self._snapshots.get(key)
        if snapshot is not None and self._clock() - snapshot.taken_at < self._cache_seconds:
            return snapshot
        return None

    def _take(self, client: ServiceClient, group: str) -> Snapshot:
        members, truncated = client.list_connections(group, limit=MAX_CONNECTIONS)
        counts: dict[str, int] = {}
        for member in members:
            if member.user_id:
                counts[member.user_id] = counts.get(member.user_id, 0) + 1
        return Snapshot(tuple(sorted(counts.items())), len(members), truncated, self._clock())


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise BadRequest(f"top must be a whole number from 1 to {MAX_PAGE_SIZE}.", code="invalid_top")
    return value
