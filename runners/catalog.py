"""What the experiments are and what they cost: ``python run.py --list`` and the notes a run prints at start.

Each ``conf/experiment/<name>.yaml`` carries an ``about`` block: the paper, one line of what it runs, its scale
(``cpu-small``: sized for a laptop CPU; ``paper-full``: the paper's budget), its cost on a 2-core CPU (measured,
or labelled an estimate) and, for a paper-full experiment, the name of its CPU-small variant.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

PAPER_ORDER = ["Fast weights", "ACKTR", "Reversible RNNs", "Lookahead", "Graph normalizing flows"]


def experiments(conf: Path) -> list[tuple[str, dict]]:
    out = []
    for f in sorted((conf / "experiment").glob("*.yaml")):
        about = OmegaConf.to_container(OmegaConf.load(f).get("about") or {})
        out.append((f.stem, about))
    return out


def print_list(conf: Path) -> None:
    """Every experiment grouped by paper: name, scale, what it runs, what it costs here."""
    import os
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `run.py --list | head` ends quietly
    os.environ.setdefault("COLUMNS", "120")
    width = max(shutil.get_terminal_size((120, 20)).columns, 80)
    rows = experiments(conf)
    papers = PAPER_ORDER + sorted({a.get("paper", "?") for _, a in rows} - set(PAPER_ORDER))
    name_w = max(len(n) for n, _ in rows) + 2
    for paper in papers:
        group = [(n, a) for n, a in rows if a.get("paper", "?") == paper]
        if not group:
            continue
        print(f"\n{paper}")
        for name, a in group:
            scale = a.get("scale", "?")
            text = f"{a.get('what', '')}. Cost: {a.get('cost', 'unknown')}"
            if a.get("small"):
                text += f". CPU-small variant: {a['small']}"
            lines = textwrap.wrap(text, width=max(width - name_w - 13, 40))
            print(f"  {name:<{name_w}}{scale:<11}{lines[0] if lines else ''}")
            for line in lines[1:]:
                print(f"  {'':<{name_w}}{'':<11}{line}")
    print("\nRun one: python run.py experiment=<name> [key=value ...]   (smoke=true: seconds-long check)")


def start_notes(cfg, conf: Path) -> list[str]:
    """Lines printed when a run starts: a paper-full configuration on a CPU says what it costs and names the
    CPU-small variant."""
    import torch

    about = cfg.get("about") or {}
    if about.get("scale") != "paper-full" or cfg.get("smoke"):
        return []
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if not on_cpu:
        return []
    line = f"note: {cfg.experiment_name} is the paper-full configuration ({about.get('cost', 'cost unknown')})"
    if about.get("small"):
        line += f"; on a CPU, experiment={about['small']} is the CPU-small variant"
    return [line]
