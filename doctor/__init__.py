"""`python -m doctor`: the troubleshooting guide turned into checks with answers.

    python -m doctor config                 settings as the app loads them, then probes
    python -m doctor token <URL or JWT>     why a client access token is refused
    python -m doctor handler <URL>          what the service sees of an event handler
    python -m doctor hubs                   whether the service delivers every served hub's events to the app

A top-level package beside `shared/`, deployed with the app (`.funcignore` keeps it), so that it runs
in the app's console with the same settings; it reuses the app's own code for them (settings, token
sources, the probes of `shared.probes`). `shared/` never imports it, so the Functions host never loads it.
Importing it does no work; each command loads what it needs.
"""
