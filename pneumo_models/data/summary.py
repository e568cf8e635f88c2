"""DataSummary: what was loaded, JSON-able, with a short terminal table."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .constants import CLASS_NAMES

MAX_LISTED = 10  # skipped files and mixed patients named in the terminal summary


def skip_kind(reason: str) -> str:
    """The kind of a skip reason ("truncated DICOM: ..." -> "truncated DICOM"), for counts."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip() or "unreadable"


@dataclass
class DataSummary:
    source: str
    kind: str
    fingerprint: str
    #: {"train": {"NORMAL": n, "PNEUMONIA": n}, "val": {...}} after the validation split is
    #: carved; a "test" entry is added when the source has a test split (counted, never decoded).
    counts: dict = field(default_factory=dict)
    #: distinct patients per split: {"train": n, "val": n} (+ "test" when present)
    patients: dict = field(default_factory=dict)
    #: [{"path": ..., "reason": ...}] for files that could not be decoded
    skipped: list = field(default_factory=list)
    val_strategy: str = ""
    #: patients (DICOM PatientID, or from file names) with images in both class folders: reported,
    #: never split apart (a patient stays on one side of the validation split whatever the labels)
    mixed_patients: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSummary":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def total(self, split: str) -> int:
        return int(sum(self.counts.get(split, {}).values()))

    def format(self) -> str:
        """A few lines for the terminal."""
        note = ": generated demo images, NOT real X-rays" if self.kind == "synthetic" else ""
        lines = [f"data: {self.source} ({self.kind}{note}, fingerprint {self.fingerprint[:12]})"]
        head = f"  {'split':<6}" + "".join(f"{c:>11}" for c in CLASS_NAMES) + f"{'total':>8}{'patients':>10}"
        lines.append(head)
        for split in ("train", "val", "test"):
            if split not in self.counts:
                continue
            c = self.counts[split]
            row = f"  {split:<6}" + "".join(f"{int(c.get(n, 0)):>11}" for n in CLASS_NAMES)
            row += f"{self.total(split):>8}{int(self.patients.get(split, 0)):>10}"
            if split == "test":
                row += "  (held out: scored once, after the export is final)"
            lines.append(row)
        lines.append(f"  validation: {self.val_strategy}")
        if self.skipped:
            first = self.skipped[0]
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s), e.g. {first['path']}: {first['reason']}")
            kinds = Counter(skip_kind(s["reason"]) for s in self.skipped)
            lines.append("    " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
            for s in self.skipped[:MAX_LISTED]:
                lines.append(f"    {s['path']}: {s['reason']}")
            if len(self.skipped) > MAX_LISTED:
                lines.append(f"    ... and {len(self.skipped) - MAX_LISTED} more (all in the study's data summary)")
        if self.mixed_patients:
            shown = ", ".join(map(str, self.mixed_patients[:MAX_LISTED]))
            more = ", ..." if len(self.mixed_patients) > MAX_LISTED else ""
            lines.append(f"  warning: {len(self.mixed_patients)} patient(s) have images in both NORMAL and PNEUMONIA "
                         f"folders ({shown}{more}); each stays on one side of the split: check the labels")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
