"""Spike-count losses, so that training code needs no snnTorch at run time.

:func:`ce_count_loss` computes exactly what ``snntorch.functional.ce_count_loss()`` computes
(snnTorch 0.9.x / 1.0.x): spikes ``[T, B, C]`` are summed over time into counts ``[B, C]``,
which are the logits of a cross-entropy (``log_softmax`` then ``nll_loss``) against integer
targets ``[B]``. Same options, same operation order, so values and gradients agree with
snnTorch's to the last bit.
"""
import torch
import torch.nn.functional as F

__all__ = ["ce_count_loss", "CECountLoss"]


class CECountLoss:
    """Cross entropy on spike counts; see :func:`ce_count_loss`."""

    __name__ = "ce_count_loss"

    def __init__(self, population_code=False, num_classes=False, reduction="mean", weight=None):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if population_code and not num_classes:
            raise ValueError("num_classes must be given when population_code=True")
        self.population_code = population_code
        self.num_classes = num_classes
        self.reduction = reduction
        self.weight = weight

    def counts(self, spk_out):
        """Spike counts ``[B, C]`` (classes summed over their population when population_code)."""
        if not self.population_code:
            return torch.sum(spk_out, 0)
        num_outputs = spk_out.size(-1)
        if num_outputs % self.num_classes:
            raise ValueError(f"num_outputs {num_outputs} must be a multiple of num_classes "
                             f"{self.num_classes}")
        per = num_outputs // self.num_classes
        # snnTorch fills a float32 tensor with spk[:, :, block].sum(-1).sum(0), block by block
        grouped = spk_out.reshape(*spk_out.shape[:-1], self.num_classes, per)
        return grouped.sum(-1).sum(0).to(torch.float32)

    def __call__(self, spk_out, targets):
        if spk_out.dim() < 2:
            raise ValueError(f"spk_out must be [T, B, C], got shape {tuple(spk_out.shape)}")
        log_p_y = F.log_softmax(self.counts(spk_out), dim=-1)
        # like snnTorch: with class weights, reduce 'none' first and then take a plain mean
        delayed = self.weight is not None
        loss = F.nll_loss(log_p_y, targets, weight=self.weight,
                          reduction="none" if delayed else self.reduction)
        if delayed and self.reduction == "mean":
            loss = loss.mean()
        return loss

    def __repr__(self):
        opts = []
        if self.population_code:
            opts.append(f"population_code=True, num_classes={self.num_classes}")
        if self.reduction != "mean":
            opts.append(f"reduction={self.reduction!r}")
        if self.weight is not None:
            opts.append("weight=...")
        return f"fastlif.losses.ce_count_loss({', '.join(opts)})"


def ce_count_loss(population_code=False, num_classes=False, reduction="mean", weight=None):
    """Cross-entropy spike-count loss, equal to ``snntorch.functional.ce_count_loss(...)``.

    ``loss_fn = ce_count_loss(); loss = loss_fn(spk_out, targets)`` with ``spk_out`` of shape
    ``[T, B, C]`` and integer ``targets`` ``[B]``. With ``population_code=True`` the ``C``
    outputs are split into ``num_classes`` equal consecutive blocks whose counts are summed.
    As in snnTorch, with class ``weight`` and ``reduction="mean"`` the result is the plain
    mean of the weighted per-sample losses (not divided by the sum of weights).
    """
    return CECountLoss(population_code, num_classes, reduction, weight)
