"""The Analyze action: run a model on the open volume in a worker, show the results and overlays."""

from __future__ import annotations

import traceback

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from app.gui.workers import Worker
from app.services.slice_table import slice_table
from inference.core.choices import DEFAULT_SCREENING_MODEL
from inference.core.prediction import Prediction
from inference.core.types import Cancelled, InferenceError, UnknownModelError
from inference.inferers.slice import HEATMAP_METHODS, SliceClassifier
from inference.inferers.volume import VolumeClassifier
from inference.models import ModelSpec, get_model
from inference.screening.run import ScreeningConfig, run, screening_models
from viewer.state.layers import HeatmapLayer, LabelLayer
from viewer.state.slicing import Orientation
from viewer.state.view_state import ViewerState

HEATMAP_LAYER = "AI heat map"
MASK_LAYER = "AI lungs + lesions"
PLOT_MIN_HEIGHT, PLOT_MAX_HEIGHT, TABLE_MIN_HEIGHT = 120, 240, 100  # px: the per-slice plot, 3 zone-table rows
HEATMAP_OPACITY, HEATMAP_THRESHOLD = 0.45, 0.25  # threshold: fraction of the heat map's range
LUNG_METHOD_NAMES = {"threshold": "threshold", "unet": "U-Net"}


def _has_weights(spec: ModelSpec) -> bool:
    return spec.weights is not None and spec.weights.path().is_file()


def usable_models() -> list[str]:
    """Registered screening models (slice, volume, lesion segmenter) whose weights are installed (the ones a user
    can run), `screen`'s default first."""
    names = [m.name for m in screening_models() if _has_weights(m)]
    return sorted(names, key=lambda n: n != DEFAULT_SCREENING_MODEL)  # the CLI's default first, then by name


def usable_lung_methods() -> list[str]:
    """Lung mask methods a user can run: "threshold" always, "unet" when the lung U-Net's weights are installed."""
    from inference.lungs.unet import MODEL_NAME

    try:
        has_unet = _has_weights(get_model(MODEL_NAME))
    except UnknownModelError:
        has_unet = False
    return ["threshold", "unet"] if has_unet else ["threshold"]


#: how the AI dock names the heat maps of `inference.inferers.slice.HEATMAP_METHODS`
HEATMAP_NAMES = {"grad-cam": "Grad-CAM", "cam": "CAM (paper)", "lesion-attention": "lesion attention (LA 2-3)"}


def heatmap_choices() -> list[tuple[str, str]]:
    """(shown name, method) of every heat map a slice model can make, best first."""
    return [(HEATMAP_NAMES.get(m, m), m) for m in HEATMAP_METHODS]


def is_slice_model(name: str) -> bool:
    """Whether a registered model classifies slices (and so lets the user pick its heat map)."""
    try:
        return get_model(name).input_kind == "slice"
    except UnknownModelError:
        return False


def _card_warning(model: str) -> str:
    """"warning: ..." when the model's card warns about its case probability, else ""."""
    try:
        warning = get_model(model).card().get("case_probability_warning")
    except UnknownModelError:
        return ""
    return f"warning: {warning}" if warning else ""


def _other_classes(pred: Prediction) -> str:
    """", pneumonia 0.10, control 0.05" for a model with more than two classes (COVID-CT-Mask-Net), else ""."""
    if len(pred.classes) <= 2:
        return ""
    return "".join(f", {c} {pred.probabilities[c]:.2f}" for c in pred.classes[:-1][::-1])


def _by_kind(pred: Prediction) -> str:
    """" (GGO 12.3 mL, consolidation 4.5 mL)" for models that tell lesion kinds apart, else ""."""
    if not pred.lesion_ml_by_kind:
        return ""
    return " (" + ", ".join(f"{k} {v:.1f} mL" for k, v in pred.lesion_ml_by_kind.items()) + ")"


class AnalyzeWorker(Worker):
    """Runs `inference.screening.run.run` off the GUI thread; `done(Prediction)` carries the result."""

    done = QtCore.Signal(object)

    def __init__(self, volume: np.ndarray, spacing, model: str | SliceClassifier | VolumeClassifier,
                 device: str = "auto", lungs: str = "threshold", heatmap: str | None = None) -> None:
        super().__init__()
        self.volume, self.spacing, self.model, self.device, self.lungs = volume, spacing, model, device, lungs
        self.config = ScreeningConfig(heatmap=heatmap)  # a slice model's heat map (None: the model's best)

    @QtCore.Slot()
    def run(self) -> None:
        try:
            # Grad-CAM needs autograd: grad mode is per thread and on by default in this worker thread
            pred = run(self.volume, self.spacing, self.model, device=self.device, lungs=self.lungs,
                       config=self.config, progress=self.progress.emit, cancel=self._cancel.is_set)
            self._deliver(self.done, pred)
        except Cancelled:
            self._deliver(self.cancelled)
        except (InferenceError, ValueError) as exc:
            self._deliver(self.failed, str(exc))
        except Exception as exc:  # noqa: BLE001 - report, do not kill the thread silently
            self._deliver(self.failed, f"analysis failed: {exc}\n{traceback.format_exc(limit=3)}")
        finally:
            self._finish()


class ResultsPanel(QtWidgets.QWidget):
    """Case probability, a per-slice plot (click: go to that slice), the localized lesion and the burden.

    The plot shows each classified slice's P(COVID) for a slice model; a volume model has one probability per
    case, so it shows the heat map's maximum in each lung slice instead (and says so).
    """

    def __init__(self, state: ViewerState, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.prediction: Prediction | None = None
        self.headline = QtWidgets.QLabel("No analysis yet: AI > Analyze")
        self.headline.setWordWrap(True)
        self.headline.setStyleSheet("font-size: 15px; font-weight: bold;")
        keep_height = QtWidgets.QSizePolicy.Policy.Minimum  # wrapped text is never squeezed below its height
        self.headline.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, keep_height)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "axial slice")
        self.plot.setLabel("left", "P(COVID)")
        self.plot.setYRange(0, 1)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(PLOT_MIN_HEIGHT)
        self.plot.setMaximumHeight(PLOT_MAX_HEIGHT)  # its preferred 480 px made the scrolled dock mostly plot
        self.curve = self.plot.plot([], [], pen=pg.mkPen((200, 40, 40), width=2), symbol="o", symbolSize=4)
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((40, 40, 200)))
        self.plot.addItem(self.marker)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_click)
        self.plot.hide()  # an empty plot would show a meaningless axis around the crosshair's slice
        self.plot_x = np.zeros(0)  # the slices the plot shows (where a click may jump)
        self.lesion_button = QtWidgets.QPushButton("")
        self.lesion_button.setToolTip("the lesion localized by the model (CAM region on the textured lung "
                                      "component): move the crosshair to its centre")
        self.lesion_button.clicked.connect(self.go_to_lesion)
        self.lesion_button.hide()
        self.table = QtWidgets.QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["lung", "zone", "lesion mL", "% involved", "score"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(TABLE_MIN_HEIGHT)
        self.warning = QtWidgets.QLabel()  # the model card's caveat, on its own line under the headline
        self.warning.setWordWrap(True)
        self.warning.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, keep_height)
        self.warning.setStyleSheet("color: #b35c00;")
        self.warning.hide()
        self.disclaimer = QtWidgets.QLabel("Research use only: not for clinical diagnosis.")
        self.disclaimer.setStyleSheet("color: #a33;")
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.headline, self.warning, self.plot, self.lesion_button, self.table, self.disclaimer):
            layout.addWidget(w)
        state.cursor_changed.connect(lambda c: self.marker.setPos(c[0]))
        state.volume_changed.connect(lambda _v: self.clear())

    def clear(self) -> None:
        """Forget the shown result (another CT was opened: its numbers must not stay on screen)."""
        self.prediction = None
        self.plot_x = np.zeros(0)
        self.curve.setData([], [])
        self.plot.hide()
        self.lesion_button.hide()
        self.table.setRowCount(0)
        self.headline.setText("No analysis yet: AI > Analyze")
        self.warning.clear()
        self.warning.hide()

    def show_prediction(self, pred: Prediction, problem: str | None = None) -> None:
        """Show a result; `problem` (why the CT is not assessable, `inference.screening.assess`) replaces the
        probability and the per-slice plot with the reason."""
        self.prediction = pred
        if problem:
            self.headline.setText(f"Not assessable: {problem}\n({pred.model}; no probability is given for this CT)")
            self.warning.hide()
            self.plot.hide()
            self.plot_x = np.zeros(0)
            self.lesion_button.hide()
            self.table.setRowCount(0)
            return
        self.plot.show()
        self.headline.setText(
            f"P(COVID) = {pred.positive_probability:.2f}{_other_classes(pred)}  ({pred.model}, {pred.aggregation}, "
            f"{pred.device})\n"
            f"lesions {pred.lesion_ml:.1f} mL{_by_kind(pred)}, {pred.involvement_percent():.1f} % of the lungs "
            f"(right {pred.involvement_percent('right'):.1f} %, left {pred.involvement_percent('left'):.1f} %), "
            f"severity {pred.severity}/30; heat map {HEATMAP_NAMES.get(pred.heatmap_method, pred.heatmap_method)}; "
            f"{pred.timings.get('total', 0):.1f} s")
        self.warning.setText(_card_warning(pred.model))
        self.warning.setVisible(bool(self.warning.text()))
        if pred.input_kind == "volume" or len(pred.slice_indices) == 0:
            self.plot_x = np.nonzero(pred.lung_mask.any(axis=(1, 2)))[0]
            y = np.array([pred.heatmap[k].max() for k in self.plot_x], float)  # no copy of the slices
            self.plot.setTitle("volumetric model: one P(COVID) per case; heat-map maximum per slice", size="9pt")
            self.plot.setLabel("left", "heat map max")
        else:  # the per-slice list prediction.json carries
            table = slice_table(pred, self.state.volume) if self.state.volume is not None else []
            rows = [r for r in table if r["probability"] is not None]
            self.plot_x = np.array([r["index"] for r in rows], int)
            y = np.array([r["probability"] for r in rows], float)
            self.plot.setTitle(None)
            self.plot.setLabel("left", "P(COVID)")
        self.curve.setData(self.plot_x.astype(float), np.asarray(y, float))
        if pred.lesion_centre is not None:
            self.lesion_button.setText(f"Lesion centre: axial slice {int(round(pred.lesion_centre[0]))} (go there)")
        self.lesion_button.setVisible(pred.lesion_centre is not None)
        self.table.setRowCount(len(pred.zones))
        for row, z in enumerate(pred.zones):
            for col, value in enumerate((z.lung, z.zone, f"{z.lesion_ml:.1f}", f"{z.percent:.1f}", str(z.score))):
                self.table.setItem(row, col, QtWidgets.QTableWidgetItem(value))

    def _on_plot_click(self, ev) -> None:
        if self.prediction is None or len(self.plot_x) == 0:
            return
        x = self.plot.getPlotItem().vb.mapSceneToView(ev.scenePos()).x()
        self.jump_to_slice(x)

    def jump_to_slice(self, x: float) -> None:
        """Move the viewer to the plotted slice nearest to x."""
        k = int(self.plot_x[np.argmin(np.abs(self.plot_x - x))])
        self.state.set_slice(Orientation.AXIAL, k)

    def go_to_lesion(self) -> None:
        """Move the crosshair to the localized lesion's centre (volume models)."""
        if self.prediction is not None and self.prediction.lesion_centre is not None:
            self.state.set_cursor(tuple(int(round(c)) for c in self.prediction.lesion_centre))


def add_prediction_layers(state: ViewerState, pred: Prediction) -> None:
    """The heat map and the lung + lesion labels as overlay layers on the viewer."""
    labels = pred.lung_mask.astype(np.uint8).copy()
    lesions = pred.lesion_mask > 0
    labels[lesions] = pred.lesion_mask[lesions]
    state.layers.add(LabelLayer(MASK_LAYER, labels, opacity=0.4, hidden_labels={1, 2}), state.shape)
    state.layers.add(HeatmapLayer(HEATMAP_LAYER, pred.heatmap, colormap="jet", opacity=HEATMAP_OPACITY,
                                  threshold=HEATMAP_THRESHOLD), state.shape)


def heatmap_overlay_layer(name: str, data: np.ndarray) -> HeatmapLayer:
    """A float map from a file (e.g. `lunglens screen`'s heatmap.nii.gz) drawn like the AI's heat map: maps in
    [0, 1] exactly so, others over their own range with the threshold at the same fraction of it."""
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif hi <= lo:
        hi = lo + 1.0
    return HeatmapLayer(name, data, colormap="jet", opacity=HEATMAP_OPACITY,
                        threshold=lo + HEATMAP_THRESHOLD * (hi - lo), vmin=lo, vmax=hi)
