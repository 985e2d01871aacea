"""Numbers in paths, headers and addresses: ASCII digits only.

`str.isdigit` also accepts characters `int` refuses ("²") or reads ("٣" is 3), so a check with
it lets a version directory named "²" crash the repository walk and a REST version "²" answer
500. Every such check goes through `ascii_digits`.
"""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """Whether `text` is one or more of the ASCII digits 0-9."""
    return text.isascii() and text.isdigit()
