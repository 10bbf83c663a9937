"""Scroll position of a scrollback, independent of how lines are drawn (pure).

A chat log is read from the bottom, so the position is anchored there: the index of the entry
at the bottom of the screen and how many of its lines are hidden below it, or *following*
(the newest entry at the bottom, moving down as messages arrive). Finding what is on the
screen walks from the anchor and asks for the height of only the entries it meets, so the cost
of drawing and scrolling depends on the screen's height, never on the scrollback's length.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HeightOf", "Row", "Viewport"]

#: how many lines entry ``i`` takes at the current width
HeightOf = Callable[[int], int]
#: one screen line: (entry index, line number within that entry)
Row = tuple[int, int]


class Viewport:
    __slots__ = ("anchor", "follow", "offset", "top_index")

    def __init__(self) -> None:
        self.follow = True
        self.anchor = 0
        self.offset = 0
        #: index of the entry at the top of the screen when last drawn (None: never drawn)
        self.top_index: int | None = None

    # ------------------------------------------------------------------ the model changed

    def inserted(self, index: int, count: int) -> None:
        """``count`` entries were inserted at ``index``: keep showing the same ones."""
        if self.follow:
            return
        if index <= self.anchor:
            self.anchor += count
        if self.top_index is not None and index <= self.top_index:
            self.top_index += count

    def removed_front(self, count: int) -> None:
        """The first ``count`` entries were dropped."""
        if self.top_index is not None:
            self.top_index = max(0, self.top_index - count)
        if self.follow:
            return
        self.anchor -= count
        if self.anchor < 0:
            self.anchor, self.offset = 0, 0

    # ------------------------------------------------------------------ drawing

    def rows(self, count: int, height: int, height_of: HeightOf) -> list[Row]:
        """What is on a screen ``height`` lines high, top to bottom. When the entries do not
        fill the screen the list is shorter (the caller aligns it to the bottom)."""
        if count <= 0 or height <= 0:
            self.top_index = None
            return []
        if self.follow:
            i, off = count - 1, 0
        else:
            i = min(self.anchor, count - 1)
            off = self.offset if i == self.anchor else 0
        rows = self._collect_up(i, off, height, height_of)
        if len(rows) < height and not self.follow:
            # scrolled past the top: put the first line at the top of the screen
            rows = self._collect_down(0, 0, count, height, height_of)
            if len(rows) < height:
                self.follow = True
                rows = self._collect_up(count - 1, 0, height, height_of)
            else:
                self._anchor_on(rows[-1], height_of)
        self.top_index = rows[0][0] if rows else None
        return rows

    @staticmethod
    def _collect_up(i: int, off: int, height: int, height_of: HeightOf) -> list[Row]:
        rows: list[Row] = []
        while i >= 0 and len(rows) < height:
            h = height_of(i)
            line = h - off - 1
            while line >= 0 and len(rows) < height:
                rows.append((i, line))
                line -= 1
            off = 0
            i -= 1
        rows.reverse()
        return rows

    @staticmethod
    def _collect_down(i: int, line: int, count: int, height: int, height_of: HeightOf) -> list[Row]:
        rows: list[Row] = []
        while i < count and len(rows) < height:
            h = height_of(i)
            while line < h and len(rows) < height:
                rows.append((i, line))
                line += 1
            line = 0
            i += 1
        return rows

    def _anchor_on(self, row: Row, height_of: HeightOf) -> None:
        index, line = row
        self.anchor = index
        self.offset = height_of(index) - 1 - line

    # ------------------------------------------------------------------ moving

    def scroll(self, lines: int, count: int, height: int, height_of: HeightOf) -> None:
        """Scroll ``lines`` towards older entries (negative: towards newer)."""
        if count <= 0 or lines == 0:
            return
        if self.follow:
            if lines < 0:
                return
            self.follow, self.anchor, self.offset = False, count - 1, 0
        self.anchor = min(self.anchor, count - 1)
        self.offset += lines
        if lines > 0:
            while self.offset >= height_of(self.anchor):
                if self.anchor == 0:
                    self.offset = height_of(0) - 1
                    break
                self.offset -= height_of(self.anchor)
                self.anchor -= 1
        else:
            while self.offset < 0:
                if self.anchor >= count - 1:
                    self.offset = 0
                    break
                self.anchor += 1
                self.offset += height_of(self.anchor)
        if self.anchor >= count - 1 and self.offset <= 0:
            self.to_bottom()
        else:
            self.rows(count, height, height_of)  # clamps at the top

    def to_bottom(self) -> None:
        self.follow, self.offset = True, 0

    def show_at_top(self, index: int, count: int, height: int, height_of: HeightOf) -> None:
        """Scroll so that entry ``index`` starts at the top of the screen (or follow, if
        everything from it on fits)."""
        rows = self._collect_down(index, 0, count, height, height_of)
        if len(rows) < height or (
            rows[-1][0] >= count - 1 and rows[-1][1] == height_of(count - 1) - 1
        ):
            self.to_bottom()
            return
        self.follow = False
        self._anchor_on(rows[-1], height_of)

    def below(self, count: int) -> int:
        """Entries entirely below the screen."""
        if self.follow or count <= 0:
            return 0
        return max(0, count - 1 - self.anchor)
