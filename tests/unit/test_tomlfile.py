"""Where a TOML key is written: the line numbers that problems in spec, truth and mapping
files carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanternpk.data.livingimage import load_mapping
from lanternpk.data.simulate import load_truth
from lanternpk.errors import DataError
from lanternpk.spec import load_spec
from lanternpk.tomlfile import key_lines, line_of, parse_toml, path_parts, plain_message

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


# --- reading the file: every TOML file (spec, truth, design, mapping) goes through one loader


ROOT = Path(__file__).parents[2]


def test_a_byte_order_mark_is_accepted_in_every_toml_file(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_bytes(b"\xef\xbb\xbf" + (ROOT / "models/muse_vs_msc.toml").read_bytes())
    assert load_spec(spec) == load_spec(ROOT / "models/muse_vs_msc.toml")
    truth = tmp_path / "truth.toml"
    truth.write_bytes(b"\xef\xbb\xbf" + (ROOT / "data/truths/als_mouse.toml").read_bytes())
    assert load_truth(truth) == load_truth(ROOT / "data/truths/als_mouse.toml")


def test_a_bom_does_not_hide_the_line_of_a_key_on_line_1():
    assert key_lines("\ufeffname = 1\n") == {("name",): 1}


@pytest.mark.parametrize("loader", [load_spec, load_truth, load_mapping])
def test_toml_nested_too_deeply_is_a_problem_not_a_recursion_error(tmp_path, loader):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DataError) as info:
        loader(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert problem.message.endswith(" TOML: nested too deeply") or problem.message.endswith(
        " TOML file: nested too deeply"), problem.message


@pytest.mark.parametrize("loader", [load_spec, load_truth, load_mapping])
def test_an_integer_too_long_to_convert_is_a_problem_on_its_line(tmp_path, loader):
    """An integer of 5000 digits: Python's int() refuses it, and the ValueError escaped as a
    traceback."""
    path = tmp_path / "huge.toml"
    path.write_text(f'name = "x"\n# {"1" * 5000} in a comment\n\nsigma = [\n  {"9" * 5000}]\n')
    with pytest.raises(DataError) as info:
        loader(path)
    (problem,) = info.value.problems
    assert problem.file == str(path) and problem.line == 5
    assert problem.message.endswith(": a number of more than 4300 digits"), problem.message


def _load_design(path):
    from lanternpk.sbc import load_design

    return load_design(path)


@pytest.mark.parametrize("loader", [load_spec, load_truth, load_mapping, _load_design])
def test_a_utf16_toml_file_is_named_as_not_utf8(tmp_path, loader):
    """A truth file or design saved as UTF-16: before, "'utf-8' codec can't decode byte
    0xff in position 0" (the spec already said what to do)."""
    path = tmp_path / "u16.toml"
    path.write_text('name = "x"\n\nbad = "é"\n', encoding="utf-16")
    with pytest.raises(DataError) as info:
        loader(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert problem.message.endswith("not UTF-8 text (line 1); save it as UTF-8"), problem.message


def test_parse_toml_names_the_file_on_a_syntax_error():
    with pytest.raises(DataError) as info:
        parse_toml("x = [", file="f.toml")
    (problem,) = info.value.problems
    assert problem.file == "f.toml" and problem.message.startswith("not valid TOML: ")


@pytest.mark.parametrize(("item", "expected"), [
    ({"type": "float_type", "msg": "Input should be a valid number", "input": "5e4"},
     "must be a number (write it without quotes)"),
    ({"type": "missing", "msg": "Field required"}, "required key is missing"),
    ({"type": "greater_than_equal", "msg": "Input should be greater than or equal to 0"},
     "must be greater than or equal to 0"),
    ({"type": "value_error", "msg": "Value error, 'k_sd' needs 'background_rois'"},
     "'k_sd' needs 'background_rois'"),
])
def test_pydantic_errors_read_in_plain_words(item, expected):
    """Spec, truth, design and mapping problems share one wording (tomlfile.plain_message)."""
    assert plain_message(item) == expected


def test_a_toml_value_is_shown_as_toml_writes_it(tmp_path):
    """Before: `value datetime.date(2020, 1, 1)` and `value True` for TOML's 2020-01-01 and
    true."""
    from lanternpk.errors import Problem

    assert str(Problem("t.toml", "m", key="a", value=True)) == "t.toml, key 'a', value true: m"
    assert str(Problem("d.csv", "m", row=2, column="c", value=True)).endswith("value True: m")
    truth = tmp_path / "truth.toml"
    root = Path(__file__).parents[2]
    text = (root / "data/truths/als_mouse.toml").read_text(encoding="utf-8")
    truth.write_text(text.replace("dose_cells = 5.0e4", "dose_cells = 2020-01-01", 1),
                     encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_truth(truth)
    assert "key 'study.dose_cells', value 2020-01-01: " in str(info.value.problems[0])


def test_a_toml_file_that_cannot_be_read_is_a_usage_error(tmp_path, monkeypatch):
    """An unreadable truth, design or mapping file exited 1 ("invalid input") where the
    same file as a spec exited 2, the status README gives an input that cannot be read."""
    from lanternpk.errors import UsageError
    from lanternpk.tomlfile import read_utf8

    path = tmp_path / "truth.toml"
    path.write_text("x = 1\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UsageError, match=f"cannot read truth {path}: Permission denied"):
        read_utf8(path, what="truth")


def test_a_problem_in_an_array_of_tables_names_its_own_line(tmp_path):
    """`design.sacrifice.1.animals` was read back as the key "1", not the element 1, and
    the problem got the line of the first [[design.sacrifice]]; a U+2028 in a comment (TOML
    allows it) shifted every later line by one, as str.splitlines() breaks there."""
    from lanternpk.sbc import load_design

    text = (ROOT / "data/designs/sbc_small.toml").read_text(encoding="utf-8")
    inline = text[text.index("sacrifice = ["):text.index("]\n", text.index("sacrifice = ["))
                  + 2]
    tables = ("[[design.sacrifice]]\ntime_h = 168\nanimals = 2\n\n"
              "[[design.sacrifice]]\ntime_h = 672\nanimals = \"two\"\n")
    edited = text.replace(inline, "").replace("[detection]", tables + "\n[detection]")
    edited = edited.replace("# A small study", "# A small\u2028study", 1)
    path = tmp_path / "design.toml"
    path.write_text(edited, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_design(path)
    (problem,) = caught.value.problems
    lines = edited.split("\n")
    assert problem.key == "design.sacrifice[1].animals"
    assert lines[problem.line - 1] == 'animals = "two"'


def test_an_unknown_key_is_worded_as_in_spec_and_mapping_files(tmp_path):
    """Truth and design files said only "unknown key; did you mean 'x'?"; spec and mapping
    files name the key and list the allowed ones. All now go through one message."""
    from lanternpk.sbc import load_design

    text = (ROOT / "data/designs/sbc_small.toml").read_text(encoding="utf-8")
    path = tmp_path / "design.toml"
    path.write_text(text.replace("[detection]", "[detection]\nbackground_cvv = 1", 1),
                    encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_design(path)
    (problem,) = caught.value.problems
    assert problem.key == "detection.background_cvv"
    assert problem.message.startswith(
        "unknown key 'background_cvv' (did you mean 'background_cv'?); allowed keys: "
        "background_in_vivo, ")


def test_an_unknown_key_in_an_array_of_tables_gets_its_hint(tmp_path):
    """Inside `[[design.sacrifice]]` the allowed keys were not looked up (the element's
    index stopped the walk): a misspelt key got neither a hint nor the list."""
    from lanternpk.sbc import load_design

    text = (ROOT / "data/designs/sbc_small.toml").read_text(encoding="utf-8")
    path = tmp_path / "design.toml"
    path.write_text(text.replace("{ time_h = 672, animals = 2 }",
                                 "{ time_h = 672, animal = 2 }"), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_design(path)
    messages = {p.key: p.message for p in caught.value.problems}
    assert messages["design.sacrifice[1].animal"] == (
        "unknown key 'animal' (did you mean 'animals'?); allowed keys: time_h, animals")
