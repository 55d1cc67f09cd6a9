"""Text that can be stored and shown: what every writer of user-supplied text runs it through.

- ``storable``: lossless except for what SQLite cannot hold. NUL characters are dropped and lone
  UTF-16 surrogates (JSON allows ``"\\ud800"``; Python decodes it to a string that cannot be encoded
  as UTF-8, and sqlite3 then raises) become U+FFFD. Used by the store on every write of free text.
- ``clean_input``: for text typed or sent by users, before it reaches the model and the store:
  ``storable`` plus the removal of control characters other than tab, newline and carriage return
  (terminal escapes, backspaces, the C1 block), which no tokenizer needs and which hide text in logs.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def storable(text: str) -> str:
    """``text`` without NULs and with lone surrogates replaced by U+FFFD (idempotent)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", text)


def is_storable(text: object) -> bool:
    """Text that SQLite stores as given (for keys like user ids, which must not be silently changed)."""
    return isinstance(text, str) and "\x00" not in text and not _SURROGATE.search(text)


def clean_input(text: str | None) -> str:
    """User input as it is kept: ``storable`` and without control characters except \\t \\n \\r."""
    return _CONTROL.sub("", storable(text or ""))
