"""The command line: a thin layer over the library. Work happens in the stage packages.

Every command runs inside one guard: a SimscopeError (a user mistake) prints ``Error: ...``
on stderr and exits 1 without a traceback. Results go to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, cast

import click

from simscope.checks import SEED_MAX
from simscope.errors import SimscopeError

# No hub access at run time: every model comes from disk or a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# simscope draws its own progress bars and logs; the libraries' notices and bars (weights
# loading and writing, config defaults) say nothing to its user.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _Command(click.Command):
    """A command whose text arguments must be UTF-8.

    Python decodes argument bytes that are not UTF-8 to lone surrogates (PEP 383), which
    nothing downstream can store, hash or tokenize: refuse them here, naming the option.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for param in self.params:
            values = ctx.params.get(param.name or "")
            for value in values if isinstance(values, tuple | list) else (values,):
                if isinstance(value, str) and not _encodable(value):
                    raise SimscopeError(_not_utf8_argument(param, value))
        return rest


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8_argument(param: click.Parameter, value: str) -> str:
    where = (
        max(param.opts, key=len) if isinstance(param, click.Option) else param.human_readable_name
    )
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:  # a surrogate no byte decodes to: passed in by a caller
        raw = value.encode("utf-8", "backslashreplace")
    fix = "use a UTF-8 file name" if isinstance(param.type, click.Path) else "pass it in UTF-8"
    return f"{where}: expected UTF-8 text, found {raw!r}, which is not UTF-8; {fix}"


class _UsageError(click.UsageError):
    exit_code = 1


class _Guarded(click.Group):
    """Every user mistake exits 1 with one ``Error:`` line: simscope's own, an unusable path,
    and click's usage errors (a bad option value, a missing file), which click exits 2 with."""

    command_class = _Command
    group_class = type  # subgroups are guarded too, and their commands checked

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            raise _UsageError(e.format_message(), e.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _UsageError(e.format_message(), e.ctx) from None
        except SimscopeError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # a path that cannot be read or written: the user's to fix
            raise click.ClickException(_os_error(e)) from None


class NamedPath(click.ParamType):
    """``NAME=PATH`` (or, with ``path_alone``, a bare PATH named by itself: a model id such as
    ``org/model`` or a path holding ``=`` after a ``/``) -> ``(name, path)``."""

    name = "NAME=PATH"

    def __init__(self, *, path_alone: bool = False) -> None:
        self.path_alone = path_alone

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        name, sep, path = str(value).partition("=")
        if self.path_alone and (not sep or "/" in name):
            name, path = value, value
        if not name or not path:
            option = param.opts[0] if param is not None else "value"
            expected = "NAME=PATH or PATH" if self.path_alone else "NAME=PATH"
            raise SimscopeError(f"{option}: expected {expected}, found {value!r}")
        return name, path


SEED = click.IntRange(0, SEED_MAX)
POSITIVE = click.IntRange(min=1)
Schema = Literal["auto", "pairs", "hh", "trl"]
SCHEMA = click.Choice(["auto", "pairs", "hh", "trl"])


def _os_error(e: OSError) -> str:
    """One line naming the path and what is wrong with it."""
    path = e.filename
    if not path:
        return str(e)
    if isinstance(e, FileExistsError | NotADirectoryError) and os.path.isfile(path):
        return f"{path}: is a file; expected a directory here (an output path under it?)"
    return f"{path}: {e.strerror or e}"


@click.group(cls=_Guarded)
@click.option("--quiet", is_flag=True, help="No progress lines; results and warnings only.")
@click.option("--verbose", is_flag=True, help="Also log what each stage decides and reuses.")
@click.version_option(package_name="simscope")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """simscope: which base model should your reward model start from?"""
    # By default: one progress line per stage and the result. The stages' log lines (what
    # was built, reused, skipped) are for --verbose; warnings always show.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,  # this invocation's stderr and level, also when called again in-process
    )
    logging.getLogger("simscope").setLevel(logging.NOTSET)
    if verbose:
        logging.getLogger("simscope").setLevel(logging.DEBUG)
    ctx.obj = {"progress": not quiet}
    if "transformers" in sys.modules and not verbose:  # imported before the variables above
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def progress_enabled(ctx: click.Context) -> bool:
    """Whether progress bars are on (``--quiet`` turns them off)."""
    return bool((ctx.obj or {}).get("progress", True))


# ---- commands are registered below, one block per stage -----------------------------------


# ---- probe: sample a model, import a corpus, score likelihoods ----------------------------


@cli.group()
def probe() -> None:
    """Probe corpora and likelihoods: sample a model, import a corpus, score texts."""


_DEVICE = click.Choice(["auto", "cpu", "cuda", "mps"])
_DTYPE = click.Choice(["auto", "float32", "bfloat16", "float16"])


@probe.command("generate")
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Parquet out.")
@click.option("--name", help="Model name in the corpus (default: MODEL as given).")
@click.option("--n-docs", default=1000, show_default=True, type=POSITIVE)
@click.option("--batch-size", default=16, show_default=True, type=POSITIVE)
@click.option("--max-new-tokens", default=256, show_default=True, type=POSITIVE)
@click.option("--temperature", default=1.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--prefix", "prefixes", multiple=True, help="A neutral prefix (repeatable).")
@click.option(
    "--unconditional/--no-unconditional",
    default=True,
    show_default=True,
    help="Also sample from the start token alone.",
)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--chunk-docs", default=256, show_default=True, type=POSITIVE, help="Resume unit.")
@click.option("--device", default="auto", show_default=True, type=_DEVICE)
@click.option("--dtype", default="auto", show_default=True, type=_DTYPE)
@click.option("--revision", help="Hub revision of a cached model id.")
@click.option("--trust-remote-code", is_flag=True, help="Run the model repo's own code.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.pass_context
def probe_generate(ctx: click.Context, model: str, out: str, **opts: Any) -> None:
    """Sample MODEL (a local directory or a cached hub id) into a ProbeCorpus parquet.

    An interrupted run resumes when rerun with the same settings.
    """
    from pathlib import Path

    from simscope.probe.generate import GenerationConfig, generate_corpus

    prefixes = ([""] if opts.pop("unconditional") else []) + list(opts.pop("prefixes"))
    if not prefixes:
        raise SimscopeError("probe generate: --no-unconditional needs at least one --prefix")
    keys = ("n_docs", "batch_size", "max_new_tokens", "temperature", "top_p", "seed")
    config = GenerationConfig(
        prefixes=tuple(prefixes),
        chunk_docs=opts.pop("chunk_docs"),
        **{k: opts.pop(k) for k in keys},
    )
    corpus = generate_corpus(model, Path(out), config, progress=progress_enabled(ctx), **opts)
    click.echo(f"wrote {corpus.height} documents of {model} to {out}")


@probe.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Parquet out.")
@click.option("--model", help="Model the corpus stands for (kept from a ProbeCorpus if unset).")
@click.option("--text-field", default="text", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "json", "csv", "parquet", "txt"]))
@click.option(
    "--txt-unit",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "paragraph", "line", "file"]),
    help="Documents of a text file (auto: paragraphs of a file, whole files in a directory).",
)
@click.option("--n-docs", type=POSITIVE, help="Keep a seeded uniform sample of this many.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--min-chars", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--max-chars", type=POSITIVE)
@click.option("--no-dedupe", is_flag=True, help="Keep exact duplicates.")
@click.option("--skip-bad", is_flag=True, help="Skip records without a string text; count them.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def probe_import(path: str, out: str, fmt: str | None, no_dedupe: bool, **opts: Any) -> None:
    """Import a corpus made elsewhere (JSONL/JSON/CSV/Parquet, .txt, directory) as a ProbeCorpus."""
    from pathlib import Path

    from simscope.probe.corpus import write_probe_corpus
    from simscope.probe.importer import import_corpus

    overwrite = opts.pop("overwrite")
    if Path(out).exists() and not overwrite:
        raise SimscopeError(f"{out}: already exists; remove it or pass --overwrite")
    result = import_corpus(Path(path), format=fmt, dedupe=not no_dedupe, **opts)
    write_probe_corpus(result.corpus, Path(out), result.metadata)
    s = result.stats
    click.echo(
        f"wrote {s.n_kept} documents to {out} (read {s.n_read}; dropped: bad {s.n_bad}, "
        f"empty {s.n_empty}, too short {s.n_too_short}, too long {s.n_too_long}, duplicates "
        f"{s.n_duplicates}, sampled out {s.n_sampled_out})"
    )


@probe.command("score")
@click.argument("prefs", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=NamedPath(path_alone=True),
    help="A model directory or cached hub id, optionally NAME=PATH (repeatable).",
)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Profile out.")
@click.option(
    "--reference",
    "references",
    multiple=True,
    type=NamedPath(),
    help="A reference corpus NAME=PATH (any input of `probe import`; repeatable).",
)
@click.option("--presence-out", type=click.Path(dir_okay=False), help="Presence table out.")
@click.option("--first-k", default=32, show_default=True, type=POSITIVE)
@click.option(
    "--max-tokens", type=POSITIVE, help="Tokens scored per text (default: context, ≤1024)."
)
@click.option("--batch-size", default=16, show_default=True, type=POSITIVE)
@click.option("--n-boot", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--no-agreement", is_flag=True, help="Skip the zero-shot preference signal.")
@click.option("--device", default="auto", show_default=True, type=_DEVICE)
@click.option("--dtype", default="auto", show_default=True, type=_DTYPE)
@click.option("--trust-remote-code", is_flag=True, help="Run the model repo's own code.")
@click.pass_context
def probe_score(
    ctx: click.Context,
    prefs: str,
    models: tuple[tuple[str, str], ...],
    out: str,
    references: tuple[tuple[str, str], ...],
    presence_out: str | None,
    **opts: Any,
) -> None:
    """Score preference data (PREFS: a PreferenceSet parquet or any file `simscope load` reads)
    with each model: likelihood.* Profile rows.

    With --reference corpora, also each model's presence distribution over them and the
    Jensen-Shannon distance between models.
    """
    from pathlib import Path

    import polars as pl

    from simscope.preferences import read_preferences_any
    from simscope.probe.likelihood import LikelihoodConfig
    from simscope.probe.score import score_models
    from simscope.storage import write_parquet

    if presence_out and not references:
        raise SimscopeError("--presence-out: needs at least one --reference corpus, found none")
    cfg = LikelihoodConfig(
        first_k_tokens=opts.pop("first_k"),
        max_tokens=opts.pop("max_tokens"),
        batch_size=opts.pop("batch_size"),
    )
    scores = score_models(
        read_preferences_any(Path(prefs), progress=progress_enabled(ctx)),
        models,
        cfg,
        references={name: Path(path) for name, path in references},
        agreement=not opts.pop("no_agreement"),
        progress=progress_enabled(ctx),
        **opts,
    )
    write_parquet(scores.profile, Path(out))
    if presence_out and scores.presence is not None:
        write_parquet(scores.presence, Path(presence_out))
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, fmt_str_lengths=40):
        click.echo(scores.profile.filter(pl.col("topic").is_null()).drop("topic"))
        if scores.presence is not None:
            click.echo(scores.presence.drop("text_bits_per_byte"))
        if scores.distances is not None:
            click.echo(scores.distances)


# ---- report: one self-contained HTML file from a run directory ----------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False), help="HTML out (default RUN_DIR/report.html)."
)
def report(run_dir: str, out: str | None) -> None:
    """Write the HTML report from a run's outputs (profile.parquet, selection.parquet, ...)."""
    from pathlib import Path

    from simscope.report import load_report_inputs, write_report

    target = Path(out) if out else Path(run_dir) / "report.html"
    click.echo(write_report(load_report_inputs(Path(run_dir)), target))


# ---- select: rank candidate base models by a cross-validated predictor --------------------


@cli.command()
@click.option(
    "--profile", type=click.Path(exists=True, dir_okay=False), help="Profile (parquet or CSV)."
)
@click.option(
    "--benchmarks",
    help="Benchmark table (CSV/parquet, long or wide) or a bundled name: open-llm-leaderboard-v2.",
)
@click.option(
    "--benchmark-model-column",
    default="model",
    show_default=True,
    help="Column with the model ids in the benchmark table, e.g. hf_id.",
)
@click.option(
    "--benchmark-columns",
    help="Comma-separated benchmark columns to use as features (default: every score column).",
)
@click.option(
    "--rm-results",
    type=click.Path(exists=True, dir_okay=False),
    help="Measured RM results: long (model,metric,score) or one column per metric; an optional "
    "family column.",
)
@click.option("--target", required=True, help="RM metric to predict, e.g. rewardbench_v2.")
@click.option(
    "--rm-model-column",
    default="model",
    show_default=True,
    help="Column with the base-model id in the RM table, e.g. base_model.",
)
@click.option("--rm-where", multiple=True, help="Keep RM rows with COLUMN=VALUE (repeatable).")
@click.option(
    "--rm-duplicates",
    default="error",
    show_default=True,
    type=click.Choice(["error", "mean", "max", "first"]),
    help="Repeated RM scores of a model: refuse, or combine.",
)
@click.option(
    "--benchmark-duplicates",
    default="error",
    show_default=True,
    type=click.Choice(["error", "mean", "max", "first"]),
    help="Repeated benchmark scores of a model (not marked duplicate_entry): refuse, or combine.",
)
@click.option(
    "--model-map",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with columns name,model: read each name (in every table and --candidate) as that "
    "model id.",
)
@click.option("--candidate", "candidates", multiple=True, help="A model to rank (repeatable).")
@click.option(
    "--candidates-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Models to rank: one id per line, or a CSV with model and optional family, cost, "
    "params_B, pretraining_tokens_T columns.",
)
@click.option("--all-models", is_flag=True, help="Rank every model of the feature tables.")
@click.option(
    "--prior",
    help="Published RM results as a prior: a bundled name (ahrabian2025-regression, "
    "rewardbench2-by-base, skywork-reward-v2) or a CSV (one row per base model).",
)
@click.option(
    "--prior-metric",
    help="The prior's metric to predict (default: --target if the "
    "prior has it, else its main metric).",
)
@click.option(
    "--prior-model-column",
    default="model",
    show_default=True,
    help="Column with the model ids in a prior CSV.",
)
@click.option(
    "--suggest",
    default=0,
    show_default=True,
    type=int,
    help="Name this many untried candidates to measure next (value of information).",
)
@click.option("--budget", type=float, help="Name the best candidate costing at most this.")
@click.option(
    "--costs",
    "costs_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with model,cost (your own costs, any unit) instead of the cost model.",
)
@click.option(
    "--train-tokens",
    type=float,
    help="Cost model: preference-data tokens x epochs to fine-tune on.",
)
@click.option(
    "--serve-tokens",
    type=float,
    help="Cost model: tokens the RM will score in service.",
)
@click.option(
    "--gpu-flops",
    type=float,
    help="Cost model: peak FLOP/s of one GPU (H100 dense BF16).",
)
@click.option(
    "--gpu-utilization",
    type=float,
    help="Cost model: share of the peak reached.",
)
@click.option(
    "--gpu-hour-usd",
    type=float,
    help="Cost model: dollars per GPU-hour.",
)
@click.option("--coverage", type=float, help="Interval level (default: the library's, 0.9).")
@click.option("--n-boot", type=click.IntRange(min=1), help="P(best) refits (default: 200).")
@click.option("--top", default=20, show_default=True, type=POSITIVE, help="Rows printed.")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Write Selection here.")
@click.option("--seed", default=0, show_default=True, type=SEED)
def select(benchmark_columns: str | None, **opts: Any) -> None:
    """Rank candidate base models for a reward model; print the ranking and the verdict.

    Options left out take the library's defaults (the same as a run config's [select]).
    """
    from simscope.select import CostConfig, SelectRequest, run_select

    columns = [c.strip() for c in (benchmark_columns or "").split(",") if c.strip()] or None
    knobs = ("train_tokens", "serve_tokens", "gpu_flops", "gpu_utilization", "gpu_hour_usd")
    given = {k: v for k in knobs if (v := opts.pop(k)) is not None}
    try:
        cost = CostConfig(**given)
    except SimscopeError as e:  # name the option, not the TOML key
        key = str(e).split(":", 1)[0].rsplit(".", 1)[-1]
        raise SimscopeError(str(e).replace(f"cost.{key}", "--" + key.replace("_", "-"))) from None
    settings = {k: v for k, v in opts.items() if v is not None or k not in ("coverage", "n_boot")}
    request = SelectRequest(benchmark_columns=columns, cost=cost, **settings)
    click.echo(run_select(request).text)


# ---- profile, run, demo: the pipeline ----------------------------------------------------


@cli.command()
@click.option("--prefs", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--schema", default="auto", show_default=True, type=SCHEMA)
@click.option("--skip-bad", is_flag=True, help="Skip bad preference records; count them.")
@click.option(
    "--corpus",
    "corpora",
    multiple=True,
    required=True,
    type=NamedPath(),
    help="A candidate's probe corpus: ProbeCorpus parquet, JSONL/CSV/parquet, .txt or folder.",
)
@click.option("--text-field", default="text", show_default=True)
@click.option("--indexes", default="indexes", show_default=True, type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Profile out.")
@click.option("--semantic/--no-semantic", default=True, show_default=True)
@click.option(
    "--engine",
    default="rensa",
    show_default=True,
    type=click.Choice(["rensa", "oph", "datasketch"]),
    help="MinHash engine.",
)
@click.option("--n-boot", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--rebuild", is_flag=True, help="Rebuild indexes that exist.")
@click.pass_context
def profile(
    ctx: click.Context,
    prefs: str,
    schema: str,
    skip_bad: bool,
    corpora: tuple[tuple[str, str], ...],
    text_field: str,
    indexes: str,
    out: str,
    semantic: bool,
    engine: str,
    n_boot: int,
    seed: int,
    rebuild: bool,
) -> None:
    """Profile probe corpora against preference data (lexical and semantic overlap)."""
    from pathlib import Path

    from simscope.config import CandidateSection, PreferencesSection, RunConfig, StagesSection
    from simscope.lexical.index import LexicalConfig
    from simscope.pipeline import profile_only

    cfg = RunConfig(
        preferences=PreferencesSection(Path(prefs), schema=cast(Schema, schema), skip_bad=skip_bad),
        candidates=tuple(
            CandidateSection(name, corpus=Path(path), text_field=text_field)
            for name, path in corpora
        ),
        seed=seed,
        indexes_dir=Path(indexes),
        n_boot=n_boot,
        stages=StagesSection(semantic=semantic, likelihood=False, topics=semantic),
        lexical=LexicalConfig(engine=engine),
    )
    table = profile_only(cfg, Path(out), rebuild=rebuild, progress=progress_enabled(ctx))
    click.echo(_profile_summary(table))


def _profile_summary(table: Any) -> str:
    import polars as pl

    whole = table.filter(pl.col("topic").is_null()).sort(["metric", "slice", "model"])
    lines = [f"{'metric':36} {'slice':9} {'model':24} {'value':>8}  95% CI"]
    for r in whole.iter_rows(named=True):
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"{r['metric']:36} {r['slice']:9} {r['model']:24} {r['value']:8.3f}  {ci}")
    return "\n".join(lines)


@cli.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--rebuild", is_flag=True, help="Rebuild indexes that exist.")
@click.pass_context
def run_cmd(ctx: click.Context, config: str, rebuild: bool) -> None:
    """Run the whole pipeline from one TOML config; write the run directory and report."""
    from pathlib import Path

    from simscope.config import load_run_config
    from simscope.pipeline import run

    result = run(load_run_config(Path(config)), rebuild=rebuild, progress=progress_enabled(ctx))
    _print_run(result)


@cli.command()
@click.option(
    "--dir",
    "work_dir",
    type=click.Path(file_okay=False),
    help="Work directory (default: $SIMSCOPE_DEMO_DIR or ./simscope-demo); reused as a cache.",
)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--rebuild", is_flag=True, help="Rebuild every index instead of reusing it.")
@click.pass_context
def demo(ctx: click.Context, work_dir: str | None, seed: int, rebuild: bool) -> None:
    """Run the whole pipeline on the bundled real data (tiny LMs trained on known mixtures)."""
    from pathlib import Path

    from simscope.examples.demo import default_work_dir, run_demo

    result = run_demo(
        Path(work_dir) if work_dir else default_work_dir(),
        seed=seed,
        rebuild=rebuild,
        progress=progress_enabled(ctx),
    )
    _print_run(result.run)
    if result.truth:
        click.echo("Held-out truth (measured after the run; the selection never saw it):")
        for name, r in result.truth.items():
            click.echo(
                f"  {name:28} RM accuracy {r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            )


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None or not (abs(low) < float("inf") and abs(high) < float("inf")):
        return "[interval unbounded: too few measured models]"
    return f"[{low:.3f}, {high:.3f}]"


def _print_run(result: Any) -> None:
    import polars as pl

    if result.selection is not None:
        if result.verdict:  # first: it says how far the ranking can be trusted
            click.echo(f"Verdict: {result.verdict}")
        click.echo("Ranking (predicted RM quality; observed where measured):")
        for r in result.selection.sort("rank").iter_rows(named=True):
            observed = "untried" if r["observed"] is None else f"observed {r['observed']:.3f}"
            click.echo(
                f"  {r['rank']:>2}. {r['model']:28} predicted {r['predicted']:.3f} "
                f"{_interval(r['pi_low'], r['pi_high'])}  P(best) {r['p_best']:.2f}  {observed}"
            )
    else:
        whole = result.profile.filter(pl.col("topic").is_null())
        click.echo(f"Profile: {whole.height} rows over {whole['model'].n_unique()} models")
    click.echo(f"Report: {result.report}")


# ---- load: preference files in, a PreferenceSet parquet out -------------------------------


@cli.command()
@click.argument("prefs", type=click.Path(dir_okay=False))
@click.option(
    "--schema",
    default="auto",
    show_default=True,
    type=SCHEMA,
    help="Record schema (auto: from the first record's fields).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "json", "parquet", "csv"]),
    help="Record format (default: from the file name).",
)
@click.option("--skip-bad", is_flag=True, help="Skip bad records and count them.")
@click.option(
    "--allow-empty/--no-allow-empty",
    default=None,
    help="Keep pairs with an empty response (default: only for hh, whose data has some).",
)
@click.option("--limit", type=POSITIVE, help="Stop after this many pairs.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="PreferenceSet parquet out.")
@click.pass_context
def load(
    ctx: click.Context, prefs: str, schema: str, fmt: str | None, out: str | None, **opts: Any
) -> None:
    """Load a preference file (JSONL, JSON, parquet, CSV; gzip or not); print a summary."""
    from pathlib import Path

    from simscope.preferences import (
        load_preferences,
        preference_metadata,
        summarize_preferences,
        write_preference_set,
    )

    result = load_preferences(
        Path(prefs), schema=schema, format=fmt, progress=progress_enabled(ctx), **opts
    )
    if out:
        write_preference_set(result.pairs, Path(out), preference_metadata(result, Path(prefs)))
    click.echo(summarize_preferences(result) + (f"; wrote {out}" if out else ""))


def main() -> None:
    """Console entry point."""
    cli(prog_name="simscope")


if __name__ == "__main__":
    main()
