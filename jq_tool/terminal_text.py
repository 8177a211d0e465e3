"""Text that clients wrote, made safe to print on an operator's terminal (`jq get`, `jq list`,
`jq tui`, `jq worker`'s log lines).

A payload, an error or a progress note is anyone's text: any client key can write one, and an
operator's terminal reads escape sequences in what it prints. `\\x1b[2J` clears the screen,
`\\x1b]0;…` retitles the window, `\\x1b]52;c;…` writes the clipboard on terminals that allow
it, a carriage return or backspaces overwrite what was printed before, and a right-to-left
override shows text in another order than it is stored. Neither Rich nor Textual removes ESC
(they strip only BEL, BS, VT, FF and CR). Each such character is shown as its escape instead
(`\\x1b`, `\\u202e`), so the operator sees what was stored; newlines and tabs stay.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides/isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on written as its escape."""
    if text.isascii() and text.isprintable():  # the usual text: no copy, no regex
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
