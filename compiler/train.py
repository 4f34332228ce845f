"""``specc train``: render the script, run it (the one training loop), then plot its loss curve."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .plot import plot_history
from .spec import Spec


def train_from_spec(spec: Spec, args: argparse.Namespace) -> int:
    from . import render_script

    out = Path(args.out or (spec.train.checkpoint.dir if spec.train and spec.train.checkpoint else f"runs/{spec.name}"))
    out.mkdir(parents=True, exist_ok=True)
    script = out / f"{spec.name}.py"
    script.write_text(render_script(spec), encoding="utf-8")
    command = [sys.executable, str(script), "--out", str(out)]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if args.device:
        command += ["--device", args.device]
    if args.resume:
        command += ["--resume", args.resume]
    print(f"running {' '.join(command)}", flush=True)
    env = dict(os.environ)
    code = subprocess.call(command, env=env)
    if code != 0:
        print(f"specc train: the script exited with status {code}", file=sys.stderr)
        return code
    metrics = out / "metrics.json"
    history = json.loads(metrics.read_text())["history"]
    png = out / "loss.png"
    plot_history(history, png, title=spec.name)
    print(f"checkpoint: {out / 'checkpoint.pt'}\nmetrics:    {metrics}\nloss plot:  {png}")
    return 0
