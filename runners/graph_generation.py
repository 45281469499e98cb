"""Graph generation with Graph Normalizing Flows (Liu et al. 2019, section 5).

Two phases, one loop each, one checkpoint format:

1. auto-encoder: node features start as N(0, 1) (resampled every batch), ``model.encoder_steps``
   shared-weight attention message-passing steps over the edges plus self-loops; the parameter-free
   decoder scores every pair i != j of a graph; loss = BCE summed over the pairs, mean over graphs.
2. flow: the encoder is frozen; its encodings (fresh input noise every batch) plus N(0, noise_std^2)
   are modelled by GRevNet couplings on the complete graph, by maximum likelihood under an i.i.d.
   N(0, I) node prior.

Sampling draws N from the training node-count distribution, z ~ N(0, I), runs the inverse flow and
thresholds the decoder at 0.5. Evaluation is GraphRNN's (runners/graph_mmd.py) against the test split,
for several sampling seeds, with the train-vs-test noise floor and the auto-encoder's own reconstruction
MMD (the best the flow can reach) beside it. Samples go to ``samples_seed<k>.jsonl`` in the run directory.
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
from runners.graph_mmd import graph_mmd, match_sizes

STATS = ("degree", "clustering", "orbit")


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
def sample(flow, sizes: list[int], dim: int, temperature: float, device, batch_nodes: int = 4096) -> list[Graph]:
    out, i = [], 0
    while i < len(sizes):
        j, total = i, 0
        while j < len(sizes) and (total + sizes[j] <= batch_nodes or j == i):
            total += sizes[j]
            j += 1
        b = torch.repeat_interleave(torch.arange(j - i, device=device), torch.tensor(sizes[i:j], device=device))
        z = torch.randn(total, dim, device=device)
        out += decode_graphs(flow.inverse(z, complete_edges(b)), sizes[i:j], temperature)
        i = j
    return out


@torch.no_grad()
def reconstruct(encoder, graphs: list[Graph], temperature: float, device) -> list[Graph]:
    b = to_batch(graphs, device, self_loops=True)
    return decode_graphs(encode(encoder, b), [g.num_nodes for g in graphs], temperature)


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc, mc = cfg.train, cfg.model
    graphs = load_graphs(cfg.data, project_root)
    train_g, test_g = split(graphs, cfg.data.train_frac)
    if not train_g or not test_g:
        raise UserError(f"need graphs in both splits; got {len(train_g)} train / {len(test_g)} test")
    encoder = GraphEncoder(mc.dim, mc.encoder_steps, mc.hidden, mc.heads, mc.center).to(device)
    flow = GraphFlow(mc.dim, mc.flow_blocks, mc.hidden, mc.heads, mc.scale_bound, mc.actnorm).to(device)
    opt_ae = torch.optim.Adam(encoder.parameters(), lr=tc.ae_lr)
    opt_flow = torch.optim.Adam(flow.parameters(), lr=tc.flow_lr)

    bs = tc.batch_size
    steps_per_epoch = math.ceil(len(train_g) / bs)
    total_steps = (tc.ae_epochs + tc.flow_epochs) * steps_per_epoch
    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, batch_i, step, wandb_id = 0, 0, 0, None
    state = ckpt.resume_state(cfg.resume, device)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        flow.load_state_dict(state["flow"])
        opt_ae.load_state_dict(state["opt_ae"])
        opt_flow.load_state_dict(state["opt_flow"])
        epoch, batch_i, step, wandb_id = state["epoch"], state["batch"], state["step"], state["wandb_id"]
    tracker = Tracker(cfg, run_dir, total_steps=total_steps, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"encoder": encoder.state_dict(), "flow": flow.state_dict(), "opt_ae": opt_ae.state_dict(),
                "opt_flow": opt_flow.state_dict(), "epoch": epoch, "batch": batch_i, "step": step,
                "wandb_id": tracker.wandb_id}

    failed = True
    try:
        with ckpt:
            train_items = [to_data(g, self_loops=True) for g in train_g]   # converted once, batched per step
            zero = torch.zeros((), device=device)
            t0, loss_sum, acc_sum, n_log = time.perf_counter(), zero, zero, 0
            while epoch < tc.ae_epochs + tc.flow_epochs:
                phase = "ae" if epoch < tc.ae_epochs else "flow"
                encoder.train(phase == "ae")
                flow.train(phase == "flow")
                order = torch.randperm(len(train_g), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
                for i in range(batch_i, steps_per_epoch):
                    b = to_batch([train_items[j] for j in order[i * bs:(i + 1) * bs].tolist()], device)
                    if phase == "ae":
                        loss, acc = ae_loss(encoder, b, mc.temperature)
                        opt = opt_ae
                    else:
                        with torch.no_grad():
                            h = encode(encoder, b, tc.noise_std)
                        try:
                            lp = flow.log_prob(h, complete_edges(b.batch), b.batch, b.num_graphs)
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
                        else:
                            row["flow/nll_per_dim"] = loss_mean / mc.dim
                        tracker.log(row, step)
                        t0, loss_sum, acc_sum, n_log = time.perf_counter(), zero, zero, 0
                    ckpt.after_step(snapshot, step)
                    tracker.advance(step)
                epoch, batch_i = epoch + 1, 0
                ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)

        encoder.eval()
        flow.eval()
        summary = evaluate(cfg, encoder, flow, train_g, test_g, run_dir, device)
        tracker.log({k: v for k, v in summary.items() if isinstance(v, (int, float))}, step)
        summary.update({"train/steps": step, "train/epochs": epoch, "seed": cfg.seed, "dataset": cfg.data.name,
                        "data_path": cfg.data.path, "n_train": len(train_g), "n_test": len(test_g),
                        "n_params_encoder": sum(p.numel() for p in encoder.parameters()),
                        "n_params_flow": sum(p.numel() for p in flow.parameters()), "device": str(device)})
        out = tracker.write_summary(summary)
        failed = False
        return out
    finally:
        tracker.close(failed=failed)


def evaluate(cfg, encoder, flow, train_g, test_g, run_dir: Path, device) -> dict:
    mc, ec = cfg.model, cfg.eval
    out: dict = {}
    floor = graph_mmd(test_g, train_g)
    torch.manual_seed(cfg.seed)
    recon = graph_mmd(test_g, reconstruct(encoder, test_g, mc.temperature, device))
    b = to_batch(test_g, device, self_loops=True)
    with torch.no_grad():
        pairs = complete_edges(b.batch)
        logits = decoder_logits(encode(encoder, b), pairs, mc.temperature)
        out["ae/test_pair_acc"] = ((logits > 0).float() == adjacency_targets(b, pairs)).float().mean().item()
        h = encode(encoder, b, cfg.train.noise_std)
        try:
            lp = flow.log_prob(h, pairs, b.batch, b.num_graphs)
        except FlowNumericalError as e:
            raise UserError(f"evaluation: {e}") from None
        out["flow/test_nll_per_dim"] = -lp.sum().item() / b.num_nodes / mc.dim
    train_sizes = np.array([g.num_nodes for g in train_g])
    per_seed = {k: [] for k in STATS}
    for s in ec.seeds:
        rng = np.random.default_rng(s)
        torch.manual_seed(s)
        sizes = rng.choice(train_sizes, size=ec.n_samples).tolist()
        try:
            samples = sample(flow, sizes, mc.dim, mc.temperature, device)
        except FlowNumericalError as e:
            raise UserError(f"sampling (seed {s}): {e}") from None
        write_jsonl(run_dir / f"samples_seed{s}.jsonl", samples)
        pred = match_sizes(test_g, samples) if ec.match_sizes else samples[:len(test_g)]
        for k, v in graph_mmd(test_g, pred).items():
            per_seed[k].append(v)
        out.setdefault("samples/mean_edges", []).append(float(np.mean([len(g.edges) for g in samples])))
    out["samples/mean_edges"] = float(np.mean(out["samples/mean_edges"]))
    out["test/mean_edges"] = float(np.mean([len(g.without_self_loops().edges) for g in test_g]))
    for k in STATS:
        out[f"mmd/{k}"] = float(np.mean(per_seed[k]))
        out[f"mmd/{k}_std"] = float(np.std(per_seed[k]))
        out[f"mmd/{k}_per_seed"] = per_seed[k]
        out[f"floor/{k}"] = floor[k]
        out[f"recon/{k}"] = recon[k]
    out["mmd/sum"] = sum(out[f"mmd/{k}"] for k in STATS)
    out["eval/seeds"] = list(ec.seeds)
    return out
