"""Graph generation with Graph Normalizing Flows (Liu et al. 2019, section 5), as the authors' code
(jliu/graph-normalizing-flows) where a CPU allows it. Two phases, one loop each, one checkpoint format:

1. auto-encoder: node features start as N(0, 1) (resampled every batch), ``model.encoder_steps`` shared-weight
   attention message-passing steps, each after a BatchNorm; the parameter-free decoder scores every pair i != j
   of a graph; loss = BCE summed over the pairs, mean over graphs; Adam with the authors' polynomial decay
   (power 0.5, to lr / 100). It trains until its pair accuracy on the training graphs reaches
   ``train.ae_target_acc`` (checked every epoch; logged with the incorrect edges per graph, the authors' metric)
   or ``train.ae_epochs`` runs out.
2. flow: the encoder is frozen; its encodings (fresh input noise every batch; the authors add no other noise,
   ``train.noise_std`` is an option) are modelled by GRevNet couplings on the complete graph, by maximum
   likelihood under an i.i.d. N(0, I) node prior.

Evaluation as GraphRNN's: ``eval.n_samples`` graphs per sampling seed (node counts drawn from the training
split), each cut to its largest connected component, every generated graph against every test graph (biased
MMD^2, runners/graph_mmd.py), with a bootstrap 95% interval over the generated graphs; the raw score (no cut)
beside it; the floor of a perfect generator (as many graphs resampled from the training split) under the same
rule; the auto-encoder's own reconstruction. Samples go to ``samples_seed<k>.jsonl`` in the run directory.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.gnf import FlowNumericalError, GraphEncoder, GraphFlow, decoder_logits
from runners.core import Checkpointer, Tracker, UserError, check_finite
from runners.graph_data import (Graph, adjacency_targets, check_graph, community_small, complete_edges, ego_small,
                                read_jsonl, split, to_batch, to_data, write_jsonl)
from runners.graph_mmd import (STATS, bootstrap_interval, descriptors, graph_mmd, kernel_blocks, largest_connected,
                                mmd2_from_blocks, polygraph_mmd)



def load_graphs(dc, project_root: Path) -> list[Graph]:
    def path(p):
        p = Path(p)
        return p if p.is_absolute() else project_root / p

    if dc.path:
        graphs = read_jsonl(path(dc.path), dc.max_nodes)
    elif dc.name == "community_small":
        graphs = community_small(dc.n_graphs, dc.seed)
    elif dc.name == "ego_small":
        graphs = ego_small(path(dc.root) / "planetoid", path(dc.cache) / "planetoid", dc.n_graphs, dc.seed, dc.download,
                           verify=dc.verify_md5)
    else:
        raise UserError(f"unknown graph set '{dc.name}' (community_small | ego_small, or data.path=<file.jsonl>)")
    return [check_graph(g, dc.max_nodes, f"graph {i}") for i, g in enumerate(graphs)]


def encode(encoder, batch, noise_std: float = 0.0):
    h = encoder(batch.edge_index, batch.num_nodes, batch=batch.batch)
    return h + noise_std * torch.randn_like(h) if noise_std else h


def ae_loss(encoder, batch, temperature: float):
    h = encode(encoder, batch)
    pairs = complete_edges(batch.batch)
    logits = decoder_logits(h, pairs, temperature)
    target = adjacency_targets(batch, pairs)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / batch.num_graphs
    acc = ((logits > 0).float() == target).float().mean()
    return loss, acc


def decode_graphs(h: torch.Tensor, sizes: list[int], temperature: float) -> list[Graph]:
    graphs, start = [], 0
    for n in sizes:
        x = h[start:start + n]
        iu = torch.triu_indices(n, n, 1, device=h.device)
        keep = decoder_logits(x, iu, temperature) > 0          # sigmoid > 0.5
        graphs.append(Graph.make(n, iu[:, keep].T.cpu().numpy()))
        start += n
    return graphs


@torch.no_grad()
def sample(flow, sizes: list[int], dim: int, temperature: float, device, batch_nodes: int = 4096,
           self_edges: bool = False) -> list[Graph]:
    out, i = [], 0
    while i < len(sizes):
        j, total = i, 0
        while j < len(sizes) and (total + sizes[j] <= batch_nodes or j == i):
            total += sizes[j]
            j += 1
        b = torch.repeat_interleave(torch.arange(j - i, device=device), torch.tensor(sizes[i:j], device=device))
        z = torch.randn(total, dim, device=device)
        out += decode_graphs(flow.inverse(z, complete_edges(b, self_edges)), sizes[i:j], temperature)
        i = j
    return out


def sample_sizes(rule: str, train_sizes: list[int], n: int, seed_index: int, rng: np.random.Generator,
                 batch: int = 32) -> list[int]:
    """Node counts of the ``n`` graphs sampled with the ``seed_index``-th sampling seed.

    ``random``: drawn uniformly from the training graphs' sizes. ``authors``: as the authors'
    generate_graphs.py, batches of ``batch`` graphs that all take the size of one training graph, the
    training graphs in split order (batch i: training graph i), each sampling seed going on where the
    previous one stopped, cycling through the split."""
    if rule == "random":
        return rng.choice(np.asarray(train_sizes), size=n).tolist()
    if rule == "authors":
        first = seed_index * n
        return [train_sizes[((first + i) // batch) % len(train_sizes)] for i in range(n)]
    raise ValueError(f"unknown size rule {rule!r}")   # the config check refuses it before training


@torch.no_grad()
def reconstruct(encoder, graphs: list[Graph], temperature: float, device) -> list[Graph]:
    b = to_batch(graphs, device, self_loops=True)
    return decode_graphs(encode(encoder, b), [g.num_nodes for g in graphs], temperature)


def poly_lr(lr0: float, step: int, total: int, power: float = 0.5, end_frac: float = 0.01) -> float:
    """tf.train.polynomial_decay to lr0 * end_frac over ``total`` steps (the authors' auto-encoder schedule)."""
    frac = min(step, total) / max(total, 1)
    return (lr0 - lr0 * end_frac) * (1 - frac) ** power + lr0 * end_frac


@torch.no_grad()
def ae_accuracy(encoder, items: list, temperature: float, device, chunk: int = 64) -> tuple[float, float]:
    """(pair accuracy, incorrect edges per graph) on the given graphs, fresh input noise."""
    right = total = wrong_edges = 0.0
    for i in range(0, len(items), chunk):
        b = to_batch(items[i:i + chunk], device)
        pairs = complete_edges(b.batch)
        wrong = ((decoder_logits(encode(encoder, b), pairs, temperature) > 0).float() != adjacency_targets(b, pairs))
        right += float((~wrong).sum())
        total += wrong.numel()
        wrong_edges += float(wrong.sum()) / 2            # each unordered pair counted twice
    return right / total, wrong_edges / len(items)


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc, mc = cfg.train, cfg.model
    graphs = load_graphs(cfg.data, project_root)
    train_g, test_g = split(graphs, cfg.data.train_frac)
    if not train_g or not test_g:
        raise UserError(f"need graphs in both splits; got {len(train_g)} train / {len(test_g)} test")
    mlp = dict(mlp_layers=mc.mlp_layers, mlp_hidden=mc.mlp_hidden)
    try:   # the models' own checks (an even dim for the couplings, heads dividing hidden) as one line
        encoder = GraphEncoder(mc.dim, mc.encoder_steps, mc.hidden, mc.heads, mc.center, mc.residual,
                               mc.batch_norm, **mlp).to(device)
        flow = GraphFlow(mc.dim, mc.flow_blocks, mc.hidden, mc.flow_heads or mc.heads, mc.scale_bound, mc.actnorm,
                         mc.separate_st, mc.identity_init, **mlp).to(device)
    except ValueError as e:
        raise UserError(f"model: {e}") from None
    opt_ae = torch.optim.Adam(encoder.parameters(), lr=tc.ae_lr)
    opt_flow = torch.optim.Adam(flow.parameters(), lr=tc.flow_lr)

    bs = tc.batch_size
    steps_per_epoch = math.ceil(len(train_g) / bs)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, batch_i, step, wandb_id, flow_start = 0, 0, 0, None, None   # flow_start: the epoch the flow began
    state = ckpt.resume_state(cfg.resume, device)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        flow.load_state_dict(state["flow"])
        opt_ae.load_state_dict(state["opt_ae"])
        opt_flow.load_state_dict(state["opt_flow"])
        epoch, batch_i, step, wandb_id = state["epoch"], state["batch"], state["step"], state["wandb_id"]
        flow_start = state["flow_start"]
    total_steps = (tc.ae_epochs + tc.flow_epochs) * steps_per_epoch
    tracker = Tracker(cfg, run_dir, total_steps=total_steps, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"encoder": encoder.state_dict(), "flow": flow.state_dict(), "opt_ae": opt_ae.state_dict(),
                "opt_flow": opt_flow.state_dict(), "epoch": epoch, "batch": batch_i, "step": step,
                "flow_start": flow_start, "wandb_id": tracker.wandb_id}

    failed = True
    ae_acc = ae_wrong = float("nan")
    try:
        with ckpt:
            train_items = [to_data(g, self_loops=True) for g in train_g]   # converted once, batched per step
            zero = torch.zeros((), device=device)
            t0, loss_sum, acc_sum, n_log = time.perf_counter(), zero, zero, 0
            while flow_start is None or epoch < flow_start + tc.flow_epochs:
                phase = "ae" if flow_start is None else "flow"
                encoder.train(phase == "ae")
                flow.train(phase == "flow")
                order = torch.randperm(len(train_g), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
                for i in range(batch_i, steps_per_epoch):
                    b = to_batch([train_items[j] for j in order[i * bs:(i + 1) * bs].tolist()], device)
                    if phase == "ae":
                        for g in opt_ae.param_groups:
                            g["lr"] = poly_lr(tc.ae_lr, step, tc.ae_epochs * steps_per_epoch) if tc.ae_lr_decay else tc.ae_lr
                        loss, acc = ae_loss(encoder, b, mc.temperature)
                        opt = opt_ae
                    else:
                        with torch.no_grad():
                            h = encode(encoder, b, tc.noise_std)
                        try:
                            lp = flow.log_prob(h, complete_edges(b.batch, mc.flow_self_edges), b.batch, b.num_graphs)
                        except FlowNumericalError as e:
                            raise UserError(f"step {step + 1}: {e}; {ckpt.describe()}") from None
                        loss = -lp.sum() / b.num_nodes          # NLL per node (nats)
                        acc = loss.new_zeros(())
                        opt = opt_flow
                    check_finite(loss, step + 1, ckpt)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tc.clip:
                        torch.nn.utils.clip_grad_norm_(encoder.parameters() if phase == "ae" else flow.parameters(), tc.clip)
                    opt.step()
                    batch_i, step = i + 1, step + 1
                    loss_sum = loss_sum + loss.detach()
                    acc_sum = acc_sum + acc.detach()
                    n_log += 1
                    if step % tc.log_every == 0:
                        loss_mean = loss_sum.item() / n_log
                        row = {f"{phase}/loss": loss_mean, "epoch": epoch + batch_i / steps_per_epoch,
                               "perf/graphs_per_s": n_log * bs / max(time.perf_counter() - t0, 1e-9)}
                        if phase == "ae":
                            row["ae/pair_acc"] = acc_sum.item() / n_log
                            row["ae/lr"] = opt_ae.param_groups[0]["lr"]
                        else:
                            row["flow/nll_per_dim"] = loss_mean / mc.dim
                        tracker.log(row, step)
                        t0, loss_sum, acc_sum, n_log = time.perf_counter(), zero, zero, 0
                    ckpt.after_step(snapshot, step)
                    tracker.advance(step)
                epoch, batch_i = epoch + 1, 0
                if phase == "ae":   # the authors' stopping signal: edges the auto-encoder still gets wrong
                    encoder.eval()
                    ae_acc, ae_wrong = ae_accuracy(encoder, train_items, mc.temperature, device)
                    tracker.log({"ae/train_pair_acc": ae_acc, "ae/incorrect_edges_per_graph": ae_wrong,
                                 "epoch": epoch}, step)
                    if ae_acc >= tc.ae_target_acc or epoch >= tc.ae_epochs:
                        flow_start = epoch
                ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)

        encoder.eval()
        flow.eval()
        if math.isnan(ae_acc):
            ae_acc, ae_wrong = ae_accuracy(encoder, train_items, mc.temperature, device)
        summary = evaluate(cfg, encoder, flow, train_g, test_g, run_dir, device)
        tracker.log({k: v for k, v in summary.items() if isinstance(v, (int, float))}, step)
        summary.update({"train/steps": step, "train/epochs": epoch, "train/ae_epochs_used": flow_start,
                        "ae/train_pair_acc": ae_acc, "ae/incorrect_edges_per_graph": ae_wrong,
                        "seed": cfg.seed, "dataset": cfg.data.name,
                        "data_path": cfg.data.path, "n_train": len(train_g), "n_test": len(test_g),
                        "n_params_encoder": sum(p.numel() for p in encoder.parameters()),
                        "n_params_flow": sum(p.numel() for p in flow.parameters()), "device": str(device)})
        out = tracker.write_summary(summary)
        failed = False
        return out
    finally:
        tracker.close(failed=failed)


def scores(prefix: str, test_d: dict, graphs: list[Graph], boot_seed: int, n_boot: int) -> dict:
    """GraphRNN's three MMD^2 (every graph against every test graph) with bootstrap 95% intervals."""
    blocks = kernel_blocks(test_d, descriptors(graphs))
    out = {}
    for k in STATS:
        out[f"{prefix}/{k}"] = mmd2_from_blocks(*blocks[k])
        out[f"{prefix}/{k}_ci95"] = list(bootstrap_interval(blocks[k], n_boot, boot_seed))
    return out


def evaluate(cfg, encoder, flow, train_g, test_g, run_dir: Path, device) -> dict:
    mc, ec = cfg.model, cfg.eval
    out: dict = {}
    test_d = descriptors(test_g)
    # a perfect generator: graphs resampled from the training split, scored by the same rule
    rng = np.random.default_rng(12345)
    perfect = [train_g[i] for i in rng.integers(0, len(train_g), ec.n_samples * len(ec.seeds))]
    out.update(scores("floor", test_d, [largest_connected(g) for g in perfect], 0, ec.n_boot))
    torch.manual_seed(cfg.seed)
    out.update({f"recon/{k}": v for k, v in graph_mmd(test_g, [largest_connected(g) for g in
                                                               reconstruct(encoder, test_g, mc.temperature, device)]).items()})
    b = to_batch(test_g, device, self_loops=True)
    with torch.no_grad():
        pairs = complete_edges(b.batch)
        logits = decoder_logits(encode(encoder, b), pairs, mc.temperature)
        out["ae/test_pair_acc"] = ((logits > 0).float() == adjacency_targets(b, pairs)).float().mean().item()
        h = encode(encoder, b, cfg.train.noise_std)
        try:
            lp = flow.log_prob(h, complete_edges(b.batch, mc.flow_self_edges), b.batch, b.num_graphs)
        except FlowNumericalError as e:
            raise UserError(f"evaluation: {e}") from None
        out["flow/test_nll_per_dim"] = -lp.sum().item() / b.num_nodes / mc.dim
    train_sizes = [g.num_nodes for g in train_g]
    pool, per_seed = [], {k: [] for k in STATS}
    for j, s in enumerate(ec.seeds):
        rng = np.random.default_rng(s)
        torch.manual_seed(s)
        sizes = sample_sizes(ec.size_rule, train_sizes, ec.n_samples, j, rng)
        try:
            samples = sample(flow, sizes, mc.dim, mc.temperature, device, self_edges=mc.flow_self_edges)
        except FlowNumericalError as e:
            raise UserError(f"sampling (seed {s}): {e}") from None
        write_jsonl(run_dir / f"samples_seed{s}.jsonl", samples)
        for k, v in graph_mmd(test_g, [largest_connected(g) for g in samples]).items():
            per_seed[k].append(v)
        pool += samples
    lcc = [largest_connected(g) for g in pool]
    out.update(scores("mmd", test_d, lcc, 1, ec.n_boot))
    out.update({f"mmd_raw/{k}": v for k, v in graph_mmd(test_g, [g.without_self_loops() for g in pool]).items()})
    if ec.polygraph:   # a second opinion from a maintained evaluator, on the same largest components
        try:
            import polygraph  # noqa: F401
        except ImportError:
            raise UserError("eval.polygraph=true needs polygraph-benchmark (make install); eval.polygraph=false "
                            "skips the second opinion") from None
        out.update(polygraph_mmd(test_g, lcc))
    for k in STATS:
        out[f"mmd/{k}_per_seed"] = per_seed[k]
    out["mmd/sum"] = sum(out[f"mmd/{k}"] for k in STATS)
    out["samples/n"] = len(pool)
    out["samples/mean_edges"] = float(np.mean([len(g.edges) for g in pool]))
    out["samples/isolated_node_frac"] = float(np.mean(np.concatenate(
        [g.without_self_loops().adjacency().sum(1) == 0 for g in pool])))
    out["samples/lcc_node_frac"] = float(sum(g.num_nodes for g in lcc) / sum(g.num_nodes for g in pool))
    out["test/mean_edges"] = float(np.mean([len(g.without_self_loops().edges) for g in test_g]))
    out["eval/seeds"] = list(ec.seeds)
    out["eval/size_rule"] = ec.size_rule
    return out
