"""``report.json``: what happened to every input line. Its one invariant lives here.

``lines_read = kept + duplicates + sum(rejected)``: the build refuses to finish when it does not
hold, and ``verify`` checks it again on a finished build.
"""

from __future__ import annotations


def accounting_gap(report: dict) -> str | None:
    """Why the report's lines do not add up, or None when every line is accounted for."""
    rejected = sum(report["rejected"].values())
    accounted = report["kept"] + report["duplicates"] + rejected
    if accounted == report["lines_read"]:
        return None
    return (f"lines_read={report['lines_read']} but kept={report['kept']} + "
            f"duplicates={report['duplicates']} + rejected={rejected} = {accounted}")
