"""A throwaway Orthanc PACS on loopback for the PACS tests (Debian package `orthanc`; `.ci/run` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

AET = "ORTHANC"


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    dicom_port: int
    http_port: int
    process: subprocess.Popen
    folder: Path
    move_port: int  # where the modality "LUNGLENS" (C-MOVE destination) listens

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def has_dicomweb(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dicomweb_url}/studies", timeout=10) as r:
                return r.status == 200
        except OSError:
            return False
    log: object = None

    def upload(self, files: list[Path]) -> None:
        for f in files:
            req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/instances", data=f.read_bytes(),
                                         method="POST", headers={"Content-Type": "application/dicom"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200, f.name

    def instance_bytes(self) -> dict[str, bytes]:
        """SOP instance UID -> the file Orthanc holds."""
        out = {}
        for oid in self._get("/instances"):
            tags = self._get(f"/instances/{oid}/simplified-tags")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/instances/{oid}/file", timeout=30) as r:
                out[tags["SOPInstanceUID"]] = r.read()
        return out

    def delete_series_of_modality(self, modality: str) -> None:
        """Remove what a test stored, so the session's PACS holds the phantom study alone again."""
        for sid in self._get("/series"):
            if self._get(f"/series/{sid}")["MainDicomTags"].get("Modality") == modality:
                req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/series/{sid}", method="DELETE")
                with urllib.request.urlopen(req, timeout=30):
                    pass

    def _get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.log is not None:
            self.log.close()


def start_orthanc(folder: Path, *, allow_get: bool = True) -> Orthanc:
    binary = orthanc_binary()
    assert binary is not None
    dicom_port, http_port, move_port = free_port(), free_port(), free_port()
    config = {
        "Name": "LungLensTest", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": AET, "DicomPort": dicom_port,
        "DicomCheckCalledAet": True, "DicomCheckModalityHost": False,
        "Plugins": [DICOMWEB_PLUGIN] if os.path.exists(DICOMWEB_PLUGIN) else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": allow_get, "DicomAlwaysAllowMove": True,
        "DicomModalities": {"lunglens": ["LUNGLENS", "127.0.0.1", move_port]},
        "StableAge": 1, "ConcurrentJobs": 1, "HttpTimeout": 30, "DicomScuTimeout": 10,
    }
    (folder / "db").mkdir(parents=True, exist_ok=True)
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=2):
                return Orthanc(dicom_port, http_port, proc, folder, move_port, log)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    log.close()
    raise RuntimeError("Orthanc did not start within 60 s")
