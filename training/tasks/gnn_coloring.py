"""gnn-coloring: a message-passing GNN that learns to color random graphs, in plain torch.

Data: Erdős–Rényi graphs with between ceil(nodes/2) and `nodes` nodes, padded to `nodes` and
batched as dense adjacency matrices (at these sizes a bmm is cheaper than scatter over edge
lists, and it exports to ONNX as one MatMul). Node features are a constant, the normalized
degree and a few random numbers: the random part is what lets identical-looking neighbours
break symmetry and take different colors.

Items are (features [N, F], adjacency [N, N], node_mask [N]); the model takes (features,
adjacency), and the node mask is the "target" because the loss is unsupervised: it only needs
to know which rows are real nodes.

Loss, per graph, then averaged over the batch (so validation can sum the same per-graph values):
  conflict  = expected fraction of edges whose endpoints share a color, sum_k p_ik p_jk
  chromatic = mean normalized color index, sum_k p_ik k/(K-1): pushes mass onto low colors, so
              a coloring that needs fewer colors is cheaper
  entropy   = mean normalized entropy of the node distributions: pushes to confident colors
  total     = conflict + 0.1 chromatic + 0.05 entropy
Components are reported unweighted so each keeps its own meaning (conflict is an edge fraction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.tasks.synthetic import SyntheticTask, item_generator

RANDOM_FEATURES = 8
IN_FEATURES = 2 + RANDOM_FEATURES  # constant 1, normalized degree, random
CHROMATIC_WEIGHT = 0.1
ENTROPY_WEIGHT = 0.05
class MessagePassingLayer(nn.Module):
    """h <- h + MLP([h, mean of neighbour h]); pre-norm so depth does not blow up the scale."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, adj: torch.Tensor, inv_degree: torch.Tensor) -> torch.Tensor:
        z = self.norm(h)
        neighbours = torch.bmm(adj, z) * inv_degree
        return h + self.update(torch.cat([z, neighbours], dim=-1))


class ColoringGNN(nn.Module):
    def __init__(self, hidden: int, layers: int, colors: int):
        super().__init__()
        self.embed = nn.Linear(IN_FEATURES, hidden)
        self.layers = nn.ModuleList(MessagePassingLayer(hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, colors)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """x [B, N, F], adj [B, N, N] -> color logits [B, N, colors]."""
        inv_degree = 1.0 / adj.sum(dim=-1, keepdim=True).clamp(min=1.0)
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, adj, inv_degree)
        return self.head(self.norm(h))


class GNNColoringTask(SyntheticTask):
    name = "gnn-coloring"
    uses_conv = False

    # -- data ---------------------------------------------------------------------------------

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = item_generator(self.seed, index)
        low = (self.nodes + 1) // 2
        n = int(torch.randint(low, self.nodes + 1, (1,), generator=g))
        upper = torch.rand(self.nodes, self.nodes, generator=g).triu(diagonal=1) > 1.0 - self.edge_prob
        mask = torch.zeros(self.nodes)
        mask[:n] = 1.0
        adj = upper.float() * mask[:, None] * mask[None, :]
        adj = adj + adj.T
        expected_degree = max(1.0, self.edge_prob * (self.nodes - 1))
        x = torch.cat([
            torch.ones(self.nodes, 1),
            adj.sum(dim=1, keepdim=True) / expected_degree,
            torch.randn(self.nodes, RANDOM_FEATURES, generator=g),
        ], dim=1) * mask[:, None]
        return x, adj, mask

    # -- model and losses ---------------------------------------------------------------------

    def model(self) -> nn.Module:
        return ColoringGNN(self.hidden, self.layers, self.colors)

    def _per_graph(self, logits: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        adj = adj.float()
        log_p = F.log_softmax(logits, dim=-1)
        p = log_p.exp() * mask[..., None]
        nodes = mask.sum(dim=1).clamp(min=1.0)
        same_color = torch.bmm(p, p.transpose(1, 2)) * adj
        conflict = same_color.sum(dim=(1, 2)) / adj.sum(dim=(1, 2)).clamp(min=1.0)
        color_rank = torch.arange(self.colors, device=logits.device, dtype=p.dtype) / (self.colors - 1)
        chromatic = (p * color_rank).sum(dim=(1, 2)) / nodes
        entropy = -(p * log_p).sum(dim=(1, 2)) / nodes / math.log(self.colors)
        total = conflict + CHROMATIC_WEIGHT * chromatic + ENTROPY_WEIGHT * entropy
        return {"total": total, "conflict": conflict, "chromatic": chromatic, "entropy": entropy}

    def loss(self, model, batch):
        x, adj, mask = batch
        parts = self._per_graph(model(x, adj), adj, mask)
        components = {f"loss/{k}": v.mean().detach() for k, v in parts.items() if k != "total"}
        return parts["total"].mean(), components

    def val_stats(self, model, batch):
        x, adj, mask = batch
        logits = model(x, adj)
        parts = self._per_graph(logits, adj, mask)
        color = logits.argmax(dim=-1)
        same = (color[:, :, None] == color[:, None, :]).float() * adj.float()
        used = (F.one_hot(color, self.colors).float() * mask[..., None]).amax(dim=1)
        return {
            "loss_sum": parts["total"].sum(),
            "conflict_sum": parts["conflict"].sum(),
            "graphs": torch.tensor(float(x.shape[0]), device=x.device),
            # adjacency is symmetric: both sums count every edge twice, the ratio is unaffected
            "conflict_edges": same.sum(),
            "edges": adj.float().sum(),
            "colors_used": used.sum(),
        }

    def val_metrics(self, totals):
        graphs = max(float(totals["graphs"]), 1.0)
        return {
            "val_loss": float(totals["loss_sum"]) / graphs,
            "val_conflict": float(totals["conflict_sum"]) / graphs,
            "val_conflict_rate": float(totals["conflict_edges"]) / max(float(totals["edges"]), 1.0),
            "val_colors_used": float(totals["colors_used"]) / graphs,
        }

    def example_input(self, batch_size: int = 1):
        return torch.zeros(batch_size, self.nodes, IN_FEATURES), torch.zeros(batch_size, self.nodes, self.nodes)


def build(options: dict, seed: int) -> GNNColoringTask:
    return GNNColoringTask(options, seed)
