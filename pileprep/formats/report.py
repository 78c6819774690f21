"""``report.json``: what happened to every input line. Its one invariant lives here.

``lines_read = kept + duplicates + sum(rejected)``: the build refuses to finish when it does not
hold, and ``verify`` checks it again on a finished build.
"""

from __future__ import annotations


def accounting_gap(report: dict) -> str | None:
    """Why the report's lines do not add up, in all or in a shard, or None when every line is
    accounted for (a shard without ``duplicates`` is from before they were counted per shard:
    its ``kept`` counted them)."""
    for where, counts in [("", report)] + [(f"{s['source']}: ", s) for s in report.get("shards", [])]:
        rejected = sum(counts["rejected"].values())
        duplicates = counts.get("duplicates", 0)
        accounted = counts["kept"] + duplicates + rejected
        if accounted != counts["lines_read"]:
            return (f"{where}lines_read={counts['lines_read']} but kept={counts['kept']} + "
                    f"duplicates={duplicates} + rejected={rejected} = {accounted}")
    return None
