"""The training loop, top to bottom in the shape of diffusers' training examples.

Per optimizer step: accumulate micro-batches -> clip -> step -> schedule -> EMA -> (log, control
files, checkpoint, sample, eval). The loss is only read back from the device at logging steps.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from studio.data.prefetch import prefetched
from studio.train import checkpoint as ckpt
from studio.runfolder.control import ControlFiles
from studio.runfolder.layout import checkpoint_path
from studio.train.ema import ema_update
from studio.train.health import NonFiniteState, last_good_note
from studio.train.memory import saved_activations
from studio.train.optimizers import evaluation_weights, set_train_mode
from studio.train.profiling import NoProfile, log_layer_grad_norms, make_profiler
from studio.train.evaluate import EarlyStopper, clip_score, evaluate
from studio.runfolder.progress import ProgressLog
from studio.train.ranks import mean_over_ranks, shared_flags
from studio.train.setup import Trainer
from studio.train.speed import attention_kernel

log = logging.getLogger("studio.train")


class NonFiniteLoss(NonFiniteState):
    pass


class Loop:
    def __init__(self, t: Trainer, run_dir: Path, progress: ProgressLog, bar=None, on_checkpoint=None):
        self.t, self.run_dir, self.progress, self.bar = t, Path(run_dir), progress, bar
        self.on_checkpoint = on_checkpoint  # called with (checkpoint folder, step) after each commit
        self.cfg = t.cfg
        self.control = ControlFiles(run_dir)
        self.step = self.epoch = self.batches_done = 0
        self.last_save_time = time.time()
        self.stopper = EarlyStopper(self.cfg.evaluation, run_dir)
        # The losses since the last logging step, on the device: one per batch, and how many batches made
        # each optimizer step (read at the logging step: one host sync per logging_steps, not per step).
        self.window_losses: list[torch.Tensor] = []
        self.window_steps: list[int] = []
        self.last_loss = float("nan")
        # Collected once: walking the network's parameters costs milliseconds, too much for every step.
        self.trainable = t.adapter.trainable_params()
        # One process without a loss scaler: accelerate's per-step wrappers (backward, clip, step, zero_grad)
        # only add checks there, ~1 ms a step (bench/), so torch is called on the optimizer it wraps.
        # Several processes, DeepSpeed/FSDP and fp16 loss scaling keep accelerate's versions.
        from accelerate.utils import DistributedType

        acc = t.accelerator
        self.direct = acc.distributed_type == DistributedType.NO and getattr(acc, "scaler", None) is None
        self.optimizer = getattr(t.optimizer, "optimizer", t.optimizer) if self.direct else t.optimizer
        self.backward = torch.Tensor.backward if self.direct else acc.backward
        self.clip = torch.nn.utils.clip_grad_norm_ if self.direct else acc.clip_grad_norm_
        self.main = acc.is_main_process  # the only process that writes the run folder
        # memory.attention_backend: the forced SDPA kernel covers the backward too, where gradient
        # checkpointing recomputes attention and must pick the kernel the forward used.
        self.attention = attention_kernel(self.cfg)
        self.profiler = make_profiler(self.cfg, run_dir, acc.device) if self.main else NoProfile()
        self.saved_activations = saved_activations(self.cfg, acc.device)  # memory.activation_offload
        self.clip_scorer = None  # evaluation_type clip: loaded before the first step, so a bad model fails early
        if self.main and self.cfg.evaluation.evaluation_type == "clip":
            from studio.train.clip_score import ClipScorer

            self.clip_scorer = ClipScorer(self.cfg.evaluation.clip_model, acc.device)

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                "total_steps": self.t.total_steps, "world_size": self.t.accelerator.num_processes,
                "global_batch": self._global_batch(), **self.stopper.state()}

    def _global_batch(self) -> int:
        """Items per loader batch over all processes: what `batches_done` counts in."""
        return self.cfg.training.batch_size * self.t.accelerator.num_processes

    def resume(self, path: Path) -> None:
        t = self.t
        state = ckpt.load_checkpoint(path, adapter=t.adapter, optimizer=t.optimizer, scheduler=t.scheduler,
                                     generator=t.generator, ema=t.ema)
        world, saved_world = t.accelerator.num_processes, state.get("world_size", 1)
        # Checkpoints from before `global_batch` was recorded: the batch size is assumed unchanged.
        saved_global = state.get("global_batch", saved_world * self.cfg.training.batch_size)
        if saved_global != self._global_batch():  # its data position counts batches of another size
            raise ValueError(
                f"{path.name} was written with a global batch of {saved_global} items ({saved_world} process(es) "
                f"x batch {saved_global // saved_world}) and this run has {self._global_batch()} ({world} x "
                f"{self.cfg.training.batch_size}): resume with training.batch_size x distributed.num_processes "
                f"x num_machines = {saved_global} (e.g. {world} process(es) x batch {saved_global // world})"
                if saved_global % world == 0 else
                f"{path.name} was written with a global batch of {saved_global} items ({saved_world} process(es)) "
                f"and this run has {self._global_batch()}, which {world} process(es) cannot split evenly: resume "
                f"with training.batch_size x distributed.num_processes x num_machines = {saved_global}, or start "
                f"a new run from its adapter (adapter.init_from={path})")
        if saved_world != world:  # the same global batch, in the same order, split another way
            log.info("%s was written by %d process(es); continuing it on %d with the same global batch of %d",
                     path.name, saved_world, world, saved_global)
        self.step, self.epoch, self.batches_done = state["step"], state["epoch"], state["batches_done"]
        self.stopper.load(state)
        if self.batches_done >= t.batches_per_epoch:  # saved at an epoch boundary
            self.epoch, self.batches_done = self.epoch + 1, 0
        self.progress.start_step = self.step
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batches_done)
        self.progress.event("resumed", step=self.step, checkpoint=str(path))

    def save(self, reason: str) -> Path:
        """Every rank calls this; the main process writes (DDP keeps the ranks' weights identical)."""
        self._check_finite()
        t = self.t
        path = checkpoint_path(self.run_dir, self.step)
        if self.main:
            with evaluation_weights(t.optimizer):  # schedule-free: save the averaged weights
                path = ckpt.commit_checkpoint(self.run_dir, self.step, adapter=t.adapter, optimizer=t.optimizer,
                                              scheduler=t.scheduler, trainer_state=self.state(),
                                              generator=t.generator, ema=t.ema)
            ckpt.prune_checkpoints(self.run_dir, self.cfg.checkpointing.max_checkpoints,
                                   protect=self.stopper.best_path)
            self.progress.event("checkpoint", step=self.step, path=str(path), reason=reason)
            log.info("checkpoint saved: %s (%s)", path.name, reason)
            if self.on_checkpoint is not None:
                self.on_checkpoint(path, self.step)
        t.accelerator.wait_for_everyone()
        self.last_save_time = time.time()
        return path

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> str:
        """Train to the end; returns "done" or "stopped"."""
        t = self.t
        set_train_mode(t.optimizer, True)  # schedule-free optimizers start (and resume) in eval mode
        if self.cfg.sampling.baseline_sample and self.step == 0:
            self.render_samples()  # step 0: the base model, the reference for every later sample
        try:
            return self._run_epochs()
        finally:
            self.profiler.close()

    def _run_epochs(self) -> str:
        t = self.t
        while self.epoch < t.epochs and self.step < t.total_steps:
            outcome = self.run_epoch()
            if outcome:
                return outcome
            self.end_of_epoch()
            if self.stopper.should_stop:
                log.info("early stopping: no eval improvement for %d evaluations", self.stopper.patience)
                self.progress.event("warning", message="early stopping: eval loss stopped improving",
                                    step=self.step)
                break
            if self.batches_done < t.batches_per_epoch:  # max_steps reached inside the epoch: the final
                break  # checkpoint keeps that position, so a longer run continues at the next batch
            self.epoch, self.batches_done = self.epoch + 1, 0
        return "done"

    def run_epoch(self) -> str | None:
        t, accum = self.t, self.cfg.training.gradient_accumulation_steps
        t.sampler.set_epoch(self.epoch)
        t.sampler.skip = self.batches_done * t.global_batch_size
        module = t.loss_module  # wrapped by accelerate (DDP/FSDP) when there are several processes
        if not module.training:  # train() walks every submodule; evaluation puts it back itself
            module.train()
        dl, prof = self.cfg.dataloader, self.profiler
        prof.restart()  # an epoch's start (sampler, workers) is billed to its first batch's data wait
        for batch in (prefetched(t.train_loader, dl.prefetch_queue) if dl.prefetch_batches else t.train_loader):
            prof.lap("data")
            self.batches_done += 1
            sync = self.batches_done % accum == 0 or self.batches_done == t.batches_per_epoch
            with (nullcontext() if sync else t.accelerator.no_sync(module)), t.accelerator.autocast(), self.attention():
                with self.saved_activations():
                    loss = module(batch, t.generator)
                prof.lap("forward")
                self.backward(loss / accum)
                prof.lap("backward")
            self.window_losses.append(loss.detach().float())  # stays on the device until a logging step
            if not sync:
                continue
            self.window_steps.append(len(self.window_losses) - sum(self.window_steps))
            grad_norm = self.optimizer_step()
            prof.lap("optimizer")
            outcome = self.after_step(grad_norm)
            prof.lap("other")  # logging, control files, checkpoints, samples, evaluation
            prof.end_step(self.step)
            if outcome:
                return outcome
            if self.step >= t.total_steps or self.stopper.should_stop:
                return None
        return None

    def optimizer_step(self):
        t = self.t
        grad_norm = None
        heavy = self.cfg.logging.log_heavy_every
        fused = self.cfg.optimizer.fused_backward_pass  # its gradients were freed inside backward
        if heavy and (self.step + 1) % heavy == 0 and self.main and not fused:  # before clipping: as given
            log_layer_grad_norms(self.run_dir, self.step + 1, t.adapter.named_trainable(), self.track)
        if self.cfg.training.max_grad_norm > 0:
            grad_norm = self.clip(self.trainable, self.cfg.training.max_grad_norm)
        self.optimizer.step()
        t.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if t.ema is not None and self.step % self.cfg.training.ema_update_interval == 0:
            self._ema_step()
        return grad_norm

    def _ema_step(self) -> None:
        ema_update(self.t.ema, self.trainable, on_cpu=self.cfg.training.ema_device == "cpu")

    def after_step(self, grad_norm) -> str | None:
        cfg = self.cfg
        if self.step % cfg.logging.logging_steps == 0 or self.step == self.t.total_steps:
            self.log_step(grad_norm)
        else:
            # The Monitor moves every step (main process only); the loss comes with the next logging step.
            self.progress.tick(self.step, self.epoch, self.t.scheduler.get_last_lr()[0])
            if self.bar is not None:
                self.bar.update(1)
        ck = cfg.checkpointing
        timed = ck.save_interval_minutes > 0 and time.time() - self.last_save_time >= ck.save_interval_minutes * 60
        # Control files and the clock are read by the main process; every rank obeys its decision.
        stop, save_now, sample_now, timed = shared_flags(self.t.accelerator, [
            self.main and self.control.take(name) for name in ("STOP", "SAVE", "SAMPLE")] + [self.main and timed])
        if stop:
            self.save("stop requested")
            self.progress.event("stopped", step=self.step)
            return "stopped"
        due = ck.save_strategy == "steps" and self.step % ck.save_steps == 0
        if save_now or (due and self.step < self.t.total_steps) or timed:
            self.save("save requested" if not (due or timed) else ("interval" if timed else "save_steps"))
        every = cfg.sampling.every_steps
        if sample_now or (every and self.step % every == 0 and self.step < self.t.total_steps):
            self.render_samples()
        if cfg.evaluation.strategy == "steps" and self.step % cfg.evaluation.steps == 0:
            self.run_eval()
        return None

    def end_of_epoch(self) -> None:
        ck, cfg = self.cfg.checkpointing, self.cfg
        last = self.epoch + 1 >= self.t.epochs or self.step >= self.t.total_steps
        if ck.save_strategy == "epoch" and (self.epoch + 1) % ck.save_every_n_epochs == 0 and not last:
            self.save("epoch")
        if cfg.evaluation.strategy == "epoch":
            self.run_eval()

    # ---- reporting -----------------------------------------------------------------------------
    def _window(self) -> tuple[float, list[float]]:
        """The mean loss since the last logging step and each optimizer step's own (the mean of its
        batches), averaged over the processes. Every rank calls this at the same points and sees the
        same values: a non-finite loss stops all of them together."""
        if not self.window_losses:
            return self.last_loss, []
        batches = mean_over_ranks(self.t.accelerator, torch.stack(self.window_losses)).cpu()
        loss = float(batches.mean())
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss} at step {self.step}; lower "
                                "training.learning_rate, enable clipping (training.max_grad_norm) or check the data; "
                                f"{last_good_note(self.run_dir)}")
        # Batches after the last optimizer step (none where this is called: after a step or an epoch's end)
        # belong to the next one.
        done = sum(self.window_steps)
        per_step = [float(part.mean()) for part in torch.split(batches[:done], self.window_steps)] if done else []
        return loss, per_step

    def _check_finite(self) -> None:
        """Before a save and at the end: a non-finite loss since the last logging step stops the run."""
        self._window()

    def log_step(self, grad_norm) -> None:
        loss, per_step = self._window()
        self.window_losses, self.window_steps, self.last_loss = [], [], loss
        lr = self.t.scheduler.get_last_lr()[0]
        extra = {"grad_norm": round(float(grad_norm), 6)} if grad_norm is not None else {}
        # Each step's own loss rides along (the Monitor draws them); `loss` stays the window's mean.
        self.progress.step(self.step, self.epoch, loss, lr, step_losses=[round(v, 6) for v in per_step], **extra)
        for step, value in enumerate(per_step[:-1], self.step - len(per_step) + 1):  # trackers: each at its step
            self.track({"train/step_loss": value}, step)
        self.track({"train/loss": loss, "train/lr": lr, **{f"train/{k}": v for k, v in extra.items()},
                    **({"train/step_loss": per_step[-1]} if per_step else {})}, self.step)
        if self.bar is not None:
            self.bar.update(self.step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        else:
            eta = self.progress.eta(self.step)
            log.info("step %d/%d  loss %.4f  lr %.3e  eta %s", self.step, self.t.total_steps, loss, lr,
                     f"{eta:.0f}s" if eta is not None else "?")

    def track(self, values: dict, step: int) -> None:
        """To the trackers of logging.report_to (started on the main process only; none elsewhere)."""
        if self.t.accelerator.trackers:
            self.t.accelerator.log(values, step=step)

    def render_samples(self) -> None:
        from studio.sampling import render_during_training

        if self.main:  # DDP: the main process holds the same weights as every rank
            with evaluation_weights(self.t.optimizer):
                render_during_training(self.t, self.run_dir, self.step, self.progress)
        self.t.accelerator.wait_for_everyone()

    def run_eval(self) -> None:
        clip = self.cfg.evaluation.evaluation_type == "clip"
        if self.t.eval_loader is None and not clip:
            return
        metrics: dict = {}
        with evaluation_weights(self.t.optimizer):
            if self.t.eval_loader is not None:
                metrics = evaluate(self.t)
            if self.clip_scorer is not None:  # the main process renders and scores, as it renders samples
                metrics["clip_score"] = clip_score(self.t, self.clip_scorer, self.step)
        if clip:
            self.t.accelerator.wait_for_everyone()
        # Early stopping follows the eval loss, the same on every rank (reduced).
        improved = "eval_loss" in metrics and self.stopper.update(metrics["eval_loss"], self.step)
        self.progress.event("eval", step=self.step, epoch=self.epoch, best=improved, **metrics)
        self.track({f"eval/{key}": value for key, value in metrics.items()}, self.step)
        if improved and self.stopper.patience > 0:
            self.stopper.mark_best(self.save("best eval loss"))
