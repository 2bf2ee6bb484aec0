"""Helpers shared by the test suites: settings and request builders, signed events, stand-ins and fakes.

Fixtures stay in the `conftest.py` files; everything a test imports comes from here.
"""
