"""The ``talker`` command: one entry point over the run-time (``realtime``) and offline
(``models``) commands."""
