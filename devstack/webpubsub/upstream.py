"""Service → event handler: CloudEvents over HTTP, abuse protection, per-connection ordering, a log.

Events go out in CloudEvents binary mode exactly as the service sends them (every ``ce-*``
header, ``ce-signature``, ``WebHook-Request-Origin``, and ``Authorization: Bearer`` with the
service identity's token when the handler's auth is ManagedIdentity). Each hub has its own
ordered handler entries (``ServiceSettings.event_handlers_of``). Before the first event to a URL the
abuse-protection handshake runs (OPTIONS, then GET if OPTIONS answered 404); its result is
cached. Every call and its outcome lands in an :class:`UpstreamLog` that tests and developers
can read; log lines never contain tokens, keys, signatures or URL query values.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from .event_client import EventClient, EventResponse
from .protocol import Payload
from .settings import EventHandlerSettings, HubSettings, ServiceSettings, redacted_url as _redacted

#: Makes the service identity's bearer token for a resource (audience).
UpstreamTokenProvider = Callable[[str], str]

__all__ = [
    "ConnectOutcome",
    "EventContext",
    "EventLane",
    "UpstreamDispatcher",
    "UpstreamLog",
    "UpstreamRecord",
    "UserEventOutcome",
    "event_handler_client",
]

logger = logging.getLogger("devstack.webpubsub.upstream")

_VALIDATION_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class UpstreamRecord:
    """One request the service made to an event handler, and what came of it."""

    sequence: int
    time: float
    hub: str
    connection_id: str | None
    event_name: str
    ce_type: str | None
    ce_id: str | None
    method: str
    url: str
    status: int | None
    #: delivered | rejected | failed | unreachable | allowed | refused | blocked
    outcome: str
    duration_ms: float
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class UpstreamLog:
    """A bounded, thread-safe record of upstream calls (newest last)."""

    def __init__(self, max_records: int = 500) -> None:
        self._records: collections.deque[UpstreamRecord] = collections.deque(maxlen=max_records)
        self._changed = threading.Condition()
        self._next_sequence = 1

    def add(self, **fields: Any) -> UpstreamRecord:
        with self._changed:
            record = UpstreamRecord(sequence=self._next_sequence, time=time.time(), **fields)
            self._next_sequence += 1
            self._records.append(record)
            self._changed.notify_all()
        return record

    def records(self) -> list[UpstreamRecord]:
        with self._changed:
            return list(self._records)

    def clear(self) -> None:
        with self._changed:
            self._records.clear()

    def wait_for(self, predicate: Callable[[UpstreamRecord], bool], timeout: float = 5.0) -> UpstreamRecord:
        """Block until a record matching ``predicate`` exists; return the first one.

        Raises TimeoutError otherwise. Meant for tests and tools running outside the
        service's thread, so they can wait on an event instead of sleeping.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self._records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching upstream record")
                self._changed.wait(remaining)

    def __iter__(self) -> Iterator[UpstreamRecord]:
        return iter(self.records())


@dataclass(frozen=True)
class EventContext:
    """What an upstream request says about the connection it concerns."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    connection_state: str | None
    #: The service host name the client used, without port: sent as WebHook-Request-Origin.
    origin_host: str
    #: MQTT only: the physical (WebSocket) connection and the session (absent on ``connect``).
    physical_connection_id: str | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class ConnectOutcome:
    """The event handler's answer to ``connect``: accept (2xx) with optional changes, or a status.

    ``body`` is the JSON object the handler answered with: the changes of an accepting answer,
    or a refusal's details (an MQTT client's ``{"mqtt": {"code", "reason", "userProperties"}}``).
    """

    status: int
    body: dict[str, Any] | None = None
    #: ``None`` keeps the state; a string (possibly empty) replaces it.
    connection_state: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class UserEventOutcome:
    """The event handler's answer to a user event: success with an optional reply, or failure."""

    succeeded: bool
    reply: Payload | None = None
    connection_state: str | None = None
    detail: str | None = None
    #: The handler's status (None when it could not be reached), and a failure's text body (invoke errors).
    status: int | None = None
    error_text: str | None = None
    #: The answer's ``mqtt-*`` headers, names without the prefix: an MQTT response's user properties.
    mqtt_headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Validation:
    allowed: bool
    expires_at: float


class EventLane:
    """Runs one connection's upstream calls strictly one after another, in submission order.

    The service must not let two events of one connection race (``connected`` before a user
    event, ``disconnected`` last), while the client's other frames keep flowing. ``capacity``
    bounds how many user events a client may have queued; the reader waits for room, which
    pushes back on a client that floods events.
    """

    def __init__(self, name: str, capacity: int = 100) -> None:
        self.name = name
        self.capacity = asyncio.Semaphore(capacity)
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def submit(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"lane-{self.name}")
        self._queue.put_nowait(job)

    def finish(self) -> None:
        """No more jobs: the worker stops after the ones already queued."""
        if self._worker is not None:
            self._queue.put_nowait(None)

    def when_finished(self, callback: Callable[[EventLane], object]) -> None:
        """Call ``callback(self)`` once the worker has stopped (at once if it never started)."""
        if self._worker is None or self._worker.done():
            callback(self)
        else:
            self._worker.add_done_callback(lambda _: callback(self))

    async def wait_finished(self, timeout: float) -> None:
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            except TimeoutError:
                self._worker.cancel()

    async def _run(self) -> None:
        while (job := await self._queue.get()) is not None:
            try:
                await job()
            except Exception:
                logger.exception("upstream job failed on %s", self.name)


class UpstreamDispatcher:
    """Sends CloudEvents to the configured event handlers and interprets their answers."""

    def __init__(
        self, settings: ServiceSettings, log: UpstreamLog, upstream_token: UpstreamTokenProvider | None = None
    ) -> None:
        self.settings = settings
        self.event_handlers = settings.event_handlers
        self.hubs = settings.hubs
        self.log = log
        self._upstream_token = upstream_token
        self._client: EventClient | None = None
        self._validations: dict[tuple[str, str], _Validation] = {}
        self._pending_validations: dict[tuple[str, str], asyncio.Task[bool]] = {}

    def configure(
        self, event_handlers: tuple[EventHandlerSettings, ...], hubs: tuple[HubSettings, ...] | None = None
    ) -> None:
        """Swap the default event handlers (and the hubs' own, if given); earlier validations no longer apply."""
        self.event_handlers = event_handlers
        if hubs is not None:
            self.hubs = hubs
        self._validations.clear()

    def handlers_of(self, hub: str) -> tuple[EventHandlerSettings, ...]:
        """The ordered entries that apply to ``hub``: its own settings, else the default ones."""
        for settings in self.hubs:
            if settings.name.lower() == hub.lower():
                return settings.event_handlers
        return tuple(handler for handler in self.event_handlers if handler.applies_to_hub(hub))

    async def aclose(self) -> None:
        for task in self._pending_validations.values():
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def handler_for(self, hub: str, event_name: str, *, system: bool) -> EventHandlerSettings | None:
        """First matching handler entry wins, as in the service's hub settings."""
        for handler in self.handlers_of(hub):
            if handler.handles_system_event(event_name) if system else handler.handles_user_event(event_name):
                return handler
        return None

    async def connect(self, context: EventContext, body: dict[str, Any]) -> ConnectOutcome | None:
        """Send ``connect``; None when no handler subscribes to it (the service then accepts)."""
        handler = self.handler_for(context.hub, "connect", system=True)
        if handler is None:
            return None
        content = json.dumps(body).encode()
        response = await self._deliver(handler, context, "connect", "azure.webpubsub.sys.connect", 0, content)
        if isinstance(response, str):
            return ConnectOutcome(status=500, detail=response)
        if not 200 <= response.status_code < 300:
            detail = f"event handler answered {response.status_code}"
            refusal = _json_object(response.content)
            status = response.status_code if 400 <= response.status_code < 500 else 500
            return ConnectOutcome(status=status, body=refusal if isinstance(refusal, dict) else None, detail=detail)
        parsed = _json_object(response.content)
        if isinstance(parsed, str):
            return ConnectOutcome(status=500, detail=parsed)
        return ConnectOutcome(status=response.status_code, body=parsed, connection_state=_connection_state(response))

    async def user_event(
        self,
        context: EventContext,
        event_name: str,
        payload: Payload,
        event_id: int,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> UserEventOutcome:
        """Send a user event; ``extra_headers`` are added as they are (an MQTT request's ``mqtt-*``)."""
        handler = self.handler_for(context.hub, event_name, system=False)
        if handler is None:
            self.log.add(
                hub=context.hub,
                connection_id=context.connection_id,
                event_name=event_name,
                ce_type=f"azure.webpubsub.user.{event_name}",
                ce_id=str(event_id),
                method="POST",
                url="",
                status=None,
                outcome="failed",
                duration_ms=0.0,
                detail="no event handler is configured for this event",
            )
            return UserEventOutcome(False, detail="no event handler is configured for this event")
        response = await self._deliver(
            handler,
            context,
            event_name,
            f"azure.webpubsub.user.{event_name}",
            event_id,
            payload.body,
            content_type=payload.content_type,
            extra_headers=extra_headers,
        )
        if isinstance(response, str):
            return UserEventOutcome(False, detail=response)
        mqtt_headers = tuple(
            (name[5:], value)
            for name, value in response.headers.multi_items()
            if name.lower().startswith("mqtt-") and len(name) > 5
        )
        if not 200 <= response.status_code < 300:
            return UserEventOutcome(
                False,
                detail=f"event handler answered {response.status_code}",
                status=response.status_code,
                error_text=_text_body(response),
                mqtt_headers=mqtt_headers,
            )
        reply: Payload | None = None
        if response.content:
            try:
                reply = Payload.from_content_type(response.headers.get("content-type"), response.content)
            except ValueError as error:
                return UserEventOutcome(False, detail=f"event handler reply rejected: {error}")
        return UserEventOutcome(
            True,
            reply=reply,
            connection_state=_connection_state(response),
            status=response.status_code,
            mqtt_headers=mqtt_headers,
        )

    async def notify(self, context: EventContext, event_name: str, body: dict[str, Any], event_id: int) -> None:
        """Send ``connected`` or ``disconnected``; the answer only matters to the log."""
        handler = self.handler_for(context.hub, event_name, system=True)
        if handler is None:
            return
        await self._deliver(
            handler, context, event_name, f"azure.webpubsub.sys.{event_name}", event_id, json.dumps(body).encode()
        )

    async def _deliver(
        self,
        handler: EventHandlerSettings,
        context: EventContext,
        event_name: str,
        ce_type: str,
        event_id: int,
        content: bytes,
        content_type: str = "application/json; charset=utf-8",
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> EventResponse | str:
        """POST one CloudEvent; the response, or a short reason why there is none."""
        record = {
            "hub": context.hub,
            "connection_id": context.connection_id,
            "event_name": event_name,
            "ce_type": ce_type,
            "ce_id": str(event_id),
            "method": "POST",
        }
        url = _expand(handler.url_template, context.hub, event_name)
        if not await self._validated(handler, context.hub, context.origin_host):
            reason = "abuse protection validation of the event handler failed"
            self.log.add(
                **record,
                url=_redacted(url),
                status=None,
                outcome="blocked",
                duration_ms=0.0,
                detail=reason,
            )
            logger.warning("upstream %s %s blocked: %s", event_name, context.connection_id, reason)
            return reason
        base = self._cloud_event_headers(context, event_name, ce_type, event_id)
        base["Content-Type"] = content_type
        base.update(self._auth_headers(handler))
        # A list, not a dict: an MQTT request may repeat a user property name.
        headers = [*base.items(), *extra_headers]
        started = time.monotonic()
        try:
            response = await self._http().post(url, content=content, headers=headers)
        except httpx.HTTPError as error:
            reason = f"event handler unreachable ({type(error).__name__})"
            self.log.add(
                **record,
                url=_redacted(url),
                status=None,
                outcome="unreachable",
                duration_ms=_elapsed_ms(started),
                detail=reason,
            )
            logger.warning("upstream %s %s: %s", event_name, context.connection_id, reason)
            return reason
        status = response.status_code
        outcome = "delivered" if 200 <= status < 300 else "rejected" if 400 <= status < 500 else "failed"
        self.log.add(**record, url=_redacted(url), status=status, outcome=outcome, duration_ms=_elapsed_ms(started))
        logger.info("upstream %s %s -> %s", event_name, context.connection_id, status)
        return response

    def _cloud_event_headers(
        self, context: EventContext, event_name: str, ce_type: str, event_id: int
    ) -> dict[str, str]:
        signature = hmac.new(
            self.settings.access_key.encode(), context.connection_id.encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "ce-specversion": "1.0",
            "ce-type": ce_type,
            "ce-source": f"/hubs/{context.hub}/client/{context.connection_id}"
            + (f"/{context.physical_connection_id}" if context.physical_connection_id else ""),
            "ce-id": str(event_id),
            "ce-time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ce-awpsversion": "1.0",
            "ce-connectionId": context.connection_id,
            "ce-hub": context.hub,
            "ce-eventName": event_name,
            "ce-signature": f"sha256={signature}",
            "WebHook-Request-Origin": context.origin_host,
        }
        if context.user_id:
            headers["ce-userId"] = context.user_id
        if context.subprotocol:
            headers["ce-subprotocol"] = context.subprotocol
        if context.connection_state:
            headers["ce-connectionState"] = context.connection_state
        if context.physical_connection_id:
            headers["ce-physicalConnectionId"] = context.physical_connection_id
        if context.session_id:
            headers["ce-sessionId"] = context.session_id
        return headers

    async def _validated(self, handler: EventHandlerSettings, hub: str, origin_host: str) -> bool:
        """Abuse protection: may events for ``hub`` go to this handler URL at all?"""
        url = _expand(handler.url_template, hub, "validate")
        key = (url, origin_host.lower())
        cached = self._validations.get(key)
        if cached is not None and cached.expires_at > time.monotonic():
            return cached.allowed
        pending = self._pending_validations.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._validate(handler, url, hub, origin_host))
            self._pending_validations[key] = pending
            pending.add_done_callback(lambda _: self._pending_validations.pop(key, None))
        allowed = await asyncio.shield(pending)
        ttl = self.settings.validation_ttl_seconds if allowed else self.settings.validation_failure_ttl_seconds
        self._validations[key] = _Validation(allowed, time.monotonic() + ttl)
        return allowed

    def _auth_headers(self, handler: EventHandlerSettings) -> dict[str, str]:
        """``Authorization: Bearer`` for a ManagedIdentity handler; nothing for one without auth."""
        if handler.managed_identity_resource is None or self._upstream_token is None:
            return {}
        return {"Authorization": f"Bearer {self._upstream_token(handler.managed_identity_resource)}"}

    async def _validate(self, handler: EventHandlerSettings, url: str, hub: str, origin_host: str) -> bool:
        headers = {"WebHook-Request-Origin": origin_host, "ce-awpsversion": "1.0", **self._auth_headers(handler)}
        for method in ("OPTIONS", "GET"):
            started = time.monotonic()
            try:
                response = await self._http().request(method, url, headers=headers, timeout=_VALIDATION_TIMEOUT_SECONDS)
            except httpx.HTTPError as error:
                unreachable = f"event handler unreachable ({type(error).__name__})"
                self._log_validation(hub, method, url, None, False, started, unreachable)
                return False
            if method == "OPTIONS" and response.status_code == 404:
                self._log_validation(hub, method, url, 404, False, started, "OPTIONS not found; trying GET")
                continue
            origins = [origin.strip() for origin in response.headers.get_list("WebHook-Allowed-Origin")]
            # Exactly one value, either "*" or this service's host name; a comma list is refused.
            allowed = (
                200 <= response.status_code < 300
                and len(origins) == 1
                and (origins[0] == "*" or origins[0].lower() == origin_host.lower())
            )
            refusal = f"status {response.status_code}, WebHook-Allowed-Origin {origins or 'missing'}"
            self._log_validation(hub, method, url, response.status_code, allowed, started, None if allowed else refusal)
            return allowed
        return False

    def _log_validation(
        self,
        hub: str,
        method: str,
        url: str,
        status: int | None,
        allowed: bool,
        started: float,
        detail: str | None,
    ) -> None:
        self.log.add(
            hub=hub,
            connection_id=None,
            event_name="validate",
            ce_type=None,
            ce_id=None,
            method=method,
            url=_redacted(url),
            status=status,
            outcome="allowed" if allowed else "refused",
            duration_ms=_elapsed_ms(started),
            detail=detail,
        )
        if allowed:
            logger.info("abuse protection %s %s -> %s allowed", method, _redacted(url), status)
        else:
            logger.warning("abuse protection %s %s -> %s refused: %s", method, _redacted(url), status, detail)

    def _http(self) -> EventClient:
        if self._client is None:
            self._client = event_handler_client(self.settings.upstream_timeout_seconds)
        return self._client


def event_handler_client(timeout: float) -> EventClient:
    """The HTTP client events go out on: kept-alive connections with Nagle's algorithm off, no redirects."""
    return EventClient(timeout)


def _expand(url_template: str, hub: str, event_name: str) -> str:
    return url_template.replace("{hub}", quote(hub, safe="")).replace("{event}", quote(event_name, safe=""))


def _text_body(response: EventResponse, limit: int = 4096) -> str | None:
    """A failure answer's body when it is text or JSON (what a handler's error message is), else None."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in ("text/plain", "application/json") or not response.content:
        return None
    return response.content[:limit].decode("utf-8", errors="replace")


def _json_object(content: bytes) -> dict[str, Any] | str | None:
    """A body's JSON object, None for an empty body, or a short reason why it is neither."""
    if not content.strip():
        return None
    try:
        loaded = json.loads(content)
    except ValueError:
        return "connect response body is not JSON"
    if loaded is not None and not isinstance(loaded, dict):
        return "connect response body is not a JSON object"
    return loaded


def _connection_state(response: EventResponse) -> str | None:
    values = response.headers.get_list("ce-connectionState")
    return values[-1] if values else None


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
