"""A report's means, indexed for tables and plots: by (method label, group, level)."""

from __future__ import annotations

from condiff.evaluate.methods import method_order
from condiff.evaluate.protocols.base import Protocol, level_sort
from condiff.evaluate.report import Report


class Means:
    """The report's means, indexed by (label, group, level)."""

    def __init__(self, report: Report, protocol: Protocol) -> None:
        self.records = report.means()
        self.protocol = protocol
        self.groups = report.groups()
        self.levels = level_sort(report.levels())
        self.labels: list[str] = []
        self.by: dict[tuple[str, str, str], dict] = {}
        for m in sorted(self.records, key=method_order):
            label = self.label(m)
            if label not in self.labels:
                self.labels.append(label)
            self.by[(label, str(m["group"]), str(m["level"]))] = m

    def label(self, m: dict) -> str:
        return self.protocol.baseline_label if m["estimate"] == "baseline" else str(m["method"])

    def get(self, label: str, group: str, level: str) -> dict | None:
        return self.by.get((label, group, level))

    def has(self, key: str) -> bool:
        return any(key in m for m in self.records)
