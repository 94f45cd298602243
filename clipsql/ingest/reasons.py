"""Why a file under a loaded folder has no row: every reason code, written once, with what it
means.

:class:`Reason` is what ``clipsql.failures.reason`` holds (a file that is an image by its
name but could not be read); :class:`Ignored` what ``clipsql.ignored.reason`` holds (a file
that is not looked at). The walk, the decoders and the writers of both tables use these
members only, and the writers check what they store (:func:`Reason.of`), so a code that is
not listed here fails at once instead of reaching a database. The values are stored in
existing databases: never change one.

>>> Reason.VANISHED == "vanished", f"{Reason.VANISHED}", Reason.of("corrupt") is Reason.CORRUPT
(True, 'vanished', True)
>>> Reason.TRUNCATED.description
'the file is cut short'
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Ignored", "Reason"]


class _Code(str, Enum):
    """A stored code (the member is its ``str`` value) with a one-line ``description``."""

    description: str

    def __new__(cls, value: str, description: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, value):
        """The member for a stored value; ValueError for a code that is not one."""
        return cls(str(value))


class Reason(_Code):
    """Why an image could not be loaded (``clipsql.failures.reason``)."""

    EMPTY = "empty", "the file is empty (0 bytes)"
    TOO_LARGE = "too_large", "the file is over the size limit: not read at all"
    UNREADABLE = "unreadable", ("cannot be read: no permission, not a regular file (a FIFO, "
                                "a device), or a folder that cannot be listed")
    VANISHED = "vanished", "listed by the walk, then gone before it could be read"
    BAD_NAME = "bad_name", "the file name is not valid UTF-8"
    BROKEN_LINK = "broken_link", "a symbolic link to nothing"
    UNSUPPORTED = "unsupported", "not an image format the decoders read"
    TRUNCATED = "truncated", "the file is cut short"
    CORRUPT = "corrupt", "the file is damaged"
    DECOMPRESSION_BOMB = "decompression_bomb", ("over the pixel limit, or decoding it needs "
                                                "more memory than the budget: refused "
                                                "before decoding")
    TOO_SLOW = "too_slow", ("its decode took longer than its deadline (CPU seconds, scaled "
                            "by its size): stopped")
    LINK_OUTSIDE = "link_outside", ("replaced by a link to a place outside the loaded "
                                    "folders after the folder was listed: not read")


class Ignored(_Code):
    """Why a file is not looked at (``clipsql.ignored.reason``)."""

    NOT_IMAGE = "not_image", "neither an image nor a video, by its name"
    HIDDEN = "hidden", "a hidden file (its name starts with a dot)"
    LINK_OUTSIDE = "link_outside", "a link to a place outside the loaded folder"
