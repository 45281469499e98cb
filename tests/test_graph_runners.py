"""The GNF runners end to end: interrupted generation runs resume to the same result, bad graph files and
non-invertible flow states are one clear line, and the memory benchmark shows GRevNet's reversible
backprop flat in the number of message-passing steps while the GNN grows."""
import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import ROOT, run_cli
from sigterm import sigterm_then_resume
from test_cli import QUIET, one_error_line

GEN = ["experiment=gnf_community_small", "data.n_graphs=40", "model.dim=4", "model.hidden=8", "model.heads=2",
       "model.mlp_hidden=8",
       "model.encoder_steps=2", "model.flow_blocks=2", "train.ae_epochs=3", "train.flow_epochs=3",
       "train.batch_size=8", "train.log_every=1", "eval.n_samples=8", "eval.seeds=[0]", "checkpoint.every=5",
       "eval.polygraph=false"]   # polygraph costs ~50 s per process; its path is checked in test_graph_mmd and a smoke run


def test_generation_sigterm_resume_matches_uninterrupted(tmp_path):
    full, resumed, _ = sigterm_then_resume(tmp_path, [*GEN, *QUIET], total_key="train/steps", min_lines=6)
    for k in ("mmd/degree", "mmd/clustering", "mmd/orbit", "flow/test_nll_per_dim", "ae/test_pair_acc"):
        assert resumed[k] == full[k], k
    assert (tmp_path / "cut" / "samples_seed0.jsonl").read_text() == (tmp_path / "full" / "samples_seed0.jsonl").read_text()


@pytest.mark.parametrize("line,message", [
    ({"num_nodes": 0, "edges": []}, "empty graph (num_nodes=0)"),
    ({"num_nodes": 300, "edges": [[0, 1]]}, "300 nodes, over the size limit data.max_nodes=100"),
])
def test_bad_graph_file_is_one_line(tmp_path, line, message):
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"num_nodes": 3, "edges": [[0, 1]]}) + "\n" + json.dumps(line) + "\n")
    err = one_error_line(run_cli("experiment=gnf_community_small", f"data.path={f}", f"hydra.run.dir={tmp_path}/r", *QUIET))
    assert message in err and "g.jsonl:2" in err


def test_non_invertible_flow_state_is_a_user_error(tmp_path):
    from models.gnf import GraphEncoder, GraphFlow
    from runners.core import UserError
    from runners.graph_data import community_small, split
    from runners.graph_generation import evaluate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=gnf_community_small", "model.dim=4", "model.hidden=8",
                                           "model.heads=2", "eval.n_samples=4", "eval.seeds=[0]"])
    train_g, test_g = split(community_small(20, 0))
    enc, flow = GraphEncoder(4, 2, 8, 2), GraphFlow(4, 2, 8, 2)
    with torch.no_grad():
        flow.layers[1].F[0].mlp[-1].bias.fill_(float("nan"))
    with pytest.raises(UserError, match="not invertible"):
        evaluate(cfg, enc.eval(), flow.eval(), train_g, test_g, tmp_path, torch.device("cpu"))


def test_memory_benchmark_grevnet_flat_gnn_linear(tmp_path):
    out = tmp_path / "mem.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gnf_memory.py"), "--steps", "1,6", "--dim", "16",
                    "--hidden", "16", "--heads", "2", "--repeats", "1", "--nodes", "800", "--features", "64",
                    "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    growth = json.loads(out.read_text())["growth_mib_per_step"]
    assert growth["gnn"] > 0.5 and growth["grevnet_autograd"] > 0.5
    assert growth["grevnet_reversible"] < 0.1 * growth["gnn"]


def _authors_sizes(train_n_nodes, number_to_generate, batch_size=32):
    """The authors' generate_graphs.py loop, transcribed: batch i holds batch_size graphs of training graph i's size."""
    n_node_all, n_nodes_ind = [], 0
    for _ in range(number_to_generate):
        n_node_all += [train_n_nodes[n_nodes_ind]] * batch_size
        n_nodes_ind += 1
    return n_node_all


def test_sample_sizes_authors_rule_is_generate_graphs_loop():
    import numpy as np
    from runners.graph_generation import sample_sizes

    train = [12, 15, 20, 11, 18, 13, 17, 16, 19, 14]   # distinct, so a wrong index or order shows
    rng = np.random.default_rng(0)
    assert sample_sizes("authors", train * 6, 50 * 32, 0, rng) == _authors_sizes(train * 6, 50)
    # later sampling seeds go on where the previous one stopped, cycling through the split
    assert sample_sizes("authors", train, 64, 0, rng) == _authors_sizes(train, 2)
    assert sample_sizes("authors", train, 64, 1, rng) == _authors_sizes(train, 4)[64:]
    assert sample_sizes("authors", train, 96, 3, rng) == _authors_sizes(train * 2, 12)[288:]
    assert sample_sizes("authors", train, 40, 0, rng) == _authors_sizes(train, 2)[:40]


def test_sample_sizes_random_rule_draws_from_the_training_sizes():
    import numpy as np
    from runners.graph_generation import sample_sizes

    train = [12, 15, 20, 11]
    got = sample_sizes("random", train, 4000, 0, np.random.default_rng(7))
    assert got == np.random.default_rng(7).choice(train, size=4000).tolist()
    counts = np.bincount([train.index(n) for n in got], minlength=4) / 4000
    assert np.abs(counts - 0.25).max() < 0.03
    with pytest.raises(ValueError):
        sample_sizes("test", train, 4, 0, np.random.default_rng(0))


@pytest.mark.parametrize("flow_heads,self_edges", [(1, True), (None, False)])
def test_flow_heads_and_self_edges_reach_every_flow_call(tmp_path, monkeypatch, flow_heads, self_edges):
    """model.flow_heads builds the flow's attention, and model.flow_self_edges decides the flow's graph in training,
    the test NLL and sampling alike (the decoder's pairs never have self-edges)."""
    import runners.graph_generation as gg
    from models.gnf import GraphFlow

    seen = {"heads": [], "fwd": [], "inv": []}

    class Recorded(GraphFlow):
        def __init__(self, dim, n_blocks, hidden, heads, *a, **k):
            seen["heads"].append(heads)
            super().__init__(dim, n_blocks, hidden, heads, *a, **k)

        def forward(self, x, edge_index):
            seen["fwd"].append(bool((edge_index[0] == edge_index[1]).any()))
            return super().forward(x, edge_index)

        def inverse(self, z, edge_index):
            seen["inv"].append(bool((edge_index[0] == edge_index[1]).any()))
            return super().inverse(z, edge_index)

    monkeypatch.setattr(gg, "GraphFlow", Recorded)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*GEN, "train.ae_epochs=1", "train.flow_epochs=1", "eval.n_samples=4",
                                           "logger.mode=disabled", "logger.progress=false",
                                           f"model.flow_heads={'null' if flow_heads is None else flow_heads}",
                                           f"model.flow_self_edges={str(self_edges).lower()}"])
    gg.train(cfg, tmp_path, torch.device("cpu"), ROOT)
    assert seen["heads"] == [flow_heads or 2]
    assert len(seen["fwd"]) >= 2 and len(seen["inv"]) >= 1   # training steps + the test NLL; sampling
    assert set(seen["fwd"]) == {self_edges} and set(seen["inv"]) == {self_edges}
