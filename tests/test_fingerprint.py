"""Fingerprints: equal inputs are reused, changed ones rebuilt with a one-line reason, or refused."""

import pytest

from pipeline.core import fingerprint


def test_equal_inputs_are_up_to_date_and_changes_are_named(tmp_path):
    made = fingerprint.Fingerprint({"eval_from": 6, "logs": {"day=0001": "aa", "day=0002": "bb"}, "dims": (4, 2)})
    assert not fingerprint.up_to_date(str(tmp_path / "absent"), made, "rebuild", "output")  # nothing to reuse
    made.write(str(tmp_path))
    assert fingerprint.up_to_date(str(tmp_path), fingerprint.Fingerprint(dict(made.inputs)), "rebuild", "output")

    said = []
    changed = fingerprint.Fingerprint({"eval_from": 5, "logs": {"day=0001": "aa", "day=0002": "cc"}, "dims": [4, 2]})
    assert not fingerprint.up_to_date(str(tmp_path), changed, "rebuild", "transform output", said.append)
    assert said == [f"transform output {tmp_path}: rebuilding, changed: eval_from 6 -> 5; logs.day=0002 bb -> cc"]
    with pytest.raises(fingerprint.StaleOutputError, match="eval_from 6 -> 5.*--if_changed rebuild"):
        fingerprint.up_to_date(str(tmp_path), changed, "refuse", "transform output")


def test_an_output_without_a_fingerprint_is_never_reused(tmp_path):
    (tmp_path / "old").mkdir()
    said = []
    assert not fingerprint.up_to_date(str(tmp_path / "old"), fingerprint.Fingerprint({"a": 1}), "rebuild", "x",
                                      said.append)
    assert "no fingerprint" in said[0]
    with pytest.raises(ValueError, match="if_changed must be one of"):
        fingerprint.up_to_date(str(tmp_path), fingerprint.Fingerprint({}), "ignore", "x")


def test_file_digests_follow_the_bytes(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    first = fingerprint.digest_files([str(a), str(b)])
    assert fingerprint.digest_files([str(b), str(a)]) == first  # order-independent
    b.write_bytes(b"twO")
    assert fingerprint.digest_files([str(a), str(b)]) != first
