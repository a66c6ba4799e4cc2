"""The DICOM tag browser dock: every attribute of the file the current slice comes from, with a filter."""

from __future__ import annotations

import os

from PySide6 import QtGui, QtWidgets

from viewer.core.errors import LoadError
from viewer.dicom.tags import (
    TagRow,
    differing_tags,
    filter_rows,
    nearest_file,
    read_dataset,
    slice_planes,
    tag_rows,
)
from viewer.state.view_state import ViewerState

COLUMNS = ("tag", "keyword", "VR", "value")


class TagPanel(QtWidgets.QWidget):
    """Lists (gggg,eeee), keyword, VR and value of the current slice's DICOM file; sequences expand, private tags
    show, and tags whose values differ between the series' files are marked with a star and in bold.

    It follows the crosshair while it is visible (the file whose plane lies nearest the cursor) and reads the
    series' headers once per volume, on first use."""

    def __init__(self, state: ViewerState, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.filter = QtWidgets.QLineEdit()
        self.filter.setPlaceholderText("filter: tag, keyword or value")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(lambda _t: self._fill())
        self.file_label = QtWidgets.QLabel("")
        self.file_label.setWordWrap(True)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filter)
        layout.addWidget(self.file_label)
        layout.addWidget(self.tree, 1)
        self._headers: list | None = None  # the series' data sets without pixels, read on first use
        self._planes: tuple | None = None  # their positions and normals (`slice_planes`), for the cursor's file
        self._differing: set[str] = set()
        self._shown_file: str | None = None
        self.rows: list[TagRow] = []
        state.volume_changed.connect(lambda _v: self._forget())
        state.cursor_changed.connect(lambda _c: self.refresh() if self.isVisible() else None)

    def _forget(self) -> None:
        self._headers, self._planes, self._differing, self._shown_file, self.rows = None, None, set(), None, []
        if self.isVisible():
            self.refresh()
        else:
            self.tree.clear()

    def showEvent(self, ev: QtGui.QShowEvent) -> None:
        super().showEvent(ev)
        self.refresh()

    def refresh(self) -> None:
        """Show the tags of the file under the crosshair (nothing to do when it is the one shown)."""
        vol = self.state.volume
        if vol is None:
            self._message("no CT open")
            return
        if not vol.files:
            self._message(f"no DICOM tags: {os.path.basename(vol.source) or 'this volume'} was not read from DICOM")
            return
        try:
            if self._headers is None:
                self._headers = [read_dataset(f, pixels=False) for f in vol.files]
                self._planes = slice_planes(self._headers)
                self._differing = differing_tags(self._headers)
            path = vol.files[nearest_file(self._planes, vol.index_to_lps(self.state.cursor))]
            if path == self._shown_file:
                return
            rows = tag_rows(read_dataset(path))
        except LoadError as exc:
            self._message(str(exc))
            return
        self._shown_file = path
        self.rows = [TagRow(**{**r.as_dict(), "differs": r.depth == 0 and r.tag in self._differing}) for r in rows]
        self.file_label.setText(f"{path}  ({len(vol.files)} file(s); * differs between them)")
        self._fill()

    def _message(self, text: str) -> None:
        self._shown_file, self.rows = None, []
        self.file_label.setText(text)
        self.tree.clear()

    def _fill(self) -> None:
        """Rebuild the tree from `rows` under the filter; a matching nested row brings its parents along."""
        self.tree.clear()
        keep = {id(r) for r in filter_rows(self.rows, self.filter.text())}
        parents: list[QtWidgets.QTreeWidgetItem] = []
        pending: list[tuple[int, TagRow]] = []  # ancestors not yet shown, by depth
        bold = QtGui.QFont()
        bold.setBold(True)
        for row in self.rows:
            while pending and pending[-1][0] >= row.depth:
                pending.pop()
            while len(parents) > row.depth:
                parents.pop()
            if id(row) not in keep:
                pending.append((row.depth, row))
                continue
            for depth, ancestor in pending:  # show the sequence and item rows that lead here
                if depth >= len(parents):
                    parents.append(self._item(ancestor, parents, bold))
            pending.clear()
            parents.append(self._item(row, parents, bold))
        self.tree.expandAll()
        for col in range(3):
            self.tree.resizeColumnToContents(col)

    def _item(self, row: TagRow, parents: list[QtWidgets.QTreeWidgetItem],
              bold: QtGui.QFont) -> QtWidgets.QTreeWidgetItem:
        tag = f"* {row.tag}" if row.differs else row.tag
        item = QtWidgets.QTreeWidgetItem([tag, row.keyword, row.vr, row.value])
        if row.differs:
            for col in range(len(COLUMNS)):
                item.setFont(col, bold)
        if row.private:
            item.setForeground(1, QtGui.QBrush(QtGui.QColor(120, 120, 160)))
        if parents and row.depth > 0:
            parents[-1].addChild(item)
        else:
            self.tree.addTopLevelItem(item)
        return item

    def shown_tags(self) -> list[str]:
        """The tags listed now, depth-first (tests and the filter's check)."""
        out: list[str] = []

        def walk(item: QtWidgets.QTreeWidgetItem) -> None:
            out.append(item.text(0))
            for i in range(item.childCount()):
                walk(item.child(i))

        for i in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(i))
        return out

