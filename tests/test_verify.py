"""verify reads every large array a chunk at a time (memory independent of the dataset), and
still finds every kind of damage: checked with chunks far smaller than the arrays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import API_SCHEDULE
from pileprep.core.config import ScheduleConfig
from pileprep.checks import verify as verify_mod
from pileprep.training import schedule_files


@pytest.fixture(params=[(7, 13), (1 << 22, 1 << 23)], ids=["tiny-chunks", "default-chunks"])
def chunk(request, monkeypatch):
    """Chunks of index entries, and of doc_idx for the walk (sizes gathered in blocks of the
    first): tiny ones put every boundary inside the test's arrays."""
    monkeypatch.setattr(verify_mod, "_CHUNK", request.param[0])
    monkeypatch.setattr(verify_mod, "_WALK", request.param[1])
    return request.param


def _copy(build, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(build, out)
    return out, schedule_files.paths(out / "pile_text_document", ScheduleConfig(**API_SCHEDULE))


def test_a_clean_build_verifies_whatever_the_chunk(scheduled_build, chunk):
    v = verify_mod.verify(scheduled_build)
    assert not v.problems and any("samples over" in line for line in v.checked)


def _rewrite(path, change):
    arr = np.load(path)
    change(arr)
    np.save(path, arr)


@pytest.mark.parametrize("kind,change,message", [
    ("doc", lambda a: a.__setitem__(3, a[4]), "doc_idx is not"),
    ("sample", lambda a: a.__setitem__((17, 1), a[17, 1] + 1), "sample_idx is not a monotone walk"),
    ("sample", lambda a: a.__setitem__((5, 0), a[5, 0] + 1), "sample_idx is not a monotone walk"),
    # a document index past the end of doc_idx: outside every chunk of the walk
    ("sample", lambda a: a.__setitem__((9, 0), a[-1, 0] + 5), "sample_idx is not a monotone walk"),
    ("sample", lambda a: a.__setitem__((9, 0), -1), "sample_idx is not a monotone walk"),
    ("shuffle", lambda a: a.__setitem__(0, a[1]), "shuffle_idx is not a permutation"),
])
def test_damaged_schedules_are_found(scheduled_build, tmp_path, chunk, kind, change, message):
    out, files = _copy(scheduled_build, tmp_path)
    files[kind].unlink()  # break the link: the copy below is damaged alone
    shutil.copy(schedule_files.paths(scheduled_build / "pile_text_document",
                                     ScheduleConfig(**API_SCHEDULE))[kind], files[kind])
    _rewrite(files[kind], change)
    problems = verify_mod.verify(out).problems
    assert any(message in p for p in problems), problems


def test_damaged_provenance_is_found(scheduled_build, tmp_path, chunk):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, _ = _copy(scheduled_build, tmp_path)
    t = pq.read_table(out / "provenance.parquet")
    tokens = t.column("tokens").to_numpy().copy()
    tokens[11] += 1
    t = t.set_column(t.schema.get_field_index("tokens"), "tokens", pa.array(tokens, pa.int32()))
    pq.write_table(t, out / "provenance.parquet")
    problems = verify_mod.verify(out).problems
    assert any("token counts differ from the .idx sizes at 1 documents" in p for p in problems), problems


def test_provenance_lookup_of_many_row_groups_equals_the_table(scheduled_build, tmp_path):
    """A table of several row groups is read through the derived lookup arrays: same answers
    as the table itself, null sources included."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pileprep.formats import provenance

    t = pq.read_table(scheduled_build / "provenance.parquet")
    src = t.column("source").to_pylist()
    src[3] = None  # an unknown source, as in an adopted dataset
    t = t.set_column(t.schema.get_field_index("source"), "source", pa.array(src, pa.string()))
    path = tmp_path / "provenance.parquet"
    pq.write_table(t, path, row_group_size=17)  # many row groups
    reader = provenance.ByDocument(path)
    docs = np.array([0, 3, 16, 17, len(src) - 1, 5, 5])
    sources, lines, subsets = reader.get(docs)
    assert sources == [src[d] for d in docs]
    assert lines.tolist() == [t.column("line")[int(d)].as_py() for d in docs]
    assert subsets == [t.column("pile_set_name")[int(d)].as_py() for d in docs]
    assert (tmp_path / ".pileprep-cache").is_dir()
    assert provenance.ByDocument(path).get(docs)[0] == sources  # from the cache this time
