"""Credentials in URLs never leave as text: the user-info of every URL in a text (`scheme://user:token@host`)
is blanked, in lines, reports, annotations and key preimages alike.

A regular expression, not `urllib.parse`: urlsplit takes one URL, and the texts here are free text (an error
line, a shell script, an index list of several URLs separated by spaces). Its netloc rule is urlsplit's: the
authority ends at the first `/`, `?`, `#` (or white space here), and its user-info at the last `@` before it."""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "***"
_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#]*@")


def without_userinfo(text: str, mark: str = REDACTED) -> str:
    """The text with each URL's user-info replaced by `mark` (`https://***@host/simple`); an empty mark
    drops it with its `@` (`https://host/simple`)."""
    return _USERINFO.sub(lambda match: match[1] + (mark + "@" if mark else ""), text)
