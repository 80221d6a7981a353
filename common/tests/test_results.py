"""Result folders record the model and settings that produced them."""
import pytest

from common.errors import UserError
from common.results import RECORD_NAME, claim_results_folder, fingerprint


def test_same_settings_reuse_other_settings_refuse(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights-a")
    out = tmp_path / "scores"
    settings = {"model": fingerprint(weights), "targets": ["vocals"]}
    claim_results_folder(out, settings, "*.json")
    (out / "track.json").write_text("{}")
    claim_results_folder(out, settings, "*.json")  # a rerun continues
    weights.write_bytes(b"weights-b")
    with pytest.raises(UserError, match="different model"):
        claim_results_folder(out, {"model": fingerprint(weights), "targets": ["vocals"]},
                             "*.json")
    with pytest.raises(UserError, match="different targets"):
        claim_results_folder(out, {**settings, "targets": ["bass"]}, "*.json")


def test_results_without_a_record_are_refused(tmp_path):
    (tmp_path / "track.json").write_text("{}")
    with pytest.raises(UserError, match="do not say which model"):
        claim_results_folder(tmp_path, {"model": {}}, "*.json")
    assert not (tmp_path / RECORD_NAME).exists()


def test_fingerprint_of_a_folder_names_every_file(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.h5").write_bytes(b"22")
    fp = fingerprint(tmp_path)
    assert sorted(fp) == ["a.h5", "sub/b.h5"]
    assert fp["sub/b.h5"].startswith("2:")
