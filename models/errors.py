"""The one exception tree of diffusion-talker.

::

    TalkerError                 everything this project raises on purpose
    ├── UserError               the input or the set-up is wrong; the message says how to fix it
    │   ├── ConfigError         a bad command-line argument, option or config value
    │   ├── DataError           a file, folder or tool the data needs is missing or broken
    │   │                       (corpus, dataset, WAV, face asset, glTF, rig, espeak-ng)
    │   ├── ModelError          a checkpoint that cannot be loaded, or input the model refuses
    │   ├── ProtocolError       a peer's bad message (realtime.errors: carries code and close code)
    │   └── ClientError         the server refused or dropped a client (realtime.client)
    └── InternalError           a fault inside the server (realtime.engine.EngineError): a bug,
                                or a dependency that failed; logged with its traceback

Whether an error is the user's fault or a bug is its class, never its module: the CLI prints a
:class:`UserError` as one line and exits 2, and lets anything else keep its traceback; the server
answers a :class:`ProtocolError` with its code and an :class:`InternalError` with ``internal``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "InternalError", "ModelError", "TalkerError", "UserError"]


class TalkerError(Exception):
    """Root of every error this project raises on purpose."""


class UserError(TalkerError):
    """The caller's input or set-up is wrong; the message names the problem and the fix."""


class ConfigError(UserError):
    """A bad command-line argument, option or configuration value."""


class DataError(UserError):
    """A file, folder or external tool that the data needs is missing, inconsistent or broken;
    the message names the file (or tool) and what to do."""




class ModelError(UserError):
    """A checkpoint that is missing, corrupt or from other code, or input the model refuses
    (audio, identity, sampler settings)."""


class InternalError(TalkerError):
    """A fault inside the project (a bug, or a dependency that failed), not the caller's."""
