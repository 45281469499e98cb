"""AWD-LSTM-style word language model (Merity, Keskar, Socher 2018) with a pluggable recurrent layer.

Regularisation, each a config field: locked (variational) dropout on the embeddings (``dropouti``),
between layers (``dropouth``) and on the output (``dropout``); embedding dropout that drops whole
words (``dropoute``); DropConnect on the hidden-to-hidden matrices (``wdrop``); tied input/output
embeddings; activation regularisation (AR, on the dropped last-layer output) and temporal AR (TAR,
on the raw one), returned for the runner to weight.

Every mask is sampled once per forward call, i.e. once per minibatch, and the same at every time step.

The recurrent layer is looked up by name in ``CELLS``: a layer is an ``nn.Module`` with
``forward(x [T, B, I], state) -> (y [T, B, H], state)``, ``init_state(batch, device)`` and
``detach_state(state)``; ``weight_drop`` is its DropConnect rate. A later model family registers its
own layers with ``register_cell``.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """One Bernoulli mask per (batch, unit), shared over time: x is [T, B, H]."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p).div_(1 - p)
    return x * mask


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole word types (rows of the embedding matrix) for this minibatch, rescaling the rest."""
    weight = embed.weight
    if training and p > 0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p).div_(1 - p)
        weight = weight * mask
    return F.embedding(words, weight)


class _FusedRNNLayer(nn.Module):
    """One layer of torch's fused LSTM/GRU with DropConnect on ``weight_hh_l0``.

    The dropped matrix is passed with ``torch.func.functional_call``: the old ``WeightDrop`` trick of
    deleting and re-assigning the parameter breaks on torch 2.x (and with cuDNN weight flattening).
    """

    rnn_cls: type[nn.RNNBase]

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0):
        super().__init__()
        self.rnn = self.rnn_cls(input_size, hidden_size)
        self.hidden_size, self.weight_drop = hidden_size, weight_drop

    def forward(self, x, state):
        if self.training and self.weight_drop > 0:
            w = F.dropout(self.rnn.weight_hh_l0, self.weight_drop, training=True)
            with warnings.catch_warnings():   # cuDNN: "weights are not part of single contiguous chunk"
                warnings.simplefilter("ignore", UserWarning)
                return functional_call(self.rnn, {"weight_hh_l0": w}, (x, state))
        return self.rnn(x, state)


class LSTMLayer(_FusedRNNLayer):
    rnn_cls = nn.LSTM

    def init_state(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(1, batch, self.hidden_size, device=device)
        return z, z.clone()

    @staticmethod
    def detach_state(state):
        return tuple(s.detach() for s in state)


class GRULayer(_FusedRNNLayer):
    rnn_cls = nn.GRU

    def init_state(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(1, batch, self.hidden_size, device=device)

    @staticmethod
    def detach_state(state):
        return state.detach()


CELLS: dict[str, type[nn.Module]] = {"lstm": LSTMLayer, "gru": GRULayer}


def register_cell(name: str, layer_cls: type[nn.Module]) -> None:
    CELLS[name] = layer_cls


class AWDLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, emb_size: int = 400, hidden_size: int = 1150, n_layers: int = 3,
                 cell: str = "lstm", dropout: float = 0.4, dropouth: float = 0.25, dropouti: float = 0.4,
                 dropoute: float = 0.1, wdrop: float = 0.5, tie_weights: bool = True, **cell_kwargs):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell '{cell}'; available: {', '.join(sorted(CELLS))}")
        self.encoder = nn.Embedding(vocab_size, emb_size)
        sizes = [emb_size] + [hidden_size] * (n_layers - 1) + [emb_size if tie_weights else hidden_size]
        self.layers = nn.ModuleList(CELLS[cell](sizes[i], sizes[i + 1], weight_drop=wdrop, **cell_kwargs)
                                    for i in range(n_layers))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch: int, device=None) -> list:
        device = device or self.encoder.weight.device
        return [layer.init_state(batch, device) for layer in self.layers]

    def detach_state(self, state: list) -> list:
        return [layer.detach_state(s) for layer, s in zip(self.layers, state)]

    def forward(self, words: torch.Tensor, state: list):
        """words [T, B] -> logits [T, B, V], new state, (raw, dropped) last-layer outputs for AR/TAR."""
        x = embedded_dropout(self.encoder, words, self.dropoute, self.training)
        x = locked_dropout(x, self.dropouti, self.training)
        new_state = []
        for i, layer in enumerate(self.layers):
            x, s = layer(x, state[i])
            new_state.append(s)
            raw = x
            x = locked_dropout(x, self.dropout if i == len(self.layers) - 1 else self.dropouth, self.training)
        return self.decoder(x), new_state, (raw, x)


def _register_reversible() -> None:
    from models.revrnn import RevGRULayer, RevLSTMLayer   # the reversible cells of MacKay et al. 2018

    register_cell("revgru", RevGRULayer)
    register_cell("revlstm", RevLSTMLayer)


_register_reversible()
