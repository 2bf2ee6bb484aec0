"""`python -m shared.doctor`: the troubleshooting guide turned into checks with answers.

    python -m shared.doctor config                 settings as the app loads them, then probes
    python -m shared.doctor token <URL or JWT>     why a client access token is refused
    python -m shared.doctor handler <URL>          what the service sees of an event handler

It lives in `shared` so that it runs wherever the app is deployed, with the same settings, and it
reuses the app's own code for them. Nothing the Functions host imports imports this package.
Importing it does no work; each command loads what it needs.
"""
