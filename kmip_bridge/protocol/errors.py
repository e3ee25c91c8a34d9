"""The one exception type that becomes a KMIP failure result."""

from __future__ import annotations

from kmip.core.enums import ResultReason, ResultStatus


class KmipError(Exception):
    """A failure reported to the client as Result Status / Result Reason / Result Message.

    The message is shown to the client: it must never hold key material, and never name
    objects the caller may not see.
    """

    def __init__(
        self,
        reason: ResultReason,
        message: str,
        status: ResultStatus = ResultStatus.OPERATION_FAILED,
    ) -> None:
        super().__init__(message)
        self.reason = reason.value
        self.status = status.value
        self.message = message

    def __repr__(self) -> str:
        return f"KmipError({ResultReason(self.reason).name}, {self.message!r})"


def not_found(what: str = "object") -> KmipError:
    return KmipError(ResultReason.ITEM_NOT_FOUND, f"{what} not found")


def invalid_field(message: str) -> KmipError:
    return KmipError(ResultReason.INVALID_FIELD, message)


def missing(message: str) -> KmipError:
    return KmipError(ResultReason.MISSING_DATA, message)
