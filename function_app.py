"""Azure Functions entry point (Python v2 programming model).

Routes, methods and auth levels only: each function hands its request to `shared` in one call.
Nothing here reads settings or creates SDK clients; they load lazily on first use, so this import
cannot fail on configuration (a failing import makes the host report "0 functions found").

All routes are ANONYMOUS at the Functions level on purpose: negotiate and presence authenticate
callers themselves (NEGOTIATE_AUTH), the publish API too (PUBLISH_AUTH, never anonymous in
production), the event handler checks that events come from the service, and health exposes nothing
secret. A function key would add a shared secret to every client and to the hub's URL.
"""

import azure.functions as func

from shared import routes
from shared.adapter import serve

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="negotiate", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def negotiate(req: func.HttpRequest) -> func.HttpResponse:
    """Client access URL for the authenticated caller, with least-privilege group roles."""
    return serve(req, routes.negotiate)


@app.route(route="eventhandler", methods=["POST", "OPTIONS", "GET"], auth_level=func.AuthLevel.ANONYMOUS)
def eventhandler(req: func.HttpRequest) -> func.HttpResponse:
    """Web PubSub CloudEvents: the abuse-protection handshake (OPTIONS, or GET) and every event (POST)."""
    return serve(req, routes.eventhandler)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Readiness: probes the service, the credential and Key Vault; 200 healthy, else 503 with the reasons."""
    return serve(req, routes.health)


@app.route(route="health/live", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: 200 whenever the process answers; touches no setting and no dependency."""
    return serve(req, routes.health_live)


@app.route(route="client/{*asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def client(req: func.HttpRequest) -> func.HttpResponse:
    """The demo chat page (client) and its allow-listed static files (client/app.js, client/app.css)."""
    return serve(req, routes.client)


@app.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def messages(req: func.HttpRequest) -> func.HttpResponse:
    """Publish API: send a message to everyone, a group, a user or a connection (PUBLISH_AUTH)."""
    return serve(req, routes.messages)


@app.route(route="groups", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def groups(req: func.HttpRequest) -> func.HttpResponse:
    """Publish API: add or remove a user or connection to or from groups (PUBLISH_AUTH)."""
    return serve(req, routes.groups)


@app.route(route="connections", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def connections(req: func.HttpRequest) -> func.HttpResponse:
    """Publish API: close connections, or ask whether a connection, user or group has any (PUBLISH_AUTH)."""
    return serve(req, routes.connections)


@app.route(route="permissions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def permissions(req: func.HttpRequest) -> func.HttpResponse:
    """Publish API: grant, revoke or check a connection's permission on a group (PUBLISH_AUTH)."""
    return serve(req, routes.permissions)


@app.route(route="groups/{group}/users", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def group_users(req: func.HttpRequest) -> func.HttpResponse:
    """Presence: the users online in a group, for a caller negotiate would let use that group."""
    return serve(req, routes.group_users)
