"""The two error families, split by whose fault a failure is (as h11 does).

`RemoteError` is bad input from outside: the wire, the hub's data, a reader frame,
a kiosk request. The controller rejects that input, logs it and carries on.
`LocalError` is our own bug or a bad local config file: it is allowed to stop us.
"""

from __future__ import annotations


class AlcError(Exception):
    """Base of every error alc raises on purpose."""


class RemoteError(AlcError):
    """Input from outside the controller is malformed or not allowed.

    `kind`, `id` and `field` name the record and field at fault when a record is.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.id = id
        self.field = field


class LocalError(AlcError):
    """Our own configuration or code is wrong; not caused by any peer."""
