"""The worklist window: cases screened in the background appear ranked with bands, thumbnails and review marks;
filtering; double-click opens the case in the viewer with its overlays."""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtGui

from app.services.cases import ScreenOptions
from app.services.worklist import DONE, Worklist
from inference.screening.config import ScreeningConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from viewer.dicom.write import write_ct_series
    from viewer.synthetic.phantom import make_phantom

    root = tmp_path_factory.mktemp("wl-studies")
    for seed in (3, 4):
        write_ct_series(make_phantom(shape=(24, 64, 64), spacing=(5.0, 5.0, 5.0), seed=seed).volume,
                        root / f"s{seed}")
    return root


def _window(qtbot, tmp_path):
    from app.gui.worklist_window import WorklistWindow

    options = ScreenOptions(config=ScreeningConfig(lesion_model=None), device="cpu")
    wl = Worklist(options, cache_path=tmp_path / "c.sqlite3", results_root=tmp_path / "cases")
    window = WorklistWindow(worklist=wl, workers=1)
    qtbot.addWidget(window)
    return window


def _column(window, name: str) -> int:
    return window.model.COLUMNS.index(name)


def test_worklist_window_ranks_screened_cases_with_bands_and_thumbnails(qtbot, tmp_path, studies):
    window = _window(qtbot, tmp_path)
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    window.add_paths([str(studies)])
    qtbot.waitUntil(lambda: not window.is_running(), timeout=180_000)
    timer.stop()
    assert len(ticks) > 10  # the event loop kept turning while the cases were screened
    proxy = window.proxy
    assert proxy.rowCount() == 2
    p_col = _column(window, "P(COVID-19)")
    probs = [window.model.items[proxy.mapToSource(proxy.index(r, 0)).row()].probability for r in range(2)]
    assert probs == sorted(probs, reverse=True) and None not in probs
    assert proxy.index(0, _column(window, "Rank")).data() == "1"
    colour = proxy.index(0, p_col).data(QtCore.Qt.ItemDataRole.BackgroundRole)
    band = window.bands.band(probs[0])
    assert isinstance(colour, QtGui.QColor) and colour.name() == {"high": "#f5b7b1", "intermediate": "#fad7a0",
                                                                  "low": "#d5f5e3"}[band]
    assert band in proxy.index(0, p_col).data()
    thumb = proxy.index(0, _column(window, "Key image")).data(QtCore.Qt.ItemDataRole.DecorationRole)
    assert isinstance(thumb, QtGui.QPixmap) and not thumb.isNull()
    assert proxy.index(0, _column(window, "Status")).data() == DONE
    qtbot.waitUntil(lambda: "2 of 2 done" in window.counts.text(), timeout=1000)  # refreshed within 100 ms
    assert window.statusBar().currentMessage() == ""  # no "Scanning..." left once it is all done
    # bands follow the thresholds: everything at or above 0 is "high"
    window.low_spin.setValue(0.0)
    window.high_spin.setValue(0.0)
    assert "high" in proxy.index(1, p_col).data()


def test_reviewed_marks_filtering_and_opening_a_case(qtbot, tmp_path, studies):
    window = _window(qtbot, tmp_path)
    window.add_paths([str(studies)])
    qtbot.waitUntil(lambda: not window.is_running(), timeout=180_000)
    proxy, rev = window.proxy, _column(window, "Reviewed")
    assert proxy.setData(proxy.index(0, rev), QtCore.Qt.CheckState.Checked.value,
                         QtCore.Qt.ItemDataRole.CheckStateRole)
    reviewed = window.model.items[proxy.mapToSource(proxy.index(0, 0)).row()]
    assert reviewed.reviewed
    window.hide_reviewed.setChecked(True)
    assert proxy.rowCount() == 1
    window.hide_reviewed.setChecked(False)
    window.filter_edit.setText("no such patient")
    assert proxy.rowCount() == 0
    window.filter_edit.setText(reviewed.row["patient_id"])
    assert proxy.rowCount() == 1
    window.filter_edit.clear()
    with qtbot.waitSignal(window.open_case, timeout=5000) as signal:
        window.table.doubleClicked.emit(proxy.index(0, 0))
    source, series, overlays = signal.args
    assert source == reviewed.case.source and series == reviewed.case.series
    assert [o.rsplit("/", 1)[-1] for o in overlays] == ["lesions.nii.gz", "heatmap.nii.gz"]
    # a new window on the same cache: everything is done at once, the review mark kept
    again = _window(qtbot, tmp_path)
    again.add_paths([str(studies)])
    qtbot.waitUntil(lambda: not again.is_running(), timeout=60_000)
    assert sorted(i.status for i in again.worklist.items) == [DONE, DONE]
    assert sum(i.reviewed for i in again.worklist.items) == 1
    out = again.write_report(str(tmp_path / "wl.pdf"))
    assert out.read_bytes().startswith(b"%PDF")


def test_main_window_opens_the_worklist_and_a_double_clicked_case(qtbot, tmp_path, studies, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("LUNGLENS_DATA_DIR", str(tmp_path / "data"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    opened = []
    monkeypatch.setattr(win, "open_path", lambda path, series=None, overlays=None: opened.append((path, overlays)))
    win.show_worklist()
    wl = win._worklist
    qtbot.addWidget(wl)
    assert wl.isVisible() and wl.worklist.cache_path.parent == tmp_path / "data"
    wl.open_case.emit("/some/series", "1.2.3", ["/x/lesions.nii.gz"])
    assert opened == [("/some/series", ["/x/lesions.nii.gz"])]


def test_each_update_re_sorts_re_ranks_and_re_filters_at_once(qtbot, tmp_path):
    from app.services.cases import Case
    from app.services.worklist import QUEUED, RUNNING, WorkItem
    from app.services.worklist_db import CacheKey

    window = _window(qtbot, tmp_path)
    items = [WorkItem(Case(f"case{k}", f"1.2.{k}", f"/studies/{k}"), CacheKey(f"1.2.{k}", "f", "m", "w"),
                      row={"patient_id": f"P{k}"}) for k in range(4)]
    window.worklist.items.extend(items)
    window._on_added()
    proxy, rank = window.proxy, _column(window, "Rank")

    def shown() -> list[tuple[str, str]]:
        return [(window.model.items[proxy.mapToSource(proxy.index(r, 0)).row()].case.name,
                 proxy.index(r, rank).data()) for r in range(proxy.rowCount())]

    for k, p in ((2, 0.40), (0, 0.90), (3, 0.10)):  # as results arrive, in no particular order
        items[k].status = RUNNING
        window._on_updated(items[k])
        items[k].status, items[k].row = DONE, {**items[k].row, "probability": p, "status": "ok"}
        window._on_updated(items[k])
    assert shown()[:3] == [("case0", "1"), ("case2", "2"), ("case3", "3")]  # no reset, no refresh needed
    assert shown()[3] == ("case1", "") and items[1].status == QUEUED
    window.filter_edit.setText("P2")
    assert shown() == [("case2", "2")]
    items[2].row["patient_id"] = "P9"  # a changed row leaves a filter it no longer matches at its update
    window._on_updated(items[2])
    assert shown() == []


def test_a_burst_of_results_refreshes_the_counts_once_and_paints_nothing_at_once(qtbot, tmp_path):
    from app.services.cases import Case
    from app.services.worklist import RUNNING, WorkItem
    from app.services.worklist_db import CacheKey

    window = _window(qtbot, tmp_path)
    window.show()
    qtbot.waitExposed(window)
    items = [WorkItem(Case(f"case{k}", f"1.2.{k}", f"/studies/{k}"), CacheKey(f"1.2.{k}", "f", "m", "w"),
                      row={"patient_id": f"P{k}"}) for k in range(6)]
    window.worklist.items.extend(items)
    window._on_added()
    qtbot.waitUntil(lambda: "0 of 6 done" in window.counts.text(), timeout=1000)
    texts: list[str] = []
    set_text = window.counts.setText
    window.counts.setText = lambda text: (texts.append(text), set_text(text))  # type: ignore[method-assign]
    paints: list[int] = []

    class PaintCounter(QtCore.QObject):
        def eventFilter(self, obj, event):
            if event.type() == QtCore.QEvent.Type.Paint:
                paints.append(1)
            return False

    counter = PaintCounter()
    window.table.viewport().installEventFilter(counter)
    for item in items:  # six results in one pass of the event loop (the GUI thread was busy meanwhile)
        item.status, item.row = "done", {**item.row, "probability": 0.5, "status": "ok"}
        window._on_updated(item)
    items[0].status = RUNNING
    window._on_updated(items[0])
    assert texts == [] and paints == []  # nothing painted synchronously, once per result
    qtbot.waitUntil(lambda: texts == ["5 of 6 done, 1 running (screening)"], timeout=1000)
    assert window.progress.value() == 5
    window.progress.installEventFilter(counter)
    paints.clear()
    items[0].status = "done"
    window._update_status()  # the refresh itself paints in the next pass of the event loop, not at once
    assert paints == [] and window.progress.value() == 6
    qtbot.waitUntil(lambda: len(paints) > 0, timeout=1000)
