"""What the command line used to compute itself, now in the library: the query grammar, a
batch written as a file, a schedule added to a dataset, document references, and the flags
that become settings (with errors in flag words)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from helpers import API_SCHEDULE
from pileprep.cli import flags
from pileprep.core.config import BuildConfig, ScheduleConfig
from pileprep.core.errors import ConfigError
from pileprep.core.outdir import OutputDir
from pileprep.outputs.batches import write_batch
from pileprep.training.lookups import parse_doc_ref
from pileprep.training.order import TrainingOrder
from pileprep.training.queries import Query, make_queries, read_query_file


class _Tok:
    """Stands for a tokenizer: one id per character, so what was encoded is visible."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self

    def encode(self, text):
        return argparse.Namespace(ids=[ord(c) for c in text])


def test_text_queries_get_a_leading_space_unless_asked_not_to():
    tok = _Tok()
    (q,) = make_queries([("text", "the", "--text")], tok)
    assert q == Query("the", (32, ord("t"), ord("h"), ord("e")))
    (q,) = make_queries([("text", "the", "--text")], tok, leading_space=False)
    assert q.ids == (ord("t"), ord("h"), ord("e"))


def test_id_queries_need_no_tokenizer_and_keep_their_order():
    tok = _Tok()
    got = make_queries([("ids", "5, 6,7", "--ids"), ("ids", "9", "--ids")], tok)
    assert got == [Query("5,6,7", (5, 6, 7)), Query("9", (9,))]
    assert tok.calls == 0


def test_a_query_file_holds_text_and_ids_lines(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("ids:1,2\n\nPythia\n", encoding="utf-8")
    given = read_query_file(path)
    assert given == [("ids", "1,2", f"{path}:1"), ("text", "Pythia", f"{path}:3")]
    assert [q.label for q in make_queries(given, _Tok())] == ["1,2", "Pythia"]


@pytest.mark.parametrize("given,said", [
    ([], "give a query"),
    ([("ids", "1,x", "q.txt:4")], "q.txt:4: token ids are whole numbers"),
    ([("ids", ",", "--ids")], "--ids: query ',' has no tokens"),
    ([("text", "  ", "--text")], "--text: the text is empty"),
])
def test_bad_queries_are_named_where_they_came_from(given, said):
    with pytest.raises(ConfigError, match=said):
        make_queries(given, _Tok())


def test_a_query_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="must be UTF-8"):
        read_query_file(path)


@pytest.mark.parametrize("text,want", [("00.jsonl.zst:12", ("00.jsonl.zst", 12)),
                                       ("a:b.jsonl:0", ("a:b.jsonl", 0))])
def test_document_references(text, want):
    assert parse_doc_ref(text) == want


@pytest.mark.parametrize("text", ["00.jsonl.zst", ":3", "x:-1", "x:1.5"])
def test_bad_document_references(text):
    with pytest.raises(ConfigError, match="SOURCE:LINE"):
        parse_doc_ref(text)


def test_a_batch_written_as_npy_and_jsonl_is_the_batch(scheduled_build, tmp_path, tokenizer):
    order = TrainingOrder(scheduled_build, ScheduleConfig(**API_SCHEDULE))
    rows = [3, 0, 5]
    shape = write_batch(order, 7, rows, tmp_path / "b.npy", lambda: pytest.fail("not needed"))
    want = order.batch(7, rows)
    assert shape == want.shape
    assert np.array_equal(np.load(tmp_path / "b.npy"), want)
    write_batch(order, 7, rows, tmp_path / "b.jsonl", lambda: tokenizer)
    lines = [json.loads(ln) for ln in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [ln["row"] for ln in lines] == rows
    assert [ln["tokens"] for ln in lines] == want.tolist()
    assert lines[1]["text"] == tokenizer.decode(want[1].tolist(), skip_special_tokens=False)
    assert [ln["sources"] for ln in lines] == order.sources(7, rows)
    with pytest.raises(ConfigError, match=r"\.npy or \.jsonl"):
        write_batch(order, 7, rows, tmp_path / "b.txt", lambda: tokenizer)


def test_a_schedule_added_to_a_dataset_is_the_build_one(scheduled_build, tmp_path):
    from pileprep.jobs.schedule import add_schedule

    out = tmp_path / "copy"
    shutil.copytree(scheduled_build, out)
    cfg = ScheduleConfig(seq_length=64, batch_size=4, train_iters=20, seed=7)
    written = add_schedule(out, cfg, "tok.json", quiet=True)
    assert all(p.exists() for p in written) and written[-1].name.startswith("gpt_neox_64sl_4bs")
    order = TrainingOrder(out, cfg)
    assert order.batch(3).shape == (4, 65)
    with OutputDir(out, "build"):  # a second writer is refused, not interleaved
        with pytest.raises(ConfigError, match="in use by pileprep build"):
            add_schedule(out, cfg, "tok.json", quiet=True)


def _args(**given):
    defaults = {dest: None for dest in flags.SETTINGS}
    return argparse.Namespace(**{**defaults, **given})


def test_flags_become_settings_over_the_pipeline_file(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("[dedup]\nthreshold = 0.9\nnum_perm = 64\n[cluster]\nworkers = 3\n")
    cfg = flags.build_config(_args(config=str(toml), threshold=0.8, input=["x"],
                                   seq_length=64, quiet=True, no_verify=True))
    assert (cfg.dedup.threshold, cfg.dedup.num_perm, cfg.dedup.verify) == (0.8, 64, False)
    assert cfg.cluster.workers == 3 and cfg.read.inputs == ["x"] and cfg.quiet is True
    assert cfg.schedule == ScheduleConfig(seq_length=64)
    assert flags.build_config(_args(), schedule=False).schedule is None
    assert BuildConfig().dedup.threshold == 0.87  # nothing shared was changed


def test_errors_name_settings_and_the_command_line_says_flags():
    cfg = flags.build_config(_args(threshold=1.5, input=["x"], output="o"))
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert str(err.value).startswith("dedup.threshold must be in (0, 1]")
    assert flags.in_flag_words(str(err.value)).startswith("--threshold must be in (0, 1]")
    assert (flags.in_flag_words("dedup.bands x dedup.rows must be at most dedup.num_perm")
            == "--bands x --rows must be at most --num-perm")
    assert flags.in_flag_words("a dedup.thresholds word") == "a dedup.thresholds word"


@pytest.mark.parametrize("value", ["4XB", "-3GB", "0"])
def test_a_bad_memory_limit_is_a_setting_error(value):
    cfg = flags.build_config(_args(memory_limit=value, input=["x"], output="o"))
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert flags.in_flag_words(str(err.value)).startswith("--memory-limit must be auto or a size")


def test_a_write_into_a_missing_folder_names_the_file_asked_for(tmp_path):
    from pileprep.core import atomic

    with pytest.raises(FileNotFoundError) as err:
        atomic.write_json(tmp_path / "nodir" / "x.json", {})
    assert err.value.filename == str(tmp_path / "nodir" / "x.json")
