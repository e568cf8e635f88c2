"""Patient ids from Kermany-style file names (used to keep a patient on one side of a split).

* ``personNNNN_bacteria_MMMM.jpeg`` / ``personNNNN_virus_MMMM.jpeg`` -> ``personNNNN``
  (a trailing ``_K`` as in ``person1_virus_12_2.jpeg`` is allowed);
* ``IM-NNNN-MMMM.jpeg`` / ``NORMAL2-IM-NNNN-MMMM.jpeg`` -> ``IM-NNNN``
  (extra ``-KKKK`` parts as in ``IM-0429-0001-0002.jpeg`` are allowed: same patient);
* any other name -> its file stem is its own patient.

A DICOM file's patient is its ``PatientID`` tag when it holds one (``file_patient``); the file
name is the fallback.
"""
from __future__ import annotations

import os
import re
from pathlib import PurePath

_PERSON = re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+(?:_\d+)*$", re.IGNORECASE)
_IM = re.compile(r"^(?:NORMAL\d*-)?(IM-\d+)(?:-\d+)+$", re.IGNORECASE)


def patient_id(name: str | os.PathLike) -> str:
    """Patient id for a file name or path (only the final component is used)."""
    stem = PurePath(os.fspath(name).replace("\\", "/")).stem
    for pattern in (_PERSON, _IM):
        m = pattern.match(stem)
        if m:
            return m.group(1)
    return stem


def file_patient(path: str | os.PathLike) -> str:
    """The patient of an image file: a DICOM file's ``PatientID``, else ``patient_id`` of its name."""
    from .dicom import dicom_patient

    return dicom_patient(path) or patient_id(path)
