"""Local development stack: runs the whole product on one machine without Azure.

Never deployed, and nothing in ``shared/`` or ``function_app.py`` may import it. The launcher
(``__main__``) and the local Functions host (``host``) serve the app itself, so they use
``function_app`` and ``shared``. The local Web PubSub service (``webpubsub``) imports nothing
from the app: it is an independent implementation of the Azure side, so a bug in the app's
protocol code cannot hide behind a stand-in that shares it.
"""
