"""`python -m studio import-sidestep SRC OUT`: a Side-Step preprocessed dataset folder becomes a song cache
(`data.path=OUT`), a Side-Step `checkpoint-epoch-N` folder an adapter folder (`adapter.init_from=OUT`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def import_from_cli(src: str, out: str) -> int:
    from studio.families.sidestep_import import (ImportProblem, convert_checkpoint, convert_dataset,
                                                 is_sidestep_checkpoint)

    folder = Path(src).expanduser()
    if not folder.is_dir():
        print(f"error: {src}: not a folder (a Side-Step dataset folder or checkpoint-epoch-N)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if is_sidestep_checkpoint(folder):
            record = convert_checkpoint(folder, Path(out))
            print(f"adapter written to {out}: train with adapter.init_from={out} and these adapter settings:\n"
                  f"{json.dumps({'adapter': record['adapter']}, indent=2)}\n{record['note']}")
        else:
            keys = convert_dataset(folder, Path(out))
            print(f"{len(keys)} songs converted into {out}: train with data.path={out} (model.family=acestep)")
    except ImportProblem as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
