"""Batch screening of every CT series under some paths: a ranked worklist and per-case masks, in this process,
in local worker processes or on a Dask cluster."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.services.cases import ScreenOptions, find_cases, rank_rows, screen_case, write_results
from app.services.dispatch import screen_elsewhere
from inference.core.choices import DEFAULT_SCREENING_MODEL
from inference.screening.run import ScreeningConfig, ScreeningModel
from viewer.core.progress import ProgressFn

_log = logging.getLogger(__name__)  # the default `log` of `screen`


def screen(paths: list[str], out_dir: str | Path, *, model: str = DEFAULT_SCREENING_MODEL, device: str = "auto",
           backend: str = "auto", precision: str = "auto", config: ScreeningConfig | None = None,
           lungs: str = "threshold",
           progress: ProgressFn | None = None, log: Callable[[str], None] = _log.info,
           classifier: ScreeningModel | None = None,
           workers: int = 1, cluster: str | None = None,
           ) -> tuple[list[dict], list[dict]]:
    """Screen every case with a slice or volume model or a lesion segmenter (DCN); write results.csv/json
    (ranked by probability) and per-case NIfTI masks. `lungs`: the lung mask method ("threshold" or "unet").

    `workers` > 1 screens cases in that many local processes, `cluster` (a Dask scheduler address) as tasks on a
    Dask cluster; each case is independent and a failure stays with its case. A volume model (DeCoVNet)
    classifies no single slices: its `slices` column is 0.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[dict] = []
    cases = find_cases(paths, errors)
    options = ScreenOptions(model, device, backend, precision, config, lungs)
    # the same classifier settings as the GUI's Analyze, so a case gets the same probability in both
    clf = classifier or options.load()
    heatmap = clf.check_heatmap(config.heatmap if config else None)  # a bad choice stops the batch before any case
    if workers > 1 or cluster:
        rows = screen_elsewhere(cases, out, options, workers=workers, cluster=cluster, progress=progress, log=log)
    else:
        rows = []
        for n, case in enumerate(cases):

            def case_progress(f: float, msg: str, n: int = n, name: str = case.name) -> None:
                if progress is not None:
                    progress((n + f) / max(1, len(cases)), f"{name}: {msg}")

            rows.append(screen_case(case, out, clf, options, case_progress, log))
    rows = rank_rows(rows)
    write_results(out, rows, errors, {"model": clf.spec.name, "input_kind": clf.spec.input_kind, "lungs": lungs,
                                      "heatmap": heatmap, "device": clf.engine})
    return rows, errors


