"""Held-out loss with fixed noise and timesteps (comparable from one evaluation to the next), and
early stopping on it (FIELDS §11)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch


@torch.no_grad()
def evaluate(t) -> dict:
    """Mean eval loss; the generator is re-seeded each time so every evaluation sees the same noise."""
    from studio.train.ranks import sum_over_ranks
    from studio.train.speed import attention_kernel

    module = t.family.trainable_module()
    module.eval()
    gen = torch.Generator().manual_seed(t.cfg.training.seed + 1)
    attention = attention_kernel(t.cfg)  # the SDPA kernel the training steps use
    total, count = 0.0, 0
    for batch in t.eval_loader:  # this rank's slice of each eval batch
        with t.accelerator.autocast(), attention():
            loss = t.family.loss(batch, gen)
        n = t.family.loss_weight(batch)  # items, or the LM's labelled tokens
        total, count = total + float(loss) * n, count + n
    module.train()
    total, count = sum_over_ranks(t.accelerator, torch.tensor([total, float(count)], dtype=torch.float64)).tolist()
    mean = total / max(1, count)
    metrics = {"eval_loss": round(mean, 6)}
    metrics.update(t.family.eval_metrics(mean))
    return metrics


def clip_score(t, scorer, step: int) -> float:
    """Mean CLIP score of the sample prompts' images, rendered as samples are (seeds, steps, guidance,
    EMA weights) with the weights of this step."""
    from studio.sampling import sampling_weights

    prompts = t.cfg.sampling.prompts
    with sampling_weights(t):
        samples = t.family.sample(prompts, step)
    return scorer.mean_score([s.data for s in samples], [p.prompt for p in prompts])


class EarlyStopper:
    """Counts evaluations without an improvement larger than the threshold."""

    def __init__(self, cfg_eval, run_dir: Path):
        self.patience, self.threshold = cfg_eval.early_stopping_patience, cfg_eval.early_stopping_threshold
        self.run_dir = Path(run_dir)
        self.best: float = math.inf
        self.bad_evals = 0
        self.best_path: Path | None = None

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def update(self, loss: float, step: int) -> bool:
        if loss < self.best - self.threshold:
            self.best, self.bad_evals = loss, 0
            return True
        self.bad_evals += 1
        return False

    def mark_best(self, path: Path) -> None:
        """Remember the best checkpoint (kept by pruning) and say so in `best_checkpoint.json`."""
        self.best_path = path
        from studio.train.ranks import is_main_process

        if is_main_process():
            (self.run_dir / "best_checkpoint.json").write_text(
                json.dumps({"path": str(path), "step": int(path.name.split("-")[1]), "eval_loss": self.best}), "utf-8")

    def state(self) -> dict:
        return {"best_eval": None if math.isinf(self.best) else self.best, "bad_evals": self.bad_evals,
                "best_path": str(self.best_path) if self.best_path else None}

    def load(self, state: dict) -> None:
        self.best = state.get("best_eval") if state.get("best_eval") is not None else math.inf
        self.bad_evals = state.get("bad_evals", 0)
        self.best_path = Path(state["best_path"]) if state.get("best_path") else None
