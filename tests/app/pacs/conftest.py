"""An Orthanc PACS with one phantom study, shared by the PACS tests of a session."""

from __future__ import annotations

import os

import pytest

from tests.app.pacs.orthanc import Orthanc, orthanc_binary, start_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory, small_phantom_series) -> Orthanc:
    if orthanc_binary() is None:
        if os.environ.get("LUNGLENS_CI_PACKAGES"):
            pytest.fail("Orthanc is required in CI (LUNGLENS_CI_PACKAGES is set) but not installed")
        pytest.skip("Orthanc is not installed (Debian: apt-get install orthanc; .ci/run installs it)")
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    folder, _ = small_phantom_series("pacs")
    server.upload(sorted(folder.iterdir()))
    yield server
    server.stop()
