"""The observation and standard-curve data contracts (DESIGN.md), as data.

Canonical observations are a :class:`pandas.DataFrame` with exactly these dtypes:
text columns use pandas' ``string`` dtype, numbers ``float64``. Its index, named ``row``,
holds the row number in the source file as a spreadsheet counts it (header = row 1), so
every later message can point back at the user's file. Unknown columns are kept, as text.
"""

from __future__ import annotations

TEXT = "string"
NUMBER = "float64"

#: Required observation columns, in canonical order, with their canonical dtype.
OBSERVATION_COLUMNS: dict[str, str] = {
    "study": TEXT,
    "animal": TEXT,
    "cell_type": TEXT,
    "dose_cells": NUMBER,
    "time_h": NUMBER,
    "region": TEXT,
    "modality": TEXT,
    "image": TEXT,
    "flux": NUMBER,
    "lod": NUMBER,
}

#: Optional observation columns that have a contract when present.
OPTIONAL_OBSERVATION_COLUMNS: dict[str, str] = {
    "species": TEXT,
    "disease": TEXT,
    "background": NUMBER,
}

#: Regions the default model knows; a spec may define others.
KNOWN_REGIONS = ("lung", "femur", "damaged_organ", "spinal_cord", "whole_body")
MODALITIES = ("in_vivo", "ex_vivo")

#: Standard-curve columns: known cell numbers imaged, and the flux they gave (photons/s).
CALIBRATION_COLUMNS: dict[str, str] = {"cells": NUMBER, "flux": NUMBER}
OPTIONAL_CALIBRATION_COLUMNS: dict[str, str] = {"setting": TEXT, "region": TEXT}
CALIBRATION_SETTINGS = ("in_vitro", "ex_vivo")

#: One measurement is identified by these; two rows with the same key are duplicates. The
#: image is part of it: repeat imaging (two images of one animal at one time and modality,
#: SCIENCE.md: 10–30% CV between them) gives one row per image, each with its own gain.
OBSERVATION_KEY = ("study", "animal", "time_h", "region", "modality", "image")

INDEX_NAME = "row"
FIRST_DATA_ROW = 2
