"""Where a TOML key is written: the line numbers that problems in spec, truth and mapping
files carry."""

from __future__ import annotations

from lanternpk.tomlfile import key_lines, line_of, path_parts

TEXT = '''# comment
[model]
name = "m"
notes = """
fake = 1
"""
[[flows]]
from = "blood"
[[flows]]
from = "lung"
to = "sink"
[flows.extra]
a.b = 2
[images."IMG 1"]
"ROI 3" = "lung"
prior = { dist = "lognormal", sigma = 1 }
'''


def test_key_lines_numbers_tables_keys_and_array_items():
    lines = key_lines(TEXT)
    assert lines[("model",)] == 2
    assert lines[("model", "name")] == 3
    assert ("model", "fake") not in lines and ("fake",) not in lines  # inside a string
    assert lines[("flows", 0)] == 7 and lines[("flows", 0, "from")] == 8
    assert lines[("flows", 1, "to")] == 11
    assert lines[("flows", 1, "extra", "a", "b")] == 13  # sub-table of the last item
    assert lines[("images", "IMG 1", "ROI 3")] == 15


def test_line_of_falls_back_to_the_nearest_written_key():
    lines = key_lines(TEXT)
    assert line_of(lines, path_parts('images."IMG 1".prior.sigma')) == 16  # inline table
    assert line_of(lines, path_parts("flows[1].from")) == 10
    assert line_of(lines, path_parts("flows[1].missing")) == 9  # the item's header
    assert line_of(lines, ("model", "lognormal", "name")) == 3  # a union tag is skipped
    assert line_of(lines, ("nowhere",)) is None


def test_path_parts_reads_indices_and_quoted_names():
    assert path_parts('flows[4].from') == ("flows", 4, "from")
    assert path_parts('images."IMG 1".rois."ROI 3"') == ("images", "IMG 1", "rois", "ROI 3")


def test_a_toml_escape_json_lacks_does_not_break_the_lookup():
    lines = key_lines('[a]\n"k\\U0001F600" = 1\n"\\q" = 2\n')
    assert lines[("a", "k\\U0001F600")] == 2  # left as written
    assert line_of(lines, ("a", "zzz")) == 1
