"""What a training folder says about itself in the model card."""

from __future__ import annotations

import json

from inference.training.datasets.info import COVID_CT, UNRECORDED_TERMS, read_dataset_info


def test_dataset_json_is_read(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Hospital X 2025", "terms": "internal use only",
                                                       "cases": [1, 2]}))
    info = read_dataset_info(tmp_path)
    assert info == {"name": "Hospital X 2025", "description": "", "terms": "internal use only", "limitations": ""}


def test_a_folder_without_a_description_never_claims_covid_ct_or_a_licence(tmp_path):
    info = read_dataset_info(tmp_path)
    assert info["name"] == str(tmp_path)
    assert info["terms"] == UNRECORDED_TERMS
    assert "COVID-CT" not in json.dumps(info)


def test_a_covid_ct_folder_gets_its_terms(tmp_path):
    folder = tmp_path / "covid-ct"
    folder.mkdir()
    info = read_dataset_info(folder)
    assert info["name"] == COVID_CT["name"] and "research use only" in info["terms"]


def test_a_broken_dataset_json_falls_back_without_crashing(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    assert read_dataset_info(tmp_path)["terms"] == UNRECORDED_TERMS
