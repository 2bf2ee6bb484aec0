"""Local development stack: runs the whole product on one machine without Azure.

Never deployed. Nothing in ``shared/`` or ``function_app.py`` may import it, and it imports
nothing from them: the local services are independent implementations of the Azure side, so a
bug in the app's protocol code cannot hide behind a stand-in that shares it.
"""
