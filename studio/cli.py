"""`python -m studio ...`: the command line. Every command reads the same JSON config as the UI.

Heavy libraries (torch, diffusers) are imported inside the handlers so that `--help`, config
errors and queue commands answer at once.
"""
from __future__ import annotations

import argparse
import sys

from studio.registry.families import ALL_FAMILIES

EXIT_CONFIG_ERROR = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="JSON config file (a preset or a saved job)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting; VALUE is parsed as JSON when it can be, else taken as a string",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="Training Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run one training job in the foreground")
    _add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (progress.jsonl is still written)")

    p = sub.add_parser("preprocess", help="scan the dataset and build or refresh its cache")
    _add_config_args(p)

    p = sub.add_parser("estimate", help="rank the model's layers by gradient norm on the data; writes "
                       "target_modules.json (top layers) into the run folder")
    _add_config_args(p)
    p.add_argument("--batches", type=int, default=4, help="batches to run forward and backward (default 4)")
    p.add_argument("--top-k", type=int, default=16, help="layers written to target_modules.json (default 16)")

    p = sub.add_parser("vram", help="estimate the job's GPU memory (weights, adapter, optimizer, activations) "
                       "and time per step before anything loads; exit 1 when it does not fit the GPU")
    _add_config_args(p)
    p.add_argument("--gpu-gb", type=float, default=None, help="plan for a GPU with this many GB (default: "
                   "memory.gpu_memory_gb, else the GPU found here)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")

    p = sub.add_parser("generate", help="try a run's adapter or checkpoint (adapter.init_from) on the config's "
                       "sample prompt; writes the result and how to reproduce it (Playground jobs)")
    _add_config_args(p)

    p = sub.add_parser("tiny-model", help="write a tiny random model folder (offline tests and demo)")
    p.add_argument("family", help=", ".join(ALL_FAMILIES))
    p.add_argument("out_dir")

    p = sub.add_parser("export", help="export a finished run's adapter")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["peft", "kohya", "dora_lora", "merged", "gguf"], default="peft",
                   help="gguf: a language model merged with its adapter, as one file for llama.cpp / Ollama")
    p.add_argument("--out", default=None, help="output path (default: inside the run folder)")
    p.add_argument("--gguf-type", default="f16", help="weight type of the GGUF file: f16 (default), bf16 or f32 "
                   "(no quantisation)")

    p = sub.add_parser("import-sidestep", help="convert a Side-Step preprocessed dataset folder (*.pt) into a "
                       "song cache, or a Side-Step checkpoint-epoch-N folder into an adapter folder")
    p.add_argument("src", help="Side-Step dataset folder or checkpoint-epoch-N folder")
    p.add_argument("out", help="folder to write: data.path or adapter.init_from of a new run")

    sub.add_parser("env", help="environment check: versions against the lock, devices, free disk")

    p = sub.add_parser("queue", help="the persistent job queue (add, list, run, stop, ...)")
    p.add_argument("queue_args", nargs=argparse.REMAINDER, help="queue sub-command and its arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from studio.config.errors import ConfigError

    try:
        if args.command in ("train", "preprocess", "estimate", "generate"):
            from studio.lockcheck import enforce

            enforce()  # drifted versions: a warning each; a known-bad set: exit 2 before any model loads
        if args.command == "train":
            from studio.commands.train import train_from_cli

            return train_from_cli(args.config, args.overrides, progress_bar=not args.no_progress)
        if args.command == "preprocess":
            from studio.commands.preprocess import preprocess_from_cli

            return preprocess_from_cli(args.config, args.overrides)
        if args.command == "estimate":
            from studio.commands.estimate import estimate_from_cli

            return estimate_from_cli(args.config, args.overrides, batches=args.batches, top_k=args.top_k)
        if args.command == "vram":
            from studio.commands.vram import vram_from_cli

            return vram_from_cli(args.config, args.overrides, gpu_gb=args.gpu_gb, as_json=args.json)
        if args.command == "generate":
            from studio.playground import generate_from_cli

            return generate_from_cli(args.config, args.overrides)
        if args.command == "tiny-model":
            from studio.families.tiny import TINY_FAMILIES, write_tiny_model

            if args.family not in TINY_FAMILIES:
                print(f"error: unknown family {args.family!r}; one of: {', '.join(TINY_FAMILIES)}", file=sys.stderr)
                return EXIT_CONFIG_ERROR
            path = write_tiny_model(args.family, args.out_dir)
            print(f"tiny {args.family} model written to {path}")
            return 0
        if args.command == "export":
            from studio.commands.export import export_from_cli

            return export_from_cli(args.run_dir, args.format, args.out, args.gguf_type)
        if args.command == "import-sidestep":
            from studio.commands.import_sidestep import import_from_cli

            return import_from_cli(args.src, args.out)
        if args.command == "env":
            from studio.envcheck import print_env

            return print_env()
        if args.command == "queue":
            from studio.queue.cli import main as queue_main

            return queue_main(args.queue_args)
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return 1
