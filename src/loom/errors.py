"""Every error loom raises on purpose. The CLI turns these into one line (or one JSON object)."""

from __future__ import annotations


class LoomError(Exception):
    """A user-facing error: bad input, a bad file, a failing provider. Never a bug."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class UsageError(LoomError):
    """A malformed command line: unknown flag, missing argument."""

    code = "usage"
    exit_code = 2


class BadInput(LoomError):
    """Input that is not what loom can store: undecodable text, a value out of range."""

    code = "bad_input"


class NotFound(LoomError):
    code = "not_found"


class AmbiguousId(LoomError):
    code = "ambiguous_id"


class InvalidOperation(LoomError):
    """The operation is not allowed on this tree (a cycle, merging a root, …)."""

    code = "invalid_operation"


class DocumentError(LoomError):
    """A file that is not a valid loom document: malformed, truncated, wrong version."""

    code = "bad_document"


class StorageError(LoomError):
    """Reading or writing failed (disk full, permissions); the document is unchanged."""

    code = "storage"


class LockTimeout(LoomError):
    code = "locked"


class ConfigError(LoomError):
    code = "config"


class Interrupted(LoomError):
    """Stopped by the user (Ctrl-C) part-way; `details` say what was kept."""

    code = "interrupted"
    exit_code = 130


class BackendError(LoomError):
    """A provider failed. `retryable` says whether the same request may succeed later."""

    code = "backend"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        **details: object,
    ) -> None:
        super().__init__(message, **details)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class StreamCut(BackendError):
    """The stream ended before the provider said it was done; text received so far is valid."""

    code = "stream_cut"
