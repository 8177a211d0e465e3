"""Dependencies between jobs: which WAITING job still waits for which parents.

A job submitted with `depends_on` is WAITING until every parent is ACKED. This keeps, for each
WAITING job, the parents it still waits for (in the order given), and for each parent the
WAITING jobs that wait for it (in submission order). When a parent finishes, the state machine
asks `parent_finished()` for its children; each child stops waiting for it at once, so a
parent that is requeued after DEAD never counts twice. Both maps are part of the state (the
snapshot holds the first, the second is rebuilt from it in the same order), so a restored
machine releases and cancels children in the same order as the live one.
"""

from __future__ import annotations

__all__ = ["Dependencies"]


class Dependencies:
    __slots__ = ("awaited", "children")

    def __init__(self) -> None:
        self.awaited: dict[str, list[str]] = {}  # WAITING job -> parents it still waits for
        self.children: dict[str, list[str]] = {}  # parent -> WAITING jobs that wait for it

    def wait(self, child: str, parents: list[str]) -> None:
        # A parent named twice is waited for once.
        unique = list(dict.fromkeys(parents))
        self.awaited[child] = unique
        for parent in unique:
            self.children.setdefault(parent, []).append(child)

    def parent_finished(self, parent: str) -> list[tuple[str, bool]]:
        """The children that waited for `parent`, each with whether it waits for nothing
        more. They no longer wait for it."""
        out: list[tuple[str, bool]] = []
        for child in self.children.pop(parent, ()):
            left = self.awaited[child]
            left.remove(parent)
            out.append((child, not left))
            if not left:
                del self.awaited[child]
        return out

    def drop(self, child: str) -> None:
        """The child stops waiting (it was cancelled)."""
        for parent in self.awaited.pop(child, ()):
            siblings = self.children.get(parent)
            if siblings is not None:
                siblings.remove(child)
                if not siblings:
                    del self.children[parent]

    def dump(self) -> list[tuple[str, list[str]]]:
        return list(self.awaited.items())

    def load(self, entries: list[tuple[str, list[str]]]) -> None:
        for child, parents in entries:
            self.awaited[child] = parents
            for parent in parents:
                self.children.setdefault(parent, []).append(child)
