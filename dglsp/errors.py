"""One error base class for everything dglsp reports to a user.

The server maps `DglspError` to an LSP error response (for a request) or a
`window/showMessage` (for background work) in one place; anything else is a bug
and is logged with its traceback.
"""

from __future__ import annotations


class DglspError(Exception):
    """An error with a message fit for the user: what went wrong and how to fix it."""

    #: JSON-RPC error code used when this error answers a request.
    code: int = -32603  # InternalError


class InvalidRequestError(DglspError):
    """The client sent something we cannot act on (unknown document, bad position)."""

    code = -32602  # InvalidParams


class ModelLoadError(DglspError):
    """The model or tokenizer could not be loaded; the message names the file and the fix."""


class ModelNotReadyError(DglspError):
    """A completion was asked for before the model finished loading, or after it failed to."""

    code = -32002  # ServerNotInitialized is the closest standard code


class BackendError(DglspError):
    """The model's server cannot give a completion now (down, refusing the key, failing); the message says why.
    Not a `ModelNotReadyError`: "the server is down" and "the model is loading" are different things to show."""

    code = -32803  # RequestFailed


class DeviceOutOfMemoryError(DglspError):
    """The device ran out of memory even after retrying with smaller canvases."""
