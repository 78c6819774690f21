"""The ``pileprep`` command line (commands grouped in :data:`GROUPS`).

The command line only parses and prints: every computation lives in the library. Every expected
failure (a :class:`~pileprep.core.errors.PilePrepError`, or an operating-system error) ends
with one line on stderr naming what and where, and exit code 2; never a traceback, unless
``PILEPREP_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from pileprep.cli import flags
from pileprep.core.config import default_tokenizer
from pileprep.core.files import DEDUP_MARKDOWN, NGRAM_DIR
from pileprep.core.errors import ConfigError, PilePrepError

DEBUG_ENV = "PILEPREP_DEBUG"


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="raw shards -> GPT-NeoX .bin/.idx + provenance + the "
                       "training order")
    flags.add_inputs(p)
    p.add_argument("--output", "-o", help="output directory")
    p.add_argument("--config", help="pipeline TOML file (pipelines/*.toml); flags override it")
    p.add_argument("--name", help="dataset name: writes <name>_text_document.bin/.idx (default pile)")
    flags.add_tokenizer(p, help="tokenizer.json path or hub id "
                        f"(env PILEPREP_TOKENIZER; now {default_tokenizer()})")
    flags.add_cluster(p)
    p.add_argument("--strict", action="store_true", default=None,
                   help="stop at the first bad record (exit 2) instead of counting and skipping it")
    p.add_argument("--on-bad-record", choices=["skip", "stop"],
                   help="skip (default): count each bad record in report.json and rejects.jsonl "
                   "and go on; stop: the same as --strict")
    flags.add_work(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different build already in --output")
    flags.add_schedule(p)
    p.add_argument("--no-schedule", action="store_true",
                   help="do not build the training-order index")
    p.add_argument("--dedup", action="store_true", default=None,
                   help="remove near-duplicates across all shards (MinHash-LSH) before packing")
    flags.add_dedup(p)


def cmd_build(args) -> int:
    from pileprep.runner import prefork

    cfg = flags.build_config(args)
    cfg.validate()  # a bad setting is reported before any process starts
    prefork.start_for(cfg)  # the workers' server warms up while the pipeline's code loads
    from pileprep.jobs.build import build

    report = build(cfg, overwrite=args.overwrite)
    # Said once the build is done: a build that fails says only its error, in one line.
    if not cfg.dedup.enabled and (unused := flags.dedup_flags_given(args)):
        print(f"warning: {', '.join(unused)} without --dedup: no near-duplicates were removed",
              file=sys.stderr)
    return 0 if report else 1


def _add_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="only find near-duplicates: writes duplicates.parquet "
                       "and the dedup report (signatures are kept for runs at other thresholds)")
    flags.add_inputs(p)
    p.add_argument("--output", "-o", help="output directory")
    p.add_argument("--config", help="pipeline TOML file; flags override it")
    flags.add_cluster(p)
    p.add_argument("--strict", action="store_true", default=None)
    flags.add_work(p)
    flags.add_dedup(p)
    p.set_defaults(dedup=True)


def cmd_dedup(args) -> int:
    from pileprep.jobs.dedup_only import dedup_only, folder

    cfg = flags.build_config(args, schedule=False)
    summary = dedup_only(cfg)
    print(f"{summary['removed']:,} documents removed as near-duplicates of others "
          f"(threshold {summary['threshold']:g}); see {folder(cfg) / DEDUP_MARKDOWN}")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check a build: index, data, manifest hashes, provenance, "
                       "schedules, accounting")
    p.add_argument("out_dir")


def cmd_verify(args) -> int:
    from pileprep.checks.verify import verify

    v = verify(args.out_dir)
    for line in v.checked:
        print(f"ok: {line}")
    for line in v.problems:
        print(f"PROBLEM: {line}")
    print(f"{args.out_dir}: " + (f"{len(v.problems)} problem(s)" if v.problems else "verified"))
    return 1 if v.problems else 0


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write realistic synthetic Pile-format shards")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--megabytes", type=float, default=2.0, help="approximate size of each shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="write .jsonl instead of .jsonl.zst")


def cmd_synth(args) -> int:
    from pileprep.sources.synth import SynthConfig, generate

    truth = generate(SynthConfig(Path(args.output), args.shards, args.megabytes, args.seed,
                                 compress=not args.plain))
    lines = sum(s["lines"] for s in truth["shards"])
    print(f"wrote {args.shards} shards ({lines} lines, {len(truth['exact'])} exact and "
          f"{len(truth['near'])} near duplicates planted) to {args.output}")
    return 0


def _add_schedule_cmd(sub) -> None:
    p = sub.add_parser("schedule", help="build the training-order index for other settings")
    p.add_argument("out_dir")
    p.add_argument("--tokenizer", help="tokenizer path written into the GPT-NeoX config fragment "
                   "(default: PILEPREP_TOKENIZER or hub id)")
    p.add_argument("--quiet", "-q", action="store_true")
    flags.add_schedule(p)


def cmd_schedule(args) -> int:
    from pileprep.jobs.schedule import add_schedule

    cfg = flags.schedule_config(args)
    for path in add_schedule(args.out_dir, cfg, args.tokenizer or default_tokenizer(), args.quiet):
        print(path)
    print("queries of this dataset now use this schedule unless given other settings")
    return 0


def _order(args):
    from pileprep.training.order import TrainingOrder, resolve_config

    return TrainingOrder(args.out_dir, resolve_config(args.out_dir, **flags.schedule_overrides(args)))


def _add_batch_at(sub) -> None:
    p = sub.add_parser("batch-at", help="the exact batch a GPT-NeoX trainer consumed at a step")
    p.add_argument("out_dir")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--step", type=int, help="optimizer step, counted from 0")
    g.add_argument("--checkpoint", help="stepN: the last batch Pythia's checkpoint stepN "
                   "trained on (step N-1)")
    g.add_argument("--v0-step", type=int, help="K: the 4M-token batch of a v0 model's "
                   "training step K (steps 2K and 2K+1, one after the other)")
    p.add_argument("--rows", help="comma-separated rows of the batch (default: all)")
    p.add_argument("--output", "-o", help="FILE.npy (token array) or FILE.jsonl (rows with text "
                   "and sources); default: a summary on stdout")
    p.add_argument("--tokenizer", help="for decoding text (default: PILEPREP_TOKENIZER or hub id)")
    flags.add_schedule(p, defaults_from_build=True)


def _decoder(args):
    from pileprep.tokenizer import load_tokenizer

    return load_tokenizer(args.tokenizer or default_tokenizer())


def cmd_batch_at(args) -> int:
    from pileprep.outputs.batches import check_target, write_batch
    from pileprep.training.checkpoints import batch_steps

    if args.output:
        check_target(args.output)
    order = _order(args)
    steps = batch_steps(order.cfg.batch_size, args.step, args.checkpoint, args.v0_step)
    rows = order.rows(steps[0], [_int_arg("--rows", r) for r in args.rows.split(",")]
                      if args.rows else None)
    if not args.output:
        for step in steps:
            _print_batch_summary(order, step, order.rows(step, rows))
        return 0
    n, width = write_batch(order, steps, rows, args.output, lambda: _decoder(args))
    print(f"step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}: {n} rows x "
          f"{width} tokens -> {args.output}")
    return 0


def _int_arg(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag} takes whole numbers, not {text!r}") from None


def _source_label(rec: dict) -> str:
    if rec["source"] is None:
        return f"doc {rec['doc']} (source unknown)" if rec["doc"] is not None else "source unknown"
    return f"{rec['source']}:{rec['line']}"


def _print_batch_summary(order, step: int, rows: list[int]) -> None:
    from pileprep.training.steps import batch_summary

    cfg = order.cfg
    summary = batch_summary(order, step, rows)
    first = step * cfg.batch_size
    print(f"step {step}: training samples {first}..{first + cfg.batch_size - 1} "
          f"(seq_length {cfg.seq_length}, batch {cfg.batch_size}, seed {cfg.seed}); "
          f"{len(rows)} rows from {summary.documents} documents")
    total = sum(n for _, n in summary.subsets)
    for name, n in summary.subsets:
        print(f"  {name or '(none)':<22} {n:>9,} tokens  {100 * n / total:5.1f} %")
    for r, row in list(zip(rows, summary.sources))[:5]:
        print(f"  row {r}: " + ", ".join(
            _source_label(p) + (f"[{p['doc_start']}:{p['doc_end']}]" if p["doc_start"] is not None
                                else f" (row tokens {p['row_start']}:{p['row_end']})")
            for p in row))
    if len(rows) > 5:
        print(f"  ... {len(rows) - 5} more rows (--rows to choose, --output for every row)")


def _add_where(sub) -> None:
    p = sub.add_parser("where", help="every step and row where a document was trained on")
    p.add_argument("out_dir")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--doc", help="SOURCE:LINE, e.g. 00.jsonl.zst:1234")
    g.add_argument("--text", help="a snippet of text; every document containing it (found with "
                   "the n-gram index when `pileprep index` built one, else by a scan)")
    p.add_argument("--tokenizer", help="for --text (default: PILEPREP_TOKENIZER or hub id)")
    p.add_argument("--limit", type=int, default=20, help="documents at most, for --text")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_where(args) -> int:
    from pileprep.training.lookups import docs_by_text, find_doc, occurrences, parse_doc_ref

    order = _order(args).for_documents()
    if args.doc:
        docs = [find_doc(order, *parse_doc_ref(args.doc))]
    else:
        from pileprep.formats.suffix import open_index

        docs = docs_by_text(order, _decoder(args), args.text, args.limit,
                            open_index(order.out_dir, order.data))
        if not docs:
            print(f"no document contains {args.text!r}")
            return 1
    for doc in docs:
        info = order.describe_doc(doc)
        hits = occurrences(order, doc)
        print(f"{_source_label(info)} (doc {doc}, {info['pile_set_name'] or 'no subset'}, "
              f"{info['tokens']} tokens): {len(hits)} training rows")
        for h in hits:
            print(f"  step {h['step']:>7} row {h['row']:>5}  row tokens {h['row_start']}:{h['row_end']}"
                  f"  doc tokens {h['doc_start']}:{h['doc_end']}")
    return 0


def _add_sequences(sub) -> None:
    p = sub.add_parser("sequences", help="Pythia-style pre-shuffled MMIDIDX of training samples")
    _add_step_range(p)
    p.add_argument("--output", "-o", required=True, help="output prefix (writes PREFIX.bin/.idx)")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_sequences(args) -> int:
    from pileprep.outputs.sequences import write_sequences

    order = _order(args)
    first, end = _steps(args, order)
    n = write_sequences(order, first, end, args.output)
    print(f"wrote {n} sequences of {order.cfg.seq_length + 1} tokens to {args.output}.bin/.idx")
    return 0


def _step_range(text: str) -> tuple[int, int]:
    a, _, b = text.partition(":")
    if not (a.isdigit() and b.isdigit()) or int(a) >= int(b):
        raise ConfigError(f"--steps takes A:B with A < B, not {text!r}")
    return int(a), int(b)


def _add_step_range(p, required: bool = True) -> None:
    p.add_argument("out_dir")
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--steps", help="A:B, steps A..B-1" + ("" if required else
                                                          " (default: every step)"))
    g.add_argument("--checkpoint", help="stepN: the steps Pythia's checkpoint stepN had "
                   "trained on, 0..N-1")
    g.add_argument("--v0-step", type=int, help="K: the steps a v0 model's training step K "
                   "read (4M-token batches): 2K and 2K+1")


def _bins(text: str) -> int | str:
    if text == "checkpoints":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of step ranges, or checkpoints, not {text!r}")


def _edges(args, order, first: int, end: int) -> int | list[int]:
    """--bins as the library takes it: a count, or the checkpoints' edges."""
    from pileprep.training.checkpoints import checkpoint_edges

    if args.bins == "checkpoints":
        return checkpoint_edges(order.cfg.batch_size, first, end)
    return args.bins


def _steps(args, order) -> tuple[int, int]:
    """The step range given (--steps, --checkpoint or --v0-step), else every step."""
    from pileprep.training.checkpoints import step_range

    return step_range(order.cfg.batch_size, order.cfg.train_iters,
                      _step_range(args.steps) if args.steps else None, args.checkpoint,
                      args.v0_step)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="training sequences of a step range with their sources, "
                       "for Hugging Face datasets (hf), parquet or jsonl")
    _add_step_range(p)
    p.add_argument("--format", choices=["hf", "parquet", "jsonl", "memorization"], required=True,
                   help="memorization: each sequence's first --prefix tokens, the --suffix "
                   "tokens that follow, and the sources of both (parquet, or .jsonl)")
    p.add_argument("--output", "-o", required=True,
                   help="a directory for hf (datasets.load_from_disk), else a file")
    p.add_argument("--prefix", type=int, default=32, help="memorization: prefix tokens (32)")
    p.add_argument("--suffix", type=int, default=32, help="memorization: continuation tokens (32)")
    p.add_argument("--text", action="store_true", help="add the decoded text of each sequence")
    p.add_argument("--tokenizer", help="for --text (default: PILEPREP_TOKENIZER or hub id)")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_export(args) -> int:
    from pileprep.outputs.export import export

    order = _order(args)
    first, end = _steps(args, order)
    n = export(order, first, end, args.output, args.format,
               _decoder(args) if args.text else None, args.prefix, args.suffix)
    print(f"wrote {n} sequences (steps {first}..{end - 1}) to {args.output} ({args.format})")
    return 0


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="suffix-array index of the dataset's tokens (for count and "
                       "where --text), built in shards as Dask tasks; resumable")
    p.add_argument("out_dir")
    p.add_argument("--shard-tokens", type=int, help="tokens per shard at most (default 2^27: "
                   "about 3 GB of memory per worker while a shard is sorted). Fewer shards answer "
                   "faster: for the Pile, 1073741823 (280 shards, ~23 GB per sorting worker) "
                   "counts in milliseconds where 2^27 (2,235 shards) takes ~50 ms")
    flags.add_cluster(p)
    p.add_argument("--quiet", "-q", action="store_true")


def cmd_index(args) -> int:
    from pileprep.jobs.index import build_index
    from pileprep.core.progress import log

    cluster = flags.build_config(args, schedule=False).cluster
    meta = build_index(args.out_dir, cluster, args.shard_tokens, args.quiet)
    tokens, size = meta["tokens"], meta["bytes"]
    if not meta["reused"]:  # timings vary from run to run: a log line, not the result
        log(f"index: {tokens:,} tokens in {meta['wall_seconds']:.1f} s "
            f"({tokens / max(meta['wall_seconds'], 1e-9) / 1e6:.2f} M tokens/s)", args.quiet)
    print(f"{'index up to date' if meta['reused'] else 'indexed'}: {tokens:,} tokens in "
          f"{len(meta['shards'])} shard(s), {size:,} bytes ({size / max(tokens, 1):.2f} bytes/token)"
          f" -> {Path(args.out_dir) / NGRAM_DIR}")
    return 0


def _add_count(sub) -> None:
    p = sub.add_parser("count", help="occurrences of token sequences in the corpus and in the "
                       "training samples of a step range, per bin of steps (needs `pileprep index`)")
    _add_step_range(p, required=False)
    p.add_argument("--text", action="append", default=[], help="a term, tokenized as inside a "
                   "document (with a leading space unless --no-leading-space; no EOD); repeatable")
    p.add_argument("--ids", action="append", default=[], help="token ids, e.g. 1,2,3; repeatable")
    p.add_argument("--queries", help="file of queries, one a line: text, or ids:1,2,3")
    p.add_argument("--no-leading-space", action="store_true", help="tokenize text as at the "
                   "start of a document or after a newline (BPE makes ' the' and 'the' two tokens)")
    p.add_argument("--bins", type=_bins, default=1, help="step ranges to count in (default 1), or "
                   "'checkpoints': between Pythia's published checkpoints")
    p.add_argument("--output", "-o", help="FILE.parquet: one row per query and step range")
    p.add_argument("--plot", help="FILE.png: cumulative samples per query over the steps")
    p.add_argument("--tokenizer", help="for text (default: PILEPREP_TOKENIZER or hub id)")
    p.add_argument("--strategy", choices=["auto", "index", "stream"], default="auto",
                   help="how training counts are made: each query's index hits mapped to samples "
                   "(rare terms), one streaming pass over the trained samples for all frequent "
                   "queries at once (Dask tasks), or auto: the cheaper per query (default)")
    p.add_argument("--part-samples", type=int, help="training samples per task of the streaming "
                   "pass (default: 2^28 tokens' worth)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    flags.add_schedule(p, defaults_from_build=True)
    flags.add_cluster(p)


def _queries(args):
    """Every query given, in order: --text, --ids, then the --queries file's lines."""
    from pileprep.training.queries import make_queries, read_query_file

    given = [("text", t, "--text") for t in args.text] + [("ids", i, "--ids") for i in args.ids]
    if args.queries:
        given += read_query_file(args.queries)
    if not given:
        raise ConfigError("give a query: --text, --ids or --queries")
    return make_queries(given, lambda: _decoder(args), leading_space=not args.no_leading_space)


def cmd_count(args) -> int:
    from pileprep.outputs import counts as count_table, plots
    from pileprep.jobs.count import count_terms

    if args.output:
        count_table.check_target(args.output)
    queries = _queries(args)  # bad queries are refused before any work
    order = _order(args).for_documents()
    first, end = _steps(args, order)
    labels = [q.label for q in queries]
    cluster = flags.build_config(args, schedule=False).cluster
    c = count_terms(order, [list(q.ids) for q in queries], first, end,
                    _edges(args, order, first, end), args.strategy, cluster, args.quiet,
                    args.part_samples)
    total = c.samples.sum(axis=1)
    print(f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'}, steps {first}..{end - 1} "
          f"({order.cfg.batch_size} samples of {order.cfg.seq_length + 1} tokens a step)")
    for i in range(min(len(queries), 20)):
        print(f"  {labels[i]!r} {c.queries[i]}: {int(c.corpus[i]):,} in the corpus, "
              f"{int(total[i]):,} training samples ({int(c.occurrences[i].sum()):,} occurrences; "
              f"counted by {'the streaming pass' if c.strategy[i] == 'stream' else 'its index hits'})")
    if len(queries) == 1 and len(c.edges) > 2:
        cum = c.cumulative("samples")[0]
        for b, (a, z) in enumerate(zip(c.edges[:-1], c.edges[1:])):
            print(f"    steps {a:>7}..{z - 1:<7} {int(c.samples[0, b]):>9,} samples  "
                  f"{int(cum[b]):>11,} so far")
    if args.output:
        count_table.write(c, labels, args.output)
        print(f"{len(queries)} x {len(c.edges) - 1} rows -> {args.output}")
    if args.plot:
        print(f"{plots.term_frequency(c, labels, order, args.plot)} curves -> {args.plot}")
    return 0


def _add_contamination(sub) -> None:
    p = sub.add_parser("contamination", help="benchmark examples whose n-grams the corpus holds, "
                       "and the first step that trained them (needs `pileprep index`)")
    _add_step_range(p, required=False)
    p.add_argument("--input", "-i", action="append", required=True, help="a benchmark: JSON lines "
                   "(.jsonl, .jsonl.zst), parquet, or hf:NAME[@SPLIT]; repeatable, one benchmark each")
    p.add_argument("--name", action="append", help="each --input's name in the results (default: "
                   "its file name)")
    p.add_argument("--field", default="text", help="the column holding an example's text (text)")
    p.add_argument("--ngram", type=int, default=13, help="n-gram length in tokens (13); an "
                   "example shorter than this is looked up whole")
    p.add_argument("--no-leading-space", action="store_true", help="tokenize examples as at the "
                   "start of a document (default: as inside one, after a space, like count --text)")
    p.add_argument("--output", "-o", help="FILE.parquet: one row per example")
    p.add_argument("--summary", help="FILE.json: the summary per benchmark")
    p.add_argument("--plot", help="FILE.png: examples with a trained n-gram, over the steps")
    p.add_argument("--bins", type=_bins, default=100, help="step ranges of the plot (100), or "
                   "'checkpoints': Pythia's published checkpoints")
    p.add_argument("--tokenizer", help="default: PILEPREP_TOKENIZER or hub id")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    flags.add_schedule(p, defaults_from_build=True)
    flags.add_cluster(p)


def cmd_contamination(args) -> int:
    from pileprep.jobs.contamination import measure
    from pileprep.outputs import contamination as results
    from pileprep.training.ngram import bin_edges

    for target, suffix, flag in ((args.output, ".parquet", "--output"),
                                 (args.summary, ".json", "--summary"), (args.plot, ".png", "--plot")):
        if target:
            results.check_target(target, suffix, flag)
    order = _order(args).for_documents()
    first, end = _steps(args, order)
    edges = bin_edges(first, end, _edges(args, order, first, end)) if args.plot else None
    cluster = flags.build_config(args, schedule=False).cluster
    benchmarks, table = measure(order, args.input, args.name, args.field, _decoder(args),
                                args.ngram, first, end, cluster, not args.no_leading_space,
                                args.quiet)
    rows = results.summary(benchmarks, table)
    print(f"{args.ngram}-grams of {len(benchmarks)} benchmark(s), steps {first}..{end - 1}:")
    for r in rows:
        e = max(r["examples"], 1)
        print(f"  {r['benchmark']}: {r['examples']:,} examples; any n-gram in the corpus "
              f"{r['any_ngram_in_corpus']:,} ({r['any_ngram_in_corpus'] / e:.1%}), trained "
              f"{r['any_ngram_trained']:,} ({r['any_ngram_trained'] / e:.1%}); whole in the corpus "
              f"{r['verbatim_in_corpus']:,}, trained {r['verbatim_trained']:,}")
        for reason, skip in r["skipped"].items():
            print(f"    skipped {skip['rows']:,} row(s): {reason} (first at {skip['first']})")
    if args.output:
        results.write(table, args.output)
        print(f"{table.num_rows:,} rows -> {args.output}")
    if args.summary:
        results.write_summary(rows, args.summary)
        print(f"summary -> {args.summary}")
    if args.plot:
        results.plot(table, [b.name for b in benchmarks], edges, args.plot,
                     f"Benchmark examples with a trained {args.ngram}-gram, steps {first}-{end - 1}")
        print(f"chart -> {args.plot}")
    return 0


def _add_seen(sub) -> None:
    p = sub.add_parser("seen", help="which documents, from which subsets, the trainer saw in a "
                       "step range")
    _add_step_range(p)
    p.add_argument("--output", "-o", help="FILE.parquet or FILE.csv: one row per document "
                   "(source, line, pile_set_name, tokens_seen, first_step)")
    p.add_argument("--top", type=int, default=5, help="documents to print (most tokens seen)")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_seen(args) -> int:
    from pileprep.outputs.export import write_seen
    from pileprep.training.steps import seen

    order = _order(args).for_documents()
    first, end = _steps(args, order)
    s = seen(order, first, end)
    print(f"steps {first}..{end - 1}: {s.sequences:,} sequences, "
          f"{s.tokens:,} tokens from {len(s.docs):,} documents "
          f"({100 * len(s.docs) / len(order.data):.1f} % of the dataset's {len(order.data):,})")
    for name, n in s.subsets:
        print(f"  {name or '(none)':<22} {n:>11,} tokens  {100 * n / s.tokens:5.1f} %")
    for i in s.top(args.top):
        info = order.describe_doc(int(s.docs[i]))
        print(f"  {_source_label(info)} ({info['pile_set_name'] or 'no subset'}): "
              f"{int(s.tokens_seen[i]):,} tokens seen, first at step {int(s.first_step[i])}")
    if args.output:
        write_seen(order, s, args.output)
        print(f"{len(s.docs):,} documents -> {args.output}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="PNG of the subset mix (token share) per step range")
    _add_step_range(p, required=False)
    p.add_argument("--bins", type=_bins, default=20, help="step ranges (bars) in the plot, or "
                   "'checkpoints': between Pythia's published checkpoints")
    p.add_argument("--output", "-o", required=True, help="FILE.png")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_plot(args) -> int:
    from pileprep.outputs.plots import subset_mix

    if args.bins != "checkpoints" and args.bins < 1:
        raise ConfigError("--bins must be positive")
    order = _order(args)
    first, end = _steps(args, order)
    ranges, subsets = subset_mix(order, first, end, _edges(args, order, first, end), args.output)
    print(f"{ranges} step ranges x {subsets} subsets -> {args.output}")
    return 0


def _add_split(sub) -> None:
    p = sub.add_parser("split", aliases=["shard"], help="a build in upload-sized pieces with "
                       "SHA256SUMS (old name: shard)")
    p.add_argument("out_dir")
    p.add_argument("--max-size", type=flags.parse_size, required=True, help="e.g. 5GB, 500MiB")
    p.add_argument("--output", "-o", required=True, help="directory for the pieces")


def cmd_split(args) -> int:
    from pileprep.outputs.pieces import SUMS, split

    desc = split(args.out_dir, args.output, args.max_size)
    pieces = sum(len(f.get("pieces", [])) for f in desc["files"].values())
    print(f"{len(desc['files'])} files -> {pieces} pieces of at most {args.max_size:,} bytes in "
          f"{args.output} (check with: cd {args.output} && sha256sum -c {SUMS})")
    return 0


def _add_join(sub) -> None:
    p = sub.add_parser("join", aliases=["unshard"], help="check and join pieces made by "
                       "`pileprep split` (old name: unshard)")
    p.add_argument("pieces_dir")
    p.add_argument("--output", "-o", required=True, help="directory for the rebuilt build")


def cmd_join(args) -> int:
    from pileprep.outputs.pieces import join
    from pileprep.checks.verify import verify

    files = join(args.pieces_dir, args.output)
    v = verify(args.output)
    for line in v.problems:
        print(f"PROBLEM: {line}")
    print(f"{len(files)} files checked and joined into {args.output}; "
          + (f"{len(v.problems)} problem(s)" if v.problems else "the build verifies"))
    return 1 if v.problems else 0


def _add_adopt(sub) -> None:
    p = sub.add_parser("adopt", help="take a published GPT-NeoX dataset (Pythia's .bin/.idx or "
                       "its pieces) as it is, with its index maps and, by content, its sources")
    p.add_argument("dataset", help="MMIDIDX prefix, its .idx, or a directory of "
                   "NAME-00000-of-000NN.bin pieces with NAME.idx")
    p.add_argument("--output", "-o", required=True, help="output directory")
    p.add_argument("--name", help="dataset name in OUT_DIR (default: the published one without "
                   "_text_document)")
    p.add_argument("--hashes", help="file of 'NAME SHA256' lines: every data file and the index "
                   "are checked against it before anything is written")
    p.add_argument("--index-maps", help="directory of GPT-NeoX index maps (either naming), "
                   "checked against the dataset and linked in")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="global batch the index maps were made for (Pythia: 1024)")
    p.add_argument("--preshuffled", action="store_true", help="the dataset's items are the "
                   "training samples in training order (Pythia's *-pythia-preshuffled; taken "
                   "as such by itself when named document.idx and all items have one length)")
    p.add_argument("--seq-length", type=int, help="with --preshuffled: items are this + 1 "
                   "tokens (default 2048)")
    p.add_argument("--copy", action="store_true", help="join pieces (or copy the .bin) into "
                   "OUT_DIR instead of reading them in place; GPT-NeoX needs one .bin")
    p.add_argument("--overwrite", action="store_true")
    _add_raw_flags(p, required=False)


def _add_raw_flags(p, required: bool) -> None:
    flags.add_inputs(p, required, help="raw documents to recover sources from, by content: "
                     "anything build reads (repeatable)")
    flags.add_tokenizer(p, help="the dataset's tokenizer (env PILEPREP_TOKENIZER)")
    flags.add_cluster(p)
    flags.add_work(p)


def _print_alignment(s: dict) -> None:
    if "pieces" in s:  # a preshuffled dataset's items, by their pieces
        total = sum(s["tokens"].values()) or 1
        for kind, n in s["pieces"].items():
            print(f"  {kind.replace('_', ' '):<14} {n:>12,} pieces  {s['tokens'][kind]:>15,} tokens "
                  f"({100 * s['tokens'][kind] / total:5.1f} %)")
        return
    docs, tokens = s["documents"], s["tokens"]
    total_docs, total_tokens = sum(docs.values()) or 1, sum(tokens.values()) or 1
    for kind in ("exact", "ambiguous", "none"):
        print(f"  {kind:<10} {docs[kind]:>12,} documents ({100 * docs[kind] / total_docs:5.1f} %)  "
              f"{tokens[kind]:>15,} tokens ({100 * tokens[kind] / total_tokens:5.1f} %)")
    for name, c in s["by_subset"].items():
        print(f"    {name or '(none)':<22} exact {c['exact']:,}, ambiguous {c['ambiguous']:,}"
              + (f", unmatched {c['none']:,}" if c["none"] else ""))
    print(f"  raw documents: {s['raw_documents']:,}, of which {s['raw_matched']:,} are in the dataset")
    if s.get("warning"):
        print(f"  {s['warning']}")


def cmd_adopt(args) -> int:
    from pileprep.jobs.adopt import adopt
    from pileprep.jobs.align import align

    if args.preshuffled and args.input:
        raise ConfigError("--input aligns documents by content; a preshuffled dataset's items "
                          "are samples: link them with pileprep compare instead")
    rep = adopt(args.dataset, args.output, args.name, args.hashes, args.index_maps,
                args.batch_size, args.copy, args.overwrite, args.quiet, args.preshuffled,
                args.seq_length)
    items = rep.get("preshuffled")
    if items:
        print(f"adopted {items['items']:,} training samples of {items['seq_length'] + 1} tokens "
              f"in training order ({items['items'] // items['batch_size']:,} steps of "
              f"{items['batch_size']}) into {args.output}; their documents are known once "
              "compared with the same data's index maps (pileprep compare)")
        return 0
    print(f"adopted {rep['documents']:,} documents, {rep['tokens']:,} tokens into {args.output}"
          + (f"; {len(rep['schedules'])} index map(s)" if rep["schedules"] else "")
          + ("" if args.input else "; sources unknown until raw text is aligned (pileprep align)"))
    if args.input:
        _print_alignment(align(args.output, flags.build_config(args, schedule=False)))
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="prove a preshuffled dataset's items are another "
                       "dataset's training samples (Pythia's preshuffled vs idxmaps data), and "
                       "link them: its samples then have documents and sources")
    p.add_argument("preshuffled", help="an adopted preshuffled dataset")
    p.add_argument("out_dir", help="a dataset with the schedule it was made from (adopted "
                   "with its index maps, or built)")
    flags.add_schedule(p, defaults_from_build=True)
    flags.add_cluster(p)
    p.add_argument("--quiet", "-q", action="store_true")


def cmd_compare(args) -> int:
    from pileprep.jobs.compare import compare

    cluster = flags.build_config(args, schedule=False).cluster
    r = compare(args.preshuffled, args.out_dir, cluster, args.quiet, flags.schedule_overrides(args))
    if r["equal"]:
        print(f"equal: all {r['items']:,} items of {args.preshuffled} are the training samples "
              f"of {args.out_dir}; linked (its samples' documents and sources are known)")
        return 0
    d, B = r["first_difference"], r["schedule"]["batch_size"]
    print(f"differ: item {d['item']:,} (step {d['item'] // B}, row {d['item'] % B}) differs from "
          f"the training sample at token {d['token']}; not linked")
    return 1


def _add_align(sub) -> None:
    p = sub.add_parser("align", help="recover an adopted dataset's sources by matching raw text "
                       "to its documents (any number of raw inputs, added over time)")
    p.add_argument("out_dir")
    _add_raw_flags(p, required=True)


def cmd_align(args) -> int:
    from pileprep.jobs.align import align

    summary = align(args.out_dir, flags.build_config(args, schedule=False))
    print(f"{args.out_dir}: provenance by content")
    _print_alignment(summary)
    return 0


def _add_exposures(sub) -> None:
    p = sub.add_parser("exposures", help="for every document: training samples holding its "
                       "tokens up to a step, share of its tokens seen, first and last step")
    p.add_argument("out_dir")
    p.add_argument("--until-step", type=int, help="count steps 0..K-1 (default: every step)")
    p.add_argument("--output", "-o", help="FILE.parquet: one row per document")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    flags.add_schedule(p, defaults_from_build=True)


def cmd_exposures(args) -> int:
    from pileprep.outputs.exposures import compute

    summary = compute(_order(args).for_documents(), args.until_step, args.output, quiet=args.quiet)
    for line in summary.lines():
        print(line)
    if summary.output:
        print(f"{summary.total.documents:,} documents -> {summary.output}")
    return 0


COMMANDS = {"build": cmd_build, "dedup": cmd_dedup, "verify": cmd_verify, "synth": cmd_synth, "schedule": cmd_schedule,
            "batch-at": cmd_batch_at, "where": cmd_where, "sequences": cmd_sequences,
            "seen": cmd_seen, "plot": cmd_plot, "export": cmd_export, "split": cmd_split,
            "shard": cmd_split, "join": cmd_join, "unshard": cmd_join, "adopt": cmd_adopt, "align": cmd_align,
            "exposures": cmd_exposures, "compare": cmd_compare, "index": cmd_index, "count": cmd_count,
            "contamination": cmd_contamination}


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line like every other error (``--help`` has the rest)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DESCRIPTION = ("pileprep rebuilds the Pile, or the deduplicated Pile, exactly as Pythia-style "
               "GPT-NeoX training consumed it, and tells which tokens, from which source "
               "documents, a model saw at any step.")
GROUPS = [
    ("make a dataset", ["build", "dedup", "adopt", "align", "compare", "schedule", "index",
                        "synth"]),
    ("ask what was trained", ["batch-at", "where", "seen", "count", "contamination",
                              "exposures", "export", "sequences", "plot"]),
    ("check and move files", ["verify", "split", "join"]),
]


def _epilog() -> str:
    lines = ["commands:"]
    for title, names in GROUPS:
        lines.append(f"  {title + ':':<22} {', '.join(names)}")
    lines.append("\n`pileprep COMMAND --help` tells more; docs/ has walkthroughs.")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pileprep", description=textwrap.fill(DESCRIPTION, 79), epilog=_epilog(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_build, _add_dedup, _add_adopt, _add_align, _add_compare, _add_schedule_cmd,
                _add_index,
                _add_synth, _add_batch_at, _add_where, _add_seen, _add_count, _add_contamination,
                _add_exposures,
                _add_export, _add_sequences, _add_plot, _add_verify, _add_split, _add_join):
        add(sub)  # in the order of GROUPS
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (PilePrepError, OSError) as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            if getattr(exc, "traceback", ""):  # a task's error: where it was raised, remotely
                print(exc.traceback, file=sys.stderr)
            raise
        if isinstance(exc, BrokenPipeError):
            # the reader went away (`| head`): stop quietly, as Unix tools do on SIGPIPE
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        print(f"pileprep {args.command}: {_one_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"pileprep {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, PilePrepError):
        return f"{exc.label}: " + flags.in_flag_words(" ".join(str(exc).split("\n")))
    where = f" {exc.filename}:" if getattr(exc, "filename", None) else ""
    return f"error:{where} {exc.strerror or exc}"


if __name__ == "__main__":
    sys.exit(main())
