"""The Analyze action: run a model on the open volume in a worker, show the results and overlays."""

from __future__ import annotations

import traceback

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from app.workers import Worker
from inference.prediction import Prediction
from inference.registry import WeightsError, list_models
from inference.screening import ScreeningCancelled, run
from inference.slice_classifier import SliceClassifier
from viewer.layers import HeatmapLayer, LabelLayer
from viewer.slicing import Orientation
from viewer.view_state import ViewerState

HEATMAP_LAYER = "AI heat map"
MASK_LAYER = "AI lungs + lesions"


def usable_models() -> list[str]:
    """Registered slice models that ship weights (the ones a user can run)."""
    return [m.name for m in list_models() if m.input_kind == "slice" and m.weights is not None]


class AnalyzeWorker(Worker):
    """Runs `inference.screening.run` off the GUI thread; `done(Prediction)` carries the result."""

    done = QtCore.Signal(object)

    def __init__(self, volume: np.ndarray, spacing, model: str | SliceClassifier, device: str = "auto") -> None:
        super().__init__()
        self.volume, self.spacing, self.model, self.device = volume, spacing, model, device

    @QtCore.Slot()
    def run(self) -> None:
        try:
            pred = run(self.volume, self.spacing, self.model, device=self.device, progress=self.progress.emit,
                       cancel=self._cancel.is_set)
            self._deliver(self.done, pred)
        except ScreeningCancelled:
            self._deliver(self.cancelled)
        except (WeightsError, ValueError, KeyError) as exc:
            self._deliver(self.failed, str(exc))
        except Exception as exc:  # noqa: BLE001 - report, do not kill the thread silently
            self._deliver(self.failed, f"analysis failed: {exc}\n{traceback.format_exc(limit=3)}")
        finally:
            self._finish()


class ResultsPanel(QtWidgets.QWidget):
    """Case probability, per-slice probability plot (click: go to that slice) and lesion burden."""

    def __init__(self, state: ViewerState, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.prediction: Prediction | None = None
        self.headline = QtWidgets.QLabel("No analysis yet: AI > Analyze")
        self.headline.setWordWrap(True)
        self.headline.setStyleSheet("font-size: 15px; font-weight: bold;")
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "axial slice")
        self.plot.setLabel("left", "P(COVID)")
        self.plot.setYRange(0, 1)
        self.plot.setMouseEnabled(x=False, y=False)
        self.curve = self.plot.plot([], [], pen=pg.mkPen((200, 40, 40), width=2), symbol="o", symbolSize=4)
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((40, 40, 200)))
        self.plot.addItem(self.marker)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_click)
        self.table = QtWidgets.QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["lung", "zone", "lesion mL", "% involved", "score"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.disclaimer = QtWidgets.QLabel("Research use only: not for clinical diagnosis.")
        self.disclaimer.setStyleSheet("color: #a33;")
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.headline, self.plot, self.table, self.disclaimer):
            layout.addWidget(w)
        state.cursor_changed.connect(lambda c: self.marker.setPos(c[0]))

    def show_prediction(self, pred: Prediction) -> None:
        self.prediction = pred
        self.headline.setText(
            f"P(COVID) = {pred.positive_probability:.2f}  ({pred.model}, {pred.aggregation}, {pred.device})\n"
            f"lesions {pred.lesion_ml:.1f} mL, {pred.involvement_percent():.1f} % of the lungs "
            f"(right {pred.involvement_percent('right'):.1f} %, left {pred.involvement_percent('left'):.1f} %), "
            f"severity {pred.severity}/30; {pred.timings.get('total', 0):.1f} s")
        self.curve.setData(pred.slice_indices.astype(float), pred.slice_probabilities.astype(float))
        self.table.setRowCount(len(pred.zones))
        for row, z in enumerate(pred.zones):
            for col, value in enumerate((z.lung, z.zone, f"{z.lesion_ml:.1f}", f"{z.percent:.1f}", str(z.score))):
                self.table.setItem(row, col, QtWidgets.QTableWidgetItem(value))

    def _on_plot_click(self, ev) -> None:
        if self.prediction is None or len(self.prediction.slice_indices) == 0:
            return
        x = self.plot.getPlotItem().vb.mapSceneToView(ev.scenePos()).x()
        self.jump_to_slice(x)

    def jump_to_slice(self, x: float) -> None:
        """Move the viewer to the classified slice nearest to x."""
        idx = self.prediction.slice_indices
        k = int(idx[np.argmin(np.abs(idx - x))])
        self.state.set_slice(Orientation.AXIAL, k)


def add_prediction_layers(state: ViewerState, pred: Prediction) -> None:
    """The heat map and the lung + lesion labels as overlay layers on the viewer."""
    labels = pred.lung_mask.astype(np.uint8).copy()
    lesions = pred.lesion_mask > 0
    labels[lesions] = pred.lesion_mask[lesions]
    state.layers.add(LabelLayer(MASK_LAYER, labels, opacity=0.4, hidden_labels={1, 2}), state.shape)
    state.layers.add(HeatmapLayer(HEATMAP_LAYER, pred.heatmap, colormap="jet", opacity=0.45, threshold=0.25),
                     state.shape)
