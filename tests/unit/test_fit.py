"""`lanternpk.fit` helpers that need no sampling (the fit itself: tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from lanternpk.fit import CENSORING_NOTE_FRACTION, censoring_note


@pytest.mark.parametrize(("below", "rows", "noted"),
                         [(65, 100, False), (66, 100, True), (0, 0, False), (204, 368, False),
                          (368, 368, True)])
def test_the_censoring_note_is_given_above_its_fraction_only(below, rows, noted):
    """Above CENSORING_NOTE_FRACTION of rows below the LOD (the bundled ALS study, 204 of
    368, is below it), and never for an empty table."""
    assert CENSORING_NOTE_FRACTION == 0.65
    censored = np.arange(rows) < below
    note = censoring_note(censored)
    assert (note is not None) == noted
    if noted:
        assert note.startswith(f"{below} of {rows} rows ({100 * below / rows:.0f}%) are below "
                               "the LOD")
