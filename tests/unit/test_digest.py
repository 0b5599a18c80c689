"""Input digests name the bytes a result was computed from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lanternpk.digest import file_sha256, load_unchanged
from lanternpk.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_the_digests_are_those_of_the_bytes_read(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_bytes(b"a = 1\n")
    result, digests = load_unchanged(lambda: path.read_bytes(), [path, None])
    assert result == b"a = 1\n"
    assert digests == [hashlib.sha256(b"a = 1\n").hexdigest(), None]
    assert file_sha256(path) == digests[0]


def test_a_file_written_while_it_was_read_is_refused(tmp_path):
    """fit hashed its inputs after sampling: a data file re-exported during the fit was
    recorded with the new bytes' digest, though the posterior came from the old ones."""
    path = tmp_path / "observations.csv"
    path.write_bytes(b"old\n")

    def read_then_rewritten():
        text = path.read_bytes()
        path.write_bytes(b"new\n")
        return text

    with pytest.raises(UsageError, match=r"observations\.csv: the file changed while it was "
                                         "being read"):
        load_unchanged(read_then_rewritten, [path])


def test_a_missing_file_is_left_to_the_loader_to_name(tmp_path):
    missing = tmp_path / "nope.csv"

    def load():
        raise UsageError(f"{missing}: no such file")

    with pytest.raises(UsageError, match=r"nope\.csv: no such file"):
        load_unchanged(load, [missing])


def test_the_recorded_sbc_campaign_keeps_its_key(monkeypatch):
    """run_key now takes the digests taken as the files were read; the key is the same as
    when it hashed the bytes itself. (The key includes the lanternpk version, by design, so
    that a new version starts a new campaign: the recorded campaign's own is used here.)"""
    import lanternpk.sbc
    from lanternpk.sbc import SbcSettings, run_key

    record = json.loads((ROOT / "bench/results/sbc/sbc_run.json").read_text(encoding="utf-8"))
    monkeypatch.setattr(lanternpk.sbc, "__version__", record["lanternpk"])
    spec_sha256 = file_sha256(ROOT / record["spec_file"])
    design_sha256 = file_sha256(ROOT / record["design_file"])
    assert (spec_sha256, design_sha256) == (record["spec_sha256"], record["design_sha256"])
    assert run_key(spec_sha256, design_sha256, SbcSettings(**record["settings"])) == record["key"]


def test_a_change_is_named_before_the_parse_error_it_caused(tmp_path):
    """A table caught half-written fails to parse; the parse error would send the user
    looking for a problem in a file that is fine once written."""
    from lanternpk.errors import DataError, Problem

    path = tmp_path / "observations.csv"
    path.write_bytes(b"study,animal\n")

    def parse_half_written():
        path.write_bytes(b"study,animal\nals,m1\n")
        raise DataError([Problem(str(path), "row 2 is cut short")])

    with pytest.raises(UsageError, match="changed while it was being read"):
        load_unchanged(parse_half_written, [path])
