"""The one exception a peer's bad bytes can raise, and the one a bad environment setting raises."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A frame (or file) broke the Parallax protocol.

    ``field`` names the offending field in the ``px.*`` vocabulary of
    :meth:`pxproto.wire.Frame.to_dict` (without the ``px.`` prefix) and
    ``offset`` is the byte offset of that field from the start of the
    Ethernet frame.
    """

    def __init__(self, field: str, offset: int, reason: str) -> None:
        super().__init__(f"{field} at byte {offset}: {reason}")
        self.field = field
        self.offset = offset
        self.reason = reason

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[str, int, str]]:
        return (type(self), (self.field, self.offset, self.reason))


class SettingError(ValueError):
    """An environment variable the package reads (``PXPROTO_ETHERTYPES``) holds a value it cannot use.

    Raised when the package reads the variable, at import; the message names the variable, its
    value and what is wrong, and the console scripts print it as their one line of error.
    """

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable
        self.value = value
        self.reason = reason

    def __reduce__(self) -> tuple[type[SettingError], tuple[str, str, str]]:
        return (type(self), (self.variable, self.value, self.reason))
