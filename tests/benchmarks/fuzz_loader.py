"""Fuzz the DICOM loader: mutated files of a small phantom series load, or fail with a clear LoadError.

    .venv/bin/python -m tests.benchmarks.fuzz_loader [--n 10000] [--seed 0] [--workers 2] [--timeout 30]

A 5-slice 32x32 phantom CT is written in several transfer syntaxes (and as one Enhanced CT file when
highdicom is installed). Each case replaces one file of a series by a mutant (bit flips, truncation, a
spliced or overwritten header, or a tag set to a hostile value through pydicom) and runs what `info` and
`open_volume` run, on the case folder and on the mutated file. Outcomes:

    loaded       both opened
    clear error  a LoadError whose message names the case folder or file
    unclear      a LoadError that names neither
    traceback    any other exception escaped
    crash        the worker process died (segfault, abort): counted from its exit status
    hang         no answer within --timeout seconds

Cases run in worker subprocesses, so a crash or a hang costs one case, not the run. The suite runs a
smaller in-process sample of the same cases (tests/test_dicom_robustness.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.config
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

OUTCOMES = ("loaded", "clear error", "unclear", "traceback", "crash", "hang")
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
            RLELossless, JPEG2000Lossless)

_TEXT_TAGS = {  # keyword: hostile values written as text (as LO where the real VR would refuse them)
    "NumberOfFrames": None, "SeriesNumber": None, "InstanceNumber": None, "AcquisitionNumber": None,
    "PixelSpacing": None, "ImagePositionPatient": None, "ImageOrientationPatient": None, "SliceThickness": None,
    "SpacingBetweenSlices": None, "RescaleSlope": None, "RescaleIntercept": None, "WindowCenter": None,
    "WindowWidth": None, "GantryDetectorTilt": None, "SliceLocation": None,
}
_HOSTILE_TEXT = ("nan", "inf", "-inf", "1e999", "-1e999", "0", "-1", "", "abc", "1e6", "-1e6", "1e300",
                 "4294967296", "1e-320", "9" * 64, "1\\2", "1\\2\\3", "0\\0\\0\\0\\0\\0", "nan\\nan\\nan",
                 "1\\0\\0\\0\\1\\0", "0.5\\0.5", "1.5e308\\-1.5e308\\0", "2.5")
_US_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel")
_US_VALUES = (0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 31, 32, 33, 64, 255, 4096, 32767, 65535, [32, 32], [16, 64])
_ID_TAGS = {
    "Modality": ("MR", "", "CT\\MR", "X" * 40), "PhotometricInterpretation": ("RGB", "PALETTE COLOR", "", "YBR_FULL"),
    "ImageType": ("ORIGINAL\\PRIMARY\\LOCALIZER", "", "\\" * 20),
    "SOPClassUID": ("1.2.3", "", "1.2.840.10008.3.1.2.3.1", "1.2.840.10008.5.1.4.1.1.2.1"),
    "SeriesInstanceUID": ("", "1.2.3", "x" * 64), "StudyInstanceUID": ("", "9.9"),
    "SpecificCharacterSet": ("ISO 2022 IR 87", "GB18030", "nonsense", "ISO_IR 192\\ISO_IR 100"),
    "PatientName": ("\xff\xfe^^^", "A" * 200),
}
_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                      "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.50", "1.2.3", "")


@dataclass
class Base:
    """One clean series: its folder and files."""

    name: str
    files: list[Path]


@dataclass
class Case:
    """One mutant: which base file it replaces and how it was made."""

    index: int
    base: Base
    target: int
    kind: str
    data: bytes


def make_bases(root: Path, *, syntaxes: tuple[str, ...] = SYNTAXES, multiframe: bool = True) -> list[Base]:
    """The phantom series in each transfer syntax (skipping those this install cannot encode)."""
    from viewer.dicom.write import save_datasets, volume_to_datasets
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    ph = make_phantom(PhantomConfig(shape=(5, 32, 32), spacing=(5.0, 10.0, 10.0), n_ggo=1, n_consolidation=0,
                                    seed=3))
    bases = []
    for ts in syntaxes:
        datasets = volume_to_datasets(ph.volume, uid_seed="fuzz", series_description="fuzz phantom")
        try:
            files = save_datasets(datasets, root / f"ts-{ts}", transfer_syntax=ts)
        except Exception:  # noqa: BLE001 - an encoder this install lacks: fuzz the others
            continue
        bases.append(Base(pydicom.uid.UID(ts).name, files))
    if multiframe:
        try:
            import highdicom as hd

            legacy = [pydicom.dcmread(p) for p in bases[0].files]
            mf = hd.legacy.LegacyConvertedEnhancedCTImage(
                legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=9,
                sop_instance_uid=hd.UID(), instance_number=1)
            (root / "multiframe").mkdir()
            mf.save_as(root / "multiframe" / "enhanced.dcm")
            bases.append(Base("Enhanced CT (multi-frame)", [root / "multiframe" / "enhanced.dcm"]))
        except ImportError:
            pass
    return bases


def source_bases(folders: list[str]) -> list[Base]:
    """Real series to mutate as well: each folder's files (not recursive; names must differ), e.g. a series
    from ../shared/data (never copied into the repository: the mutants live in a temporary folder)."""
    bases = []
    for folder in folders:
        files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise SystemExit(f"{folder}: no files to mutate")
        bases.append(Base(f"{Path(folder).name} (real)", files))
    return bases


def generate(bases: list[Base], n: int, seed: int) -> Iterator[Case]:
    """`n` seeded mutants, spread over the bases."""
    rng = random.Random(seed)
    originals = {p: p.read_bytes() for b in bases for p in b.files}
    for i in range(n):
        base = bases[i % len(bases)]
        target = rng.randrange(len(base.files))
        data = originals[base.files[target]]
        kind = rng.choice(("flip", "flip", "truncate", "splice", "overwrite", "tag", "tag", "tag", "meta"))
        try:
            mutant = _MUTATORS[kind](data, rng)
        except Exception as exc:  # noqa: BLE001 - pydicom refused to write that value: flip bits instead
            kind, mutant = f"flip (after {kind}: {type(exc).__name__})", _flip(data, rng)
        yield Case(i, base, target, kind, mutant)


def _header_end(data: bytes) -> int:
    at = data.rfind(b"\xe0\x7f\x10\x00")
    if at < 0:
        at = data.rfind(b"\x7f\xe0\x00\x10")
    return at + 12 if at > 0 else len(data)


def _flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    end = _header_end(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        pos = rng.randrange(128, end) if rng.random() < 0.85 else rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
    return bytes(b)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _splice(data: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(128, _header_end(data))
    if rng.random() < 0.5:
        return data[:pos] + data[pos + rng.randrange(1, 16):]
    return data[:pos] + rng.randbytes(rng.randrange(1, 16)) + data[pos:]


def _overwrite(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    pos = rng.randrange(128, _header_end(data) - 4)
    b[pos : pos + 4] = rng.choice((b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x00\x00\x00\x00",
                                   rng.randbytes(4), b"\xff\xff\x00\x00"))
    return bytes(b)


def _tag(data: bytes, rng: random.Random) -> bytes:
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _set_tag(data, rng)
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def _set_tag(data: bytes, rng: random.Random) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    group = rng.random()
    if group < 0.45:
        keyword = rng.choice(sorted(_TEXT_TAGS))
        value = rng.choice(_HOSTILE_TEXT)
        vr = pydicom.datadict.dictionary_VR(keyword)
        try:
            ds.add_new(keyword, vr, value)
        except Exception:  # noqa: BLE001 - the real VR refuses it: write the text as LO
            ds.add_new(keyword, "LO", value)
    elif group < 0.75:
        ds.add_new(rng.choice(_US_TAGS), "US", rng.choice(_US_VALUES))
    elif group < 0.9:
        keyword = rng.choice(sorted(_ID_TAGS))
        ds.add_new(keyword, pydicom.datadict.dictionary_VR(keyword), rng.choice(_ID_TAGS[keyword]))
    else:
        keyword = rng.choice(sorted(_TEXT_TAGS) + list(_US_TAGS) + ["PixelData", "SeriesInstanceUID"])
        if keyword in ds:
            del ds[keyword]
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _meta(data: bytes, rng: random.Random) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = rng.choice(_TRANSFER_SYNTAXES)  # the data set is not re-encoded
    out = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(out, ds.file_meta, enforce_standard=False)
    meta = out.getvalue()
    old_end = 132 + len(_meta_bytes(data))
    return data[:132] + meta + data[old_end:]


def _meta_bytes(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    out = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(out, ds.file_meta, enforce_standard=False)
    return out.getvalue()


_MUTATORS = {"flip": _flip, "truncate": _truncate, "splice": _splice, "overwrite": _overwrite, "tag": _tag,
             "meta": _meta}


def materialise(case: Case, root: Path) -> tuple[Path, Path]:
    """The case folder (the base files hard-linked, the mutant in place of its target) and the mutant's path."""
    folder = root / f"case{case.index:06d}"
    folder.mkdir()
    for k, p in enumerate(case.base.files):
        if k != case.target:
            try:
                os.link(p, folder / p.name)
            except OSError:  # another file system, or a read-only source
                shutil.copyfile(p, folder / p.name)
    mutant = folder / case.base.files[case.target].name
    mutant.write_bytes(case.data)
    return folder, mutant


def check(folder: Path, mutant: Path) -> tuple[str, str]:
    """Run what `info` and `open_volume` run on the folder and on the mutant: (outcome, detail)."""
    from app.cli.info import format_series_table
    from viewer.core.errors import LoadError
    from viewer.dicom.scan import scan
    from viewer.io.volumes import open_volume

    outcome, detail = "loaded", ""
    for target in (folder, mutant):
        try:
            result = scan(target)
            format_series_table(result)
            json.dumps([s.summary() for s in result.series], allow_nan=False)
            open_volume(target)
        except LoadError as exc:
            message = str(exc)
            if str(folder) not in message:
                return "unclear", f"{target}: {message}"
            outcome, detail = "clear error", message
        except Exception:  # noqa: BLE001 - what the fuzzing is for
            return "traceback", traceback.format_exc()
    return outcome, detail


def run_in_process(cases: Iterator[Case], root: Path) -> tuple[Counter, list[tuple[Case, str, str]]]:
    """Check cases in this process (the test suite's way): counts and the failures."""
    counts: Counter = Counter()
    failures = []
    for case in cases:
        folder, mutant = materialise(case, root)
        outcome, detail = check(folder, mutant)
        counts[outcome] += 1
        if outcome in ("unclear", "traceback"):
            failures.append((case, outcome, detail))
        shutil.rmtree(folder)
    return counts, failures


# -- subprocess workers: a crash or a hang costs one case --------------------------------------------


def _worker() -> int:
    """Read "folder<TAB>mutant" lines; answer one JSON line per case."""
    warnings.simplefilter("ignore")
    for line in sys.stdin:
        folder, mutant = line.rstrip("\n").split("\t")
        outcome, detail = check(Path(folder), Path(mutant))
        print(json.dumps({"outcome": outcome, "detail": detail[-2000:]}), flush=True)
    return 0


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.fuzz_loader", "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1, cwd=Path(__file__).resolve().parents[2])
        self.case: Case | None = None
        self.folder: Path | None = None
        self.started = 0.0

    def submit(self, case: Case, folder: Path, mutant: Path) -> None:
        self.case, self.folder, self.started = case, folder, time.monotonic()
        self.proc.stdin.write(f"{folder}\t{mutant}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_subprocesses(cases: Iterator[Case], root: Path, workers: int, timeout: float,
                     failures_dir: Path | None) -> tuple[Counter, list[tuple[Case, str, str]]]:
    """Check cases in `workers` subprocesses with a per-case timeout."""
    counts: Counter = Counter()
    failures: list[tuple[Case, str, str]] = []
    pool = [_Worker() for _ in range(workers)]
    todo = iter(cases)
    exhausted = False

    def feed(w: _Worker) -> None:
        nonlocal exhausted
        case = next(todo, None)
        if case is None:
            exhausted = True
            w.case = None
            return
        folder, mutant = materialise(case, root)
        w.submit(case, folder, mutant)

    def finish(w: _Worker, outcome: str, detail: str) -> None:
        counts[outcome] += 1
        if outcome not in ("loaded", "clear error"):
            failures.append((w.case, outcome, detail))
            if failures_dir is not None:
                shutil.copytree(w.folder, failures_dir / f"{outcome}-{w.folder.name}", dirs_exist_ok=True)
        shutil.rmtree(w.folder, ignore_errors=True)

    for w in pool:
        feed(w)
    while any(w.case is not None for w in pool):
        busy = [w for w in pool if w.case is not None]
        ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], 0.5)
        now = time.monotonic()
        for i, w in enumerate(pool):
            if w.case is None:
                continue
            if w.proc.stdout in ready:
                line = w.proc.stdout.readline()
                if line:
                    answer = json.loads(line)
                    finish(w, answer["outcome"], answer["detail"])
                else:  # the worker died on this case
                    code = w.proc.wait()
                    finish(w, "crash", f"worker exit status {code}")
                    pool[i] = w = _Worker()
                feed(w)
            elif now - w.started > timeout:
                w.kill()
                finish(w, "hang", f"no answer in {timeout:g} s")
                pool[i] = w = _Worker()
                feed(w)
        if exhausted and all(w.case is None for w in pool):
            break
    for w in pool:
        w.proc.stdin.close()
        w.proc.wait()
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of mutated files (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--keep", metavar="DIR", help="copy each failing case folder here")
    parser.add_argument("--source", metavar="SERIES_DIR", nargs="+", default=[],
                        help="also mutate the files of these real series folders")
    parser.add_argument("--only-source", action="store_true", help="mutate only the --source series")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="lunglens-fuzz-") as tmp:
        root = Path(tmp)
        bases = [] if args.only_source else make_bases(root / "bases")
        bases += source_bases(args.source)
        (root / "cases").mkdir()
        keep = Path(args.keep) if args.keep else None
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        counts, failures = run_subprocesses(generate(bases, args.n, args.seed), root / "cases", args.workers,
                                            args.timeout, keep)
        seconds = time.perf_counter() - t0
    print(f"bases: {', '.join(b.name for b in bases)}")
    print(f"tried {sum(counts.values())}, " + ", ".join(f"{o} {counts[o]}" for o in OUTCOMES)
          + f" ({seconds:.0f} s, seed {args.seed})")
    for case, outcome, detail in failures[:20]:
        print(f"\n{outcome}: case {case.index} ({case.base.name}, {case.kind}):\n{detail}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
