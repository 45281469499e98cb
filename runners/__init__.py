"""Runners own the training loops. ``get(name)`` returns a runner's ``train(cfg, run_dir, device,
project_root) -> summary dict``; modules are imported lazily so one paper's dependencies never slow
down another's start-up."""
import importlib

RUNNERS = {
    "retrieval": "runners.retrieval",
    "onpolicy": "runners.onpolicy",
    "continuous": "runners.continuous",
    "language_model": "runners.language_model",
    "classify": "runners.classify",
    "graph_generation": "runners.graph_generation",
    "node_classify": "runners.node_classify",
    "translate": "runners.translate",
}


def get(name: str):
    if name not in RUNNERS:
        from runners.core import UserError

        raise UserError(f"unknown runner '{name}'; available: {', '.join(sorted(RUNNERS))}")
    return importlib.import_module(RUNNERS[name]).train
