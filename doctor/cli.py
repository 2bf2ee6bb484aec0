"""The command line of `python -m doctor`: options, settings, one report, the exit code.

Exit codes: 0 when everything checked is fine (warnings included), 1 when a check failed,
2 for a usage error. The options shared by every command (--json, the overrides, --timeout)
are accepted before or after the command name.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from doctor.net import DEFAULT_TIMEOUT_SECONDS
from doctor.report import Report, url_query_values
from doctor.target import (
    AzureAccess,
    Overrides,
    SettingsSource,
    Target,
    collect_settings,
    event_token,
    resolve_target,
    signing_key,
)
from shared.config import is_loopback_host

PROG = "python -m doctor"
STDIN = "-"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 120:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 and at most 120 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS defaults: a subcommand's parser would otherwise reset an option given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    common.add_argument(
        "--connection-string",
        default=argparse.SUPPRESS,
        help="use this connection string (prefer the WEBPUBSUB_CONNECTION_STRING setting: arguments are visible)",
    )
    common.add_argument("--key", default=argparse.SUPPRESS, help="the access key to sign and verify with")
    common.add_argument("--endpoint", default=argparse.SUPPRESS, help="the service endpoint, https://<name>...")
    common.add_argument("--hub", default=argparse.SUPPRESS, help="the hub name")
    common.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=argparse.SUPPRESS,
        help=f"seconds per request (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Diagnose the Web PubSub app: settings, client tokens and event handlers. "
        "Settings come from the environment and ./local.settings.json, as the app reads them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    token = commands.add_parser(
        "token",
        parents=[common],
        help="why a client access URL or token is refused",
        description="Check a client access URL (or a bare JWT) as the service does when a client connects.",
    )
    token.add_argument(
        "client_token", metavar="URL_OR_JWT", help="the url negotiate returned, a JWT, or - to read stdin"
    )
    token.add_argument(
        "--group", action="append", default=[], metavar="GROUP", help="check the roles for this group (repeatable)"
    )
    commands.add_parser(
        "config",
        parents=[common],
        help="load the settings as the app does, and probe the service, Key Vault and the identity",
    )
    handler = commands.add_parser(
        "handler",
        parents=[common],
        help="send what the service sends to an event handler URL",
        description="Validate an event handler URL as the service does, then send it signed and forged events.",
    )
    handler.add_argument("url", help="the event handler URL, e.g. https://<app>.azurewebsites.net/api/eventhandler")
    hubs = commands.add_parser(
        "hubs",
        parents=[common],
        help="whether the service delivers every served hub's events to the app",
        description="Compare the event handler settings of every hub the app serves (the local service's own, or "
        "Azure's through the management API with your Azure credential) with the app's settings: a handler at "
        "all, its URL template, its system events and its upstream auth.",
    )
    hubs.add_argument("--subscription", help="Azure subscription id (default: AZURE_SUBSCRIPTION_ID)")
    hubs.add_argument(
        "--resource-group", help="resource group of the Web PubSub resource (default: AZURE_RESOURCE_GROUP)"
    )
    hubs.add_argument(
        "--resource-name", help="name of the Web PubSub resource (default: the endpoint's <name>.webpubsub.azure.com)"
    )
    hubs.add_argument(
        "--app-url", help="the app's base URL, https://<app>.azurewebsites.net (default: from WEBSITE_HOSTNAME)"
    )
    return parser


@contextlib.contextmanager
def _quiet_azure_logs() -> Iterator[None]:
    """The SDKs log failures the report already explains; keep them off the terminal meanwhile."""
    azure_logger = logging.getLogger("azure")
    level = azure_logger.level
    azure_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        azure_logger.setLevel(level)


def main(argv: Sequence[str] | None = None, *, access: AzureAccess | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the exit code. Tests pass `access` to replace how Azure is reached."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    options = vars(args)
    overrides = Overrides(
        connection_string=options.get("connection_string"),
        key=options.get("key"),
        endpoint=options.get("endpoint"),
        hub=options.get("hub"),
    )
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT_SECONDS))
    access = access or AzureAccess(timeout=timeout)
    source = collect_settings(os.environ, Path.cwd(), overrides)
    target = resolve_target(source, overrides)
    report = Report(args.command)
    report.conceal(overrides.connection_string, source.environ.get("WEBPUBSUB_CONNECTION_STRING"), target.key)
    with _quiet_azure_logs():
        if args.command == "config":
            from doctor.config import check_config

            report.extend(check_config(source, access))
        elif args.command == "token":
            _token(args, report, target, overrides, access)
        elif args.command == "hubs":
            problem = _hubs(args, report, source, target, access, timeout)
            if problem:
                parser.print_usage(sys.stderr)
                print(f"{PROG} hubs: error: {problem}", file=sys.stderr)
                return 2
        elif not _handler(args, report, target, access, timeout):
            parser.print_usage(sys.stderr)
            print(
                f"{PROG} handler: error: no service endpoint is configured, so there is no host to send as "
                "WebHook-Request-Origin; set WEBPUBSUB_CONNECTION_STRING or WEBPUBSUB_ENDPOINT, or pass "
                "--connection-string or --endpoint",
                file=sys.stderr,
            )
            return 2
    print(report.render_json() if options.get("json") else report.render_text(), file=out)
    return report.exit_code


def _token(args: argparse.Namespace, report: Report, target: Target, overrides: Overrides, access: AzureAccess) -> None:
    from doctor.token import ClientAddress, bare_token, check_token, is_client_url

    text = sys.stdin.read() if args.client_token == STDIN else args.client_token
    report.conceal(text.strip(), bare_token(text), *url_query_values(text.strip()))
    if not is_client_url(text) or not (overrides.key or overrides.connection_string):
        report.add(target.describe())  # the configuration is what the token is compared with
    key, key_note = signing_key(target, access)
    report.conceal(key)
    configured = ClientAddress(target.endpoint, target.hub) if target.endpoint else None
    report.extend(check_token(text, configured=configured, key=key, key_note=key_note, groups=args.group))


def _hubs(
    args: argparse.Namespace,
    report: Report,
    source: SettingsSource,
    target: Target,
    access: AzureAccess,
    timeout: float,
) -> str | None:
    """Run the hub checks; a usage problem (nothing to compare, or where to read) is returned instead."""
    import requests

    from doctor.hubs import AppExpectation, AzureHubs, AzureResource, HubSettingsSource, LocalHubs, check_hubs

    report.add(target.describe())
    if target.service is None or target.endpoint is None:
        return "the service's settings do not load, so there are no hubs to compare; run `config` first"
    settings = target.service
    expected = AppExpectation.of(target.settings, source.environ, args.app_url)
    hub_source: HubSettingsSource
    if is_loopback_host(urlsplit(target.endpoint).hostname or ""):
        hub_source = LocalHubs(target.endpoint, requests.Session(), timeout)
    else:
        resource = AzureResource.resolve(
            source.environ,
            target.endpoint,
            subscription=args.subscription,
            resource_group=args.resource_group,
            resource_name=args.resource_name,
        )
        if resource.missing:
            return "to read the hub settings from Azure, pass " + ", ".join(resource.missing)
        assert resource.subscription is not None  # none is missing
        assert resource.resource_group is not None
        assert resource.resource_name is not None
        hub_source = AzureHubs(
            resource.subscription,
            resource.resource_group,
            resource.resource_name,
            credential=lambda: access.credential_for(settings),
            deadline=access.deadline,
            client_factory=access.management_client,
        )
    report.extend(check_hubs(hub_source, expected))
    return None


def _handler(args: argparse.Namespace, report: Report, target: Target, access: AzureAccess, timeout: float) -> bool:
    """Run the handler checks; False when there is no service host to send as the origin."""
    from doctor.handler import HandlerTarget, check_handler

    report.conceal(*url_query_values(args.url))
    origin_host = urlsplit(target.endpoint).hostname if target.endpoint else None
    if not origin_host:
        return False
    report.add(target.describe())
    key, key_note = signing_key(target, access)
    report.conceal(key)
    bearer, bearer_note = (None, key_note) if key is not None else event_token(target, access)
    report.conceal(bearer)
    handler_target = HandlerTarget(
        url=args.url,
        origin_host=origin_host,
        hub=target.hub,
        key=key,
        key_note=key_note,
        timeout=timeout,
        bearer=bearer,
        bearer_note=bearer_note,
    )
    report.extend(check_handler(handler_target))
    return True
