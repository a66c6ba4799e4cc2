"""`lunglens pacs` against a real PACS (Orthanc on loopback): echo, find, get, move, listen, the node list and
the messages for what goes wrong."""

from __future__ import annotations

import json
import socket
import struct
import threading

import numpy as np
import pydicom
import pytest

from app.cli import main
from app.pacs.nodes import PacsError, PacsNode, load_nodes
from tests.app.pacs.orthanc import AET, free_port


def _node_args(orthanc, aet: str = AET) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--aet", aet]


def _dataset_bytes(data: bytes) -> bytes:
    """A DICOM file's bytes after its file meta group (which each writer stamps with its own name)."""
    assert data[128:132] == b"DICM"
    group_length = struct.unpack("<I", data[140:144])[0]
    return data[144 + group_length:]


def _study_uid(orthanc) -> str:
    return orthanc._get("/studies/" + orthanc._get("/studies")[0])["MainDicomTags"]["StudyInstanceUID"]


def test_echo_reports_success_and_a_wrong_ae_title_is_rejected_with_a_clear_message(orthanc, capsys, user_dirs):
    assert main(["pacs", "echo", *_node_args(orthanc)]) == 0
    assert "C-ECHO succeeded" in capsys.readouterr().out
    assert main(["pacs", "echo", *_node_args(orthanc, aet="NOTTHEPACS")]) == 1
    err = capsys.readouterr().err
    # Orthanc rejects it; under load pynetdicom may see the connection close first: either way the message says
    # which title to check
    assert ("rejected the association" in err or "aborted" in err) and "check the called AE title 'NOTTHEPACS'" in err


def test_a_closed_port_and_an_unknown_host_say_so(capsys, user_dirs):
    port = free_port()
    assert main(["pacs", "echo", "--host", "127.0.0.1", "--port", str(port), "--aet", "X"]) == 1
    assert "cannot connect" in capsys.readouterr().err
    assert main(["pacs", "echo", "--host", "no-such-host.invalid", "--port", "104", "--aet", "X"]) == 1
    assert "unknown host" in capsys.readouterr().err


def test_find_json_lists_the_study_with_the_keys_a_worklist_needs(orthanc, capsys, user_dirs):
    assert main(["pacs", "find", *_node_args(orthanc), "--patient-id", "PHANTOM-0000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    study = rows[0]
    for key in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries"):
        assert key in study
    assert study["PatientID"] == "PHANTOM-0000" and study["ModalitiesInStudy"] == "CT"
    assert study["NumberOfStudyRelatedSeries"] == 1 and study["NumberOfStudyRelatedInstances"] == 24
    # matching keys narrow it: another patient or date range finds nothing
    assert main(["pacs", "find", *_node_args(orthanc), "--patient-id", "SOMEONE-ELSE", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["pacs", "find", *_node_args(orthanc), "--date", "19990101-19991231", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["pacs", "find", *_node_args(orthanc), "--date", "2020-03-15"]) == 1
    assert "YYYYMMDD" in capsys.readouterr().err
    # the series level
    assert main(["pacs", "find", *_node_args(orthanc), "--series", study["StudyInstanceUID"], "--json"]) == 0
    series = json.loads(capsys.readouterr().out)
    assert [s["Modality"] for s in series] == ["CT"] and series[0]["NumberOfSeriesRelatedInstances"] == 24


def _check_identical(orthanc, files, source_volume) -> None:
    held = orthanc.instance_bytes()
    assert len(files) == len(held) == 24
    for path in files:
        data = path.read_bytes()
        sop = pydicom.dcmread(path).SOPInstanceUID
        assert _dataset_bytes(data) == _dataset_bytes(held[sop]), path.name
    from viewer.io.volumes import open_volume

    got = open_volume(files[0].parent)
    assert np.array_equal(got.array, source_volume.array)
    assert np.allclose(got.spacing, source_volume.spacing) and np.allclose(got.origin, source_volume.origin)


def test_get_retrieves_the_study_voxel_identical(orthanc, small_phantom_series, tmp_path, capsys, user_dirs):
    study = _study_uid(orthanc)
    out = tmp_path / "got"
    assert main(["pacs", "get", *_node_args(orthanc), "--study", study, "--out", str(out)]) == 0
    assert "24 instance(s)" in capsys.readouterr().out
    files = sorted(out.rglob("*.dcm"))
    assert all(p.parent.parent.name == study for p in files)
    assert not list(out.rglob(".part-*"))
    _check_identical(orthanc, files, small_phantom_series("pacs")[1])


def test_move_sends_the_study_to_lunglenss_own_storage_scp(orthanc, small_phantom_series, tmp_path, user_dirs,
                                                           capsys):
    study = _study_uid(orthanc)
    out = tmp_path / "moved"
    assert main(["pacs", "get", *_node_args(orthanc), "--study", study, "--out", str(out),
                 "--move-dest", "LUNGLENS", "--listen-port", str(orthanc.move_port)]) == 0
    _check_identical(orthanc, sorted(out.rglob("*.dcm")), small_phantom_series("pacs")[1])
    # a destination the PACS does not know: the user is told what to configure
    assert main(["pacs", "get", *_node_args(orthanc), "--study", study, "--out", str(tmp_path / "x"),
                 "--move-dest", "STRANGER", "--listen-port", str(free_port())]) == 1
    assert "move destination" in capsys.readouterr().err


def test_an_unknown_study_uid_is_an_error_not_an_empty_success(orthanc, tmp_path, capsys, user_dirs):
    assert main(["pacs", "get", *_node_args(orthanc), "--study", "1.2.3.4.5", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nothing was retrieved: check the UIDs" in err


def test_listen_receives_what_the_pacs_sends(orthanc, tmp_path):
    """The storage SCP behind `pacs listen`: Orthanc pushes the study to it (as to any modality)."""
    import urllib.request

    from app.pacs.storage import StorageServer

    received = []
    with StorageServer(tmp_path / "in", orthanc.move_port, aet="LUNGLENS", on_file=received.append):
        req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/modalities/lunglens/store",
                                     data=json.dumps({"Resources": orthanc._get("/studies"),
                                                      "Synchronous": True}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
    assert len(received) == 24 and all(p.is_file() and p.suffix == ".dcm" for p in received)


def test_listen_on_a_busy_port_says_so(tmp_path):
    from app.pacs.storage import StorageServer

    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        with pytest.raises(PacsError, match="cannot listen on port"):
            StorageServer(tmp_path, s.getsockname()[1]).start()


def test_nodes_are_saved_listed_used_and_removed(orthanc, capsys, user_dirs):
    assert main(["pacs", "nodes", "add", "hospital", *_node_args(orthanc)]) == 0
    assert load_nodes()["hospital"] == PacsNode("127.0.0.1", orthanc.dicom_port, AET, name="hospital")
    assert main(["pacs", "nodes", "list"]) == 0
    assert f"hospital\t{AET}@127.0.0.1:{orthanc.dicom_port}" in capsys.readouterr().out
    assert main(["pacs", "echo", "--node", "hospital"]) == 0
    assert main(["pacs", "echo", "--node", "elsewhere"]) == 1
    assert "no PACS node named 'elsewhere'" in capsys.readouterr().err
    assert main(["pacs", "echo"]) == 1
    assert "--node NAME" in capsys.readouterr().err
    assert main(["pacs", "nodes", "remove", "hospital"]) == 0
    assert load_nodes() == {}


def test_bad_node_settings_are_refused_before_anything_is_sent(capsys, user_dirs):
    assert main(["pacs", "echo", "--host", "127.0.0.1", "--port", "70000", "--aet", "X"]) == 1
    assert "not a TCP port" in capsys.readouterr().err
    assert main(["pacs", "echo", "--host", "127.0.0.1", "--port", "104", "--aet", "A" * 17]) == 1
    assert "1-16 printable ASCII" in capsys.readouterr().err


def test_an_unreadable_node_list_is_named(user_dirs):
    path = user_dirs / "cfg" / "pacs_nodes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.raises(PacsError, match="pacs_nodes.json: not a readable PACS node list"):
        load_nodes()


def test_worklist_on_a_pacs_query_retrieves_screens_and_ranks(orthanc, tmp_path, capsys, user_dirs, monkeypatch,
                                                              one_torch_thread):
    monkeypatch.setenv("LUNGLENS_DATA_DIR", str(tmp_path / "data"))
    assert main(["pacs", "nodes", "add", "hospital", *_node_args(orthanc)]) == 0
    capsys.readouterr()
    args = ["worklist", "--node", "hospital", "--patient-id", "PHANTOM-0000", "--headless", "--workers", "1",
            "--lesions", "hu-rule", "--out", str(tmp_path / "export")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "retrieving PHANTOM-0000" in captured.err
    assert "  1  p=" in captured.out and "PHANTOM-0000" in captured.out
    study = _study_uid(orthanc)
    assert len(list((tmp_path / "data" / "pacs" / study).rglob("*.dcm"))) == 24
    rows = json.loads((tmp_path / "export" / "results.json").read_text())["cases"]
    assert rows[0]["status"] == "ok" and rows[0]["patient_id"] == "PHANTOM-0000"
    # again: nothing is fetched, nothing screened (the cache)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "retrieving" not in captured.err and ": done" not in captured.err and "  1  p=" in captured.out


def test_pacs_dialog_saves_a_node_echoes_searches_and_retrieves_into_the_worklist(orthanc, qtbot, tmp_path,
                                                                               user_dirs, monkeypatch):
    monkeypatch.setenv("LUNGLENS_DATA_DIR", str(tmp_path / "data"))
    from app.gui.pacs_dialog import PacsDialog

    dialog = PacsDialog()
    qtbot.addWidget(dialog)
    said_on: list[str] = []  # each status line is set on the GUI thread, never on a worker's
    monkeypatch.setattr(dialog, "_say", lambda text: (said_on.append(threading.current_thread().name),
                                                      PacsDialog._say(dialog, text)))
    dialog.reload_nodes()
    assert "No PACS node configured" in dialog.status.text()
    dialog.save(PacsNode("127.0.0.1", orthanc.dicom_port, AET, name="hospital"))
    assert load_nodes()["hospital"].port == orthanc.dicom_port and dialog.node_box.count() == 1
    dialog.echo()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=20_000)
    assert "C-ECHO succeeded" in dialog.status.text()
    dialog.date.setText("not a date")
    dialog.search()
    assert "YYYYMMDD" in dialog.status.text() and not dialog.is_busy()
    dialog.date.clear()
    dialog.patient_id.setText("PHANTOM-0000")
    dialog.search()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=20_000)
    assert dialog.table.rowCount() == 1 and dialog.table.item(0, 0).text() == "PHANTOM-0000"
    dialog.retrieve_selected()
    assert "Select the studies" in dialog.status.text()
    dialog.table.selectRow(0)
    with qtbot.waitSignal(dialog.retrieved, timeout=60_000) as signal:
        dialog.retrieve_selected()
    (folder,) = signal.args[0]
    assert len(list(__import__("pathlib").Path(folder).rglob("*.dcm"))) == 24
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=20_000)
    dialog.close()
    assert len(said_on) >= 4 and set(said_on) == {threading.main_thread().name}


def test_a_screening_lesion_mask_goes_back_to_the_pacs_as_dicom_seg(orthanc, tmp_path, capsys, user_dirs,
                                                                   one_torch_thread):
    study = _study_uid(orthanc)
    got = tmp_path / "got"
    assert main(["pacs", "get", *_node_args(orthanc), "--study", study, "--out", str(got)]) == 0
    series = next(got.rglob("*.dcm")).parent
    assert main(["screen", str(series), "--out", str(tmp_path / "res"), "--lesions", "hu-rule",
                 "--device", "cpu"]) == 0
    (case,) = [p for p in (tmp_path / "res").iterdir() if p.is_dir()]
    seg = tmp_path / "lesions-seg.dcm"
    assert main(["mask", "convert", str(case / "lesions.nii.gz"), str(seg), "--reference", str(series)]) == 0
    before = len(orthanc._get("/instances"))
    capsys.readouterr()
    try:
        assert main(["pacs", "store", *_node_args(orthanc), str(seg)]) == 0
        assert "stored 1 file(s)" in capsys.readouterr().out
        assert len(orthanc._get("/instances")) == before + 1
        modalities = {orthanc._get(f"/series/{s}")["MainDicomTags"].get("Modality")
                      for s in orthanc._get("/series")}
        assert modalities == {"CT", "SEG"}
    finally:
        orthanc.delete_series_of_modality("SEG")
    (tmp_path / "notdicom.txt").write_text("hello")
    assert main(["pacs", "store", *_node_args(orthanc), str(tmp_path / "notdicom.txt")]) == 1
    assert "notdicom.txt: not a DICOM file" in capsys.readouterr().err


def _dicomweb(orthanc) -> str:
    import os as _os

    if not orthanc.has_dicomweb:
        if _os.environ.get("LUNGLENS_CI_PACKAGES"):
            pytest.fail("Orthanc's DICOMweb plug-in (orthanc-dicomweb) is required in CI")
        pytest.skip("Orthanc's DICOMweb plug-in is not installed (Debian: orthanc-dicomweb)")
    return orthanc.dicomweb_url


def test_dicomweb_finds_and_retrieves_the_same_as_dimse(orthanc, small_phantom_series, tmp_path, capsys, user_dirs):
    url = _dicomweb(orthanc)
    assert main(["pacs", "find", "--url", url, "--patient-id", "PHANTOM-0000", "--json"]) == 0
    web = json.loads(capsys.readouterr().out)
    assert main(["pacs", "find", *_node_args(orthanc), "--patient-id", "PHANTOM-0000", "--json"]) == 0
    dimse = json.loads(capsys.readouterr().out)
    keys = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries")
    assert [{k: r[k] for k in keys} for r in web] == [{k: r[k] for k in keys} for r in dimse]
    study = web[0]["StudyInstanceUID"]
    assert main(["pacs", "find", "--url", url, "--series", study, "--json"]) == 0
    assert [s["Modality"] for s in json.loads(capsys.readouterr().out)] == ["CT"]
    out = tmp_path / "web"
    assert main(["pacs", "get", "--url", url, "--study", study, "--out", str(out)]) == 0
    _check_identical(orthanc, sorted(out.rglob("*.dcm")), small_phantom_series("pacs")[1])
    assert main(["pacs", "get", "--url", url + "/nothing-here", "--study", study, "--out", str(out)]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["pacs", "find", "--url", f"http://127.0.0.1:{free_port()}/dicom-web", "--json"]) == 1
    assert "cannot connect" in capsys.readouterr().err
