"""``raybm train | tune | runs | sample | eval | data``: parse, call, print.

Bad input ends with one line on stderr (``raybm: error: <file or key>: <what>``) and exit
code 2 (3 for diverged training); ``--debug`` or ``RAYBM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from raybm.errors import InputError, Interrupted, RaybmError
from raybm.interrupts import sigterm_as_interrupt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raybm", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (default: F&F-10 with labels on digits)")
    t.add_argument("config", nargs="?", help="YAML config (see docs/config.md)")
    _add_set(t, "override a config key, e.g. --set algorithm.k=20 (repeatable)")
    t.add_argument("--out", help="run directory (default: runs/<run name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--workers", type=int, help="same as --set distributed.workers=N")
    t.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///$PWD/mlflow.db)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--address", help="join this Ray cluster (host:port, auto, ray://...) "
                   "instead of starting a local Ray; default: $RAY_ADDRESS")

    u = sub.add_parser("tune", help="a hyperparameter sweep on Ray Tune (see docs/tune.md)")
    u.add_argument("space", nargs="?", help="search-space file (see tune_spaces/)")
    _add_set(u, "override a key of the base config, e.g. --set train.n_updates=500")
    u.add_argument("--out", help="sweep directory (default: sweeps/<name>-<time>)")
    u.add_argument("--resume", metavar="SWEEP_DIR", help="finish an interrupted sweep")
    u.add_argument("--tracking-uri", help="MLflow tracking URI (a server for real sweeps)")
    u.add_argument("--top", type=int, default=10, help="best trials in the final table")
    u.add_argument("--address", help="join this Ray cluster (host:port, auto, ray://...) "
                   "instead of starting a local Ray; default: $RAY_ADDRESS")

    r = sub.add_parser("runs", help="the best MLflow runs (or a sweep's trials) as a table")
    r.add_argument("--experiment", default="raybm", help="MLflow experiment (default: raybm)")
    r.add_argument("--sweep", metavar="PARENT_RUN_ID", help="only this sweep's trials")
    r.add_argument("--metric", help="rank by this metric (default: the sweep's, or "
                   "test_accuracy)")
    r.add_argument("--mode", choices=["max", "min"], help="max or min (default: the sweep's, "
                   "or max)")
    r.add_argument("--top", type=int, default=10, help="how many runs")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///$PWD/mlflow.db)")

    s = sub.add_parser("sample", help="generate samples from a trained run")
    s.add_argument("run", help="run directory or checkpoint")
    s.add_argument("--n", type=int, default=100, help="number of samples")
    s.add_argument("--from", dest="source", default="auto",
                   choices=["auto", "exact", "walkers", "chains", "flow"],
                   help="exact draws of the model, the run's walkers (resampled by their "
                   "weights), or chains of the run's kernel from its start; auto: the first "
                   "of these the run has (chains when --k or --label is given); flow: draws "
                   "of a FlowMC-EBM run's flow alone (fast, approximate)")
    s.add_argument("--k", type=int, help="kernel steps per chain (implies --from chains; "
                   "default: the run's k for F&F runs, else train.eval_k_long)")
    s.add_argument("--label", type=int, help="clamp this label in the chains (models with a "
                   "label unit)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output file: .npz, .parquet or .png")

    e = sub.add_parser("eval", help="evaluate a trained run on its data")
    e.add_argument("run", help="run directory or checkpoint")
    e.add_argument("--out", help="where the pictures of a continuous run go (images: "
                   "samples.png, chains.png, data.png; 2-D: density.png); default RUN/eval")
    _add_set(e, "override a config key for evaluation, e.g. data.path=...")

    d = sub.add_parser("data", help="data set tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    i = dsub.add_parser("inspect", help="print shape, alphabet and label counts; validate")
    i.add_argument("file")
    i.add_argument("--labels", help="IDX labels file for IDX images")
    i.add_argument("--panel", help="1000 Genomes panel for .hapt files")
    i.add_argument("--alphabet", help="protein | rna | explicit letters, for alignments")
    i.add_argument("--threshold", type=float, help="binarisation threshold for images")
    i.add_argument("--format", help="a data.format when the name and content do not tell "
                   "it, e.g. floats (a .parquet, or an .npz of whole numbers, as floats) or "
                   "mnist (IDX images as floats)")
    return p


def _add_set(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=what)


def _positive(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise InputError(name, "", f"must be > 0, got {value}")


def _join(address: str | None) -> None:
    """``--address``: the cluster to join, handed on as Ray's own ``RAY_ADDRESS`` (so that a
    job's driver, a trial and ``ray.init`` all agree)."""
    if address is not None:
        if not address.strip():
            raise InputError("--address", "", "is empty (host:port, auto or ray://host:port)")
        os.environ["RAY_ADDRESS"] = address.strip()


def cmd_train(args: argparse.Namespace) -> int:
    from raybm.config import load_config
    from raybm.run import train_run

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"distributed.workers={args.workers}")
    if args.tracking_uri:
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if args.no_progress:
        overrides.append("train.progress=false")
    _join(args.address)

    def say(message: str) -> None:
        print(f"raybm: {message}", file=sys.stderr, flush=True)

    if args.resume:
        # The run's own config.yaml is what continues: a second config or another run
        # directory would be silently ignored, so they are refused.
        if args.config:
            raise InputError(args.config, "", "cannot be given with --resume (the run's "
                             "config.yaml continues; change keys with --set)")
        if args.out:
            raise InputError("--out", "", "cannot be given with --resume (the run continues "
                             "in its own directory)")
        summary = train_run(resume=args.resume, overrides=overrides, say=say)
    else:
        config = load_config(args.config, overrides, use_default=True)
        summary = train_run(config, out=args.out, say=say)
    _print_summary(summary)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from raybm.tuning.sweep import print_summary, tune_sweep

    _positive(args.top, "--top")
    overrides = list(args.overrides)
    if args.tracking_uri:
        if args.resume:
            raise InputError("--tracking-uri", "", "cannot be given with --resume (the sweep "
                             "continues in the store it was tracked in)")
        overrides.append(f"tracking.uri={args.tracking_uri}")
    _join(args.address)

    def say(message: str) -> None:
        print(f"raybm: {message}", file=sys.stderr, flush=True)

    summary = tune_sweep(args.space, overrides, out=args.out, resume=args.resume, say=say)
    print_summary(summary, top=args.top)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from raybm.tracking import check_store, get_run_tags, resolve_uri, search_runs
    from raybm.tuning.progress import run_status, text_table

    _positive(args.top, "--top")
    uri = resolve_uri(args.tracking_uri)
    check_store(uri, existing=True)  # a missing store is an error, not a new empty one
    metric, mode, searched = args.metric, args.mode, []
    if args.sweep:
        tags = get_run_tags(uri, args.sweep)
        metric = metric or tags.get("raybm.metric")
        mode = mode or tags.get("raybm.mode")
        searched = [k for k in tags.get("raybm.searched", "").split(",") if k]
    metric, mode = metric or "test_accuracy", mode or "max"
    runs = search_runs(uri, args.experiment, args.sweep, metric, mode, args.top)
    if not runs:
        print(f"no run with metric {metric} in experiment {args.experiment}"
              + (f", sweep {args.sweep}" if args.sweep else ""))
        return 0
    keys = searched or ["algorithm.name", "algorithm.k", "optimizer.lr"]
    head = ["run", "name", "status", metric] + keys
    # The sweep table's status words, not MLflow's: a trial ASHA stopped early is a FINISHED
    # MLflow run, but "stopped" in the sweep's own table.
    rows = [[r["run_id"][:8], (r["name"] or "")[:40], run_status(r["status"], r["tags"]),
             f"{r['metrics'][metric]:.4g}"] + [r["params"].get(k, "") for k in keys]
            for r in runs]
    print(text_table(head, rows))
    return 0


def _print_summary(summary) -> None:
    from raybm.console import headline

    m = summary.metrics
    print(f"\nrun directory : {summary.run_dir}")
    print(f"time          : {summary.seconds:.1f} s")
    for key in sorted(m):
        if key.startswith(("test_accuracy", "aai", "spectrum_error", "entropy_ratio",
                           "test_loglik", "copy_rate", "mode_weight",
                           "log_z")):
            print(f"{key:32s}: {m[key]:.4f}")
    # What training logged last that the evaluation did not give (the losses, ESS, step
    # size: all an image run has at its end).
    last = headline({k: v for k, v in summary.last_logged.items() if k not in m})
    for key, value in last.items():
        print(f"{key + ' (last logged)':32s}: {value:.4g}")
    if summary.run_id:
        print(f"MLflow run id : {summary.run_id}")
        print(f"browse with   : {summary.ui_command}")


def cmd_sample(args: argparse.Namespace) -> int:
    from raybm.models.rbm import RBM
    from raybm.run import load_run
    from raybm.sampling import draw_run

    _positive(args.n, "--n")
    _positive(args.k, "--k")
    config, ckpt = load_run(args.run)
    model = ckpt.model
    if args.label is not None and not (0 <= args.label < max(model.n_labels, 0)):
        raise InputError("--label", "", f"must be in 0..{model.n_labels - 1} "
                         f"(this model has {model.n_labels} labels)" if model.n_labels
                         else "this model has no label unit")
    out = Path(args.out)
    if out.suffix not in (".npz", ".parquet", ".png"):
        raise InputError(out, "", "output must end in .npz, .parquet or .png")
    if out.suffix == ".png" and not isinstance(model, RBM):
        _continuous_picture_fits(out, model)
    check_output_file(out, "--out")
    if args.seed < 0 or args.seed > 2**31 - 1:
        raise InputError("--seed", "", f"must be in 0..{2**31 - 1}, got {args.seed}")
    drawn = draw_run(config, ckpt, args.n, source=args.source, k=args.k, label=args.label,
                     seed=args.seed)
    x, label = drawn.x, drawn.label
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    try:
        if out.suffix == ".png" and not isinstance(model, RBM):
            _continuous_picture(tmp, x, model, config)
        else:
            _write_samples(out, tmp, x, label, model)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temp file behind
    print(f"wrote {args.n} samples to {out}: {drawn.how}")
    return 0


def check_output_file(out: Path, flag: str) -> None:
    """An output file's path can be written: not a directory, no file where a folder must be."""
    from raybm.run import check_parents

    if out.is_dir():
        raise InputError(flag, str(out), "is a directory, not a file")
    if not out.exists():  # an existing file is replaced
        check_parents(out, flag)


def _continuous_picture_fits(out: Path, model) -> None:
    """A picture of continuous samples exists for 2-D walkers (over the model's density) and
    square images (a grid); anything else is a one-line error before any sampling."""
    from raybm.data.dataset import grey_image_side

    shape = model.event_shape
    if shape != (2,) and grey_image_side(shape) is None:
        raise InputError(out, "", f"samples of shape {shape} are neither 2-D points nor "
                         "square images: write .npz or .parquet")


def _continuous_picture(tmp: Path, x, model, config) -> None:
    """2-D samples over the model's density and log-density with the training data; images
    as a grid (grey levels over the sampler's box, or the samples' range)."""
    from raybm.data.dataset import grey_image_side
    from raybm.metrics.plots import density_plot, sample_grid

    if model.event_shape == (2,):
        from raybm.metrics.continuous import grid_extent, grid_log_density
        from raybm.data.load import load_data

        train, _ = load_data(config)
        extent = grid_extent(train)
        log_density, _, _ = grid_log_density(model, extent)
        density_plot(log_density.numpy(), extent, train.x.numpy(), tmp, x.numpy())
        return
    side = grey_image_side(model.event_shape)  # checked by _continuous_picture_fits
    box = config.sampler.box  # continuous models are sampled by ULA / MALA (config checks)
    value_range = tuple(box) if box else (float(x.min()), float(x.max()))
    sample_grid(x.reshape(len(x), -1), (side, side), tmp, ncol=10, value_range=value_range)


def _write_samples(out: Path, tmp: Path, x, label, model) -> None:
    import numpy as np

    if out.suffix == ".npz":
        arrays = {"x": x.numpy()} | ({"labels": label.numpy()} if label is not None else {})
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    elif out.suffix == ".parquet":
        import pyarrow.parquet as pq

        from raybm.checkpoint import walkers_to_table
        from raybm.walkers import WalkerState

        pq.write_table(walkers_to_table(WalkerState.unweighted(x, label)), tmp)
    else:
        from raybm.data.dataset import grey_image_side
        from raybm.metrics.plots import sample_grid

        side = grey_image_side((model.n_visible,))
        if side is None:
            raise InputError(out, "", f"{model.n_visible} visibles are not a square image")
        sample_grid(x, (side, side), tmp, ncol=10)


def cmd_eval(args: argparse.Namespace) -> int:
    from raybm.checkpoint import find_checkpoint
    from raybm.config import config_from
    from raybm.evaluate import evaluate
    from raybm.models.rbm import RBM
    from raybm.run import load_run
    from raybm.data.load import load_data

    config, ckpt = load_run(args.run)
    if args.overrides:
        config = config_from(config.model_dump(), str(args.run),
                             list(args.overrides))
    train, test = load_data(config)
    m = ckpt.model
    if train.event_shape != tuple(m.event_shape):
        raise InputError(config.data.path or "data", "data.path", f"has samples of shape "
                         f"{train.event_shape}; the model takes {tuple(m.event_shape)}")
    if isinstance(m, RBM) and train.n_states != m.n_states:
        raise InputError(config.data.path or "data", "data.path", f"has {train.n_states} "
                         f"states per unit; the model has {m.n_states}")
    # A continuous run's pictures (images, 2-D energies), checked before any work: to --out,
    # or beside the run (RUN/eval) when that can be written.
    from raybm.evaluate import continuous_artifacts, has_pictures
    from raybm.run import check_parents, run_dir_of

    drawn = train.continuous and has_pictures(m)
    pictures = None
    if args.out is not None:
        if not drawn:
            raise InputError("--out", args.out, "this run has no pictures to write (they are "
                             "drawn for images and 2-D energies)")
        pictures = Path(args.out)
        check_parents(pictures.resolve(), "--out")
    elif drawn:
        pictures = run_dir_of(find_checkpoint(args.run)) / "eval"
        try:
            check_parents(pictures, "--out")
        except InputError:
            print(f"raybm: not writing pictures: {pictures.parent} cannot be written (pass "
                  "--out DIR)", file=sys.stderr)
            pictures = None
    metrics = evaluate(m, train, test, config)
    # Frozen chains from the run's walkers; a flow's importance-sampling read of the energy
    from raybm.evaluate import chain_metrics

    metrics |= chain_metrics(config, ckpt, train, metrics)
    print(json.dumps({"step": ckpt.step, **metrics}, indent=2))
    if pictures is not None:
        written = continuous_artifacts(m, train, config, pictures, ckpt)
        print(f"wrote {', '.join(sorted(p.name for p in written))} to {pictures}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from raybm.data.inspect import inspect

    kwargs = {}
    if args.labels:
        kwargs["labels_path"] = args.labels
    if args.panel:
        kwargs["panel_path"] = args.panel
    if args.alphabet:
        kwargs["alphabet"] = args.alphabet
    if args.threshold is not None:
        kwargs["threshold"] = args.threshold
    if args.format:
        kwargs["format"] = args.format
    if not Path(args.file).exists():
        raise InputError(args.file, "", "file not found")
    print(inspect(args.file, **kwargs))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("RAYBM_DEBUG") == "1"
    handler = {"train": cmd_train, "tune": cmd_tune, "runs": cmd_runs, "sample": cmd_sample,
               "eval": cmd_eval, "data": cmd_data}
    sigterm_as_interrupt()
    try:
        return handler[args.command](args)
    except KeyboardInterrupt:
        print("raybm: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except Interrupted as err:
        print(f"raybm: {err}", file=sys.stderr)
        return err.exit_code
    except RaybmError as err:
        if debug:
            raise
        print(f"raybm: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
