"""`training`, `optimizer`, `scheduler` and `loss` sections (FIELDS §5, §6, §7)."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import IMAGE_FAMILIES, Section, setting
from studio.config.optimizers import CATALOGUE, spec
from studio.config.sections.flow import FlowLossSettings
from studio.registry.families import family_ids

OptimizerName = Literal[tuple(CATALOGUE)]  # type: ignore[valid-type]
SchedulerName = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                        "cosine_with_min_lr", "polynomial", "rex"]


class TrainingSection(Section):
    learning_rate: float = setting(
        1e-4, "Step size of the optimizer. LoRA on image models: 1e-4 to 5e-4; full fine-tuning: 1e-6 to "
        "1e-5; Prodigy / D-Adaptation: 1.0. Erratic loss: lower it; flat loss: raise it. Studio defaults: "
        "image 1e-4, music 1e-4, LLM 2e-4. Image: the kohya notebook's 5e-4 goes with alpha = rank / 2, "
        "which halves every update; with the studio's alpha = rank, 1e-4 (the diffusers and SimpleTuner "
        "LoRA value) is the same order and safe for SDXL too. Music: 1e-4 is Side-Step's command-line "
        "default and the value its guide calls safe; its form's 3e-4 learns faster but, with rank 64 and "
        "alpha 128, overshoots more easily.", gt=0.0, le=10.0)
    batch_size: int = setting(1, "Items per step. Bigger gives steadier gradients but needs more memory; "
                              "on out-of-memory lower it and raise gradient accumulation.", ge=1, le=1024)
    gradient_accumulation_steps: int = setting(1, "Add up gradients over this many batches before each "
                                               "optimizer step. Effective batch = batch size x this x GPUs. "
                                               "Costs no memory.", ge=1, le=1024)
    epochs: int = setting(10, "Passes over the dataset (ignored when max steps > 0).", ge=1, le=100_000)
    max_steps: int = setting(0, "Stop after this many optimizer steps; when > 0 it wins over epochs. "
                             "0 = train for the given epochs.", ge=0, le=10_000_000)
    seed: int = setting(42, "Random seed for weights, data order, noise and timesteps: same seed and "
                        "config give the same run.", ge=0, le=2**32 - 1)
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this value to stop exploding updates. "
                                   "0 = no clipping.", ge=0.0, le=1000.0, group="advanced")
    use_ema: bool = setting(False, "Keep an exponential moving average of the trained weights; samples "
                            "and the final adapter use the average (smoother, often better). Costs one "
                            "extra copy of the trainable weights.", group="advanced")
    ema_decay: float = setting(0.999, "EMA decay per update: closer to 1 averages over more steps.",
                               ge=0.0, lt=1.0, group="advanced", step=0.0001)
    ema_update_interval: int = setting(1, "Update the EMA every N optimizer steps.", ge=1, le=10_000,
                                       group="advanced")
    ema_device: Literal["cpu", "accelerator"] = setting(
        "cpu", "Where the EMA copy lives and is updated. `cpu` keeps it in CPU memory and updates it there "
        "from a copy of the trained weights, so it never takes GPU memory (SimpleTuner's `ema_cpu_only`); "
        "the copy is small for adapters. `accelerator` keeps it next to the model: faster updates for "
        "full fine-tunes, at the cost of one more copy of the weights in GPU memory.", group="advanced")


class OptimizerSection(Section):
    name: OptimizerName = setting(
        "adamw", "Optimizer. adamw: the reliable default. adafactor / came: the least optimizer memory "
        "(came is steadier, a common cure for NaN losses). prodigy and dadapt_*: find the step size "
        "themselves (learning rate 1.0 = as found). adamw_schedulefree / radam_schedulefree / "
        "sgd_schedulefree: no LR schedule needed (the scheduler is set to constant; warmup still "
        "applies), samples and saves use their averaged weights. lion: sign-based, less memory, use a "
        "3-10x lower LR. sgd_nesterov: momentum SGD, least memory among the classic ones. soap, adan, "
        "ademamix, stableadamw, ranger, adopt, radam, adam: from pytorch-optimizer / torch for "
        "experiments. Names with 8bit, paged or bnb_ come from bitsandbytes (8-bit states, pageable "
        "memory, fused CUDA kernels) and need a CUDA GPU.")
    weight_decay: float = setting(0.01, "Pull weights towards zero each step; 0.01 is the usual value.",
                                  ge=0.0, le=1.0, group="advanced")
    decouple_weight_decay: Literal["default", "decoupled", "coupled"] = setting(
        "default", "How weight decay is applied. `decoupled` shrinks the weights directly, apart from the "
        "gradient step (the AdamW way: the decay does not depend on the gradient statistics); `coupled` "
        "adds it to the gradient as an L2 penalty. `default` keeps each optimizer's own way. Only "
        "optimizers with both kinds (adam, radam, prodigy, came, dadapt_adam/sgd/adagrad, adan, "
        "ademamix, ranger, adopt) accept a change; the others refuse it by name.", group="advanced")
    beta1: float | None = setting(None, "Override the optimizer's first-moment decay (empty = the "
                                  "optimizer's default).", ge=0.0, lt=1.0, group="advanced")
    beta2: float | None = setting(None, "Override the optimizer's second-moment decay (empty = default).",
                                  ge=0.0, lt=1.0, group="advanced")
    eps: float | None = setting(None, "Override the optimizer's epsilon (empty = default).", gt=0.0,
                                le=1.0, group="advanced")
    implementation: Literal["auto", "foreach", "fused"] = setting(
        "auto", "How PyTorch's own optimizers (adamw, adam, sgd_nesterov, ...) run their update. `auto`: "
        "PyTorch's choice (`foreach` on GPUs). `foreach`: a few batched kernels over all weights. `fused`: "
        "one kernel per group of weights, usually the fastest on a GPU. Same result within rounding; "
        "optimizers from other packages refuse a choice other than `auto`.", group="advanced")
    args: str = setting("", "Extra optimizer arguments as `key=value` pairs separated by spaces or "
                        "commas, e.g. `d_coef=0.5 safeguard_warmup=true` for Prodigy. Numbers, booleans "
                        "and plain words only.", group="advanced")
    fused_backward_pass: bool = setting(
        False, "Step each weight's optimizer inside the backward pass, as soon as its gradient is ready, and "
        "free that gradient at once: the gradients of the whole network never sit in memory together. Worth "
        "it for full fine-tunes (a gradient per weight of the model); adapters' gradients are small. Same "
        "result as the usual step. Not with gradient accumulation, clipping by total norm "
        "(training.max_grad_norm must be 0), schedule-free optimizers or several processes; per-layer "
        "gradient norms (logging.log_heavy_every) are not recorded.", group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        if not self.fused_backward_pass:
            return []
        out, field = [], "optimizer.fused_backward_pass"
        if cfg.training.gradient_accumulation_steps > 1:
            out.append((field, "steps inside every backward pass, so it cannot add up gradients over batches: "
                        "set training.gradient_accumulation_steps to 1 (raise the batch size instead)"))
        if cfg.training.max_grad_norm > 0:
            out.append((field, "each weight steps before the other gradients exist, so the total gradient norm "
                        "cannot be clipped: set training.max_grad_norm to 0"))
        if spec(self.name).schedule_free:
            out.append((field, f"'{self.name}' keeps two weight sequences switched for the whole network; "
                        "choose an optimizer without schedule-free averaging"))
        if cfg.distributed.num_processes * cfg.distributed.num_machines > 1:
            out.append((field, "several processes average gradients after backward, and this steps inside "
                        "it: train on one process (distributed.num_processes = 1)"))
        return out


class SchedulerSection(Section):
    name: SchedulerName = setting("cosine", "How the learning rate changes over the run. Prodigy and the "
                                  "schedule-free optimizers always use `constant`. `rex`: the REX "
                                  "curve (Chen et al. 2021, arXiv 2107.04197), which stays higher than "
                                  "linear for longer and then falls fast.")
    warmup_steps: int = setting(0, "Ramp the learning rate up from 0 over this many steps. When > 0 it "
                                "wins over the warmup ratio. Studio defaults: music 100 steps (Side-Step's "
                                "value), image 0 (kohya and the diffusers examples: an adapter starts as a "
                                "no-op, so early steps cannot wreck the model; the presets add 50).",
                                ge=0, le=1_000_000)
    warmup_ratio: float = setting(0.0, "Warmup as a share of all steps (0.05-0.1 is common). Ignored when "
                                  "warmup steps > 0. Studio defaults: LLM 0.1 (the LLM studio's value), "
                                  "others 0: a share ties the warmup to the run's length, which a fixed "
                                  "step count (music) does not.", ge=0.0, le=1.0, step=0.01)
    num_cycles: int = setting(2, "Restarts of `cosine_with_restarts`: the LR jumps back up to its peak this "
                              "many times, so the run is split into this + 1 equal cosine arcs; 0 = a plain "
                              "cosine. Default 2, the LLM studio's value (seed 003): a single arc would make "
                              "this schedule the same as `cosine` (kohya's `num_cycles=1` counts arcs, not "
                              "restarts, and never restarts).", ge=0, le=100, group="advanced")
    power: float = setting(1.0, "Exponent of the `polynomial` decay (1 = linear).", gt=0.0, le=10.0,
                           group="advanced")
    lr_end: float = setting(1e-7, "Learning rate that `polynomial` decays to.", ge=0.0, group="advanced")
    min_lr_ratio: float = setting(0.0, "Floor of `cosine_with_min_lr` as a share of the starting LR "
                                  "(0.1 = never below 10 %).", ge=0.0, le=1.0, group="advanced", step=0.01)


class LossSection(FlowLossSettings):  # + the flow families' settings (sections/flow.py)
    snr_gamma: float = setting(0.0, "Min-SNR-gamma weighting (paper: arXiv 2303.09556): down-weights the "
                               "easy, low-noise timesteps; steadier and faster convergence. 5 is the usual "
                               "value; 0 = off. Music (base/sft): only used with loss weighting `min_snr`, "
                               "where 0 means 5.", ge=0.0, le=100.0, families=family_ids(trait="min_snr"))
    use_soft_min_snr: bool = setting(
        False, "Use the smooth (soft) minimum of SNR and snr_gamma instead of the hard cap: a gentler "
        "weighting without a kink (Crowson et al. 2024, arXiv 2401.11605). Needs snr_gamma > 0. Helps "
        "pixel-space models most; on latent models such as SD it can give softer, blurrier results, so it "
        "is off by default.", families=family_ids(trait="unet"), group="advanced")
    # ---- music (ACE-Step): empty = the variant's value (studio/config/sections/music.py) --------------
    shift: float | None = setting(None, "Timestep shift of the sampler, stored with the adapter for "
                                  "inference and used for in-training samples; it does not change training. "
                                  "Empty = the variant's value (turbo 3.0, base/sft 1.0).", gt=0.0, le=20.0,
                                  families=("acestep",), group="advanced")
    num_inference_steps: int | None = setting(None, "Denoising steps for inference and in-training samples. "
                                              "Empty = the variant's value (turbo 8, base/sft 50).", ge=1,
                                              le=1000, families=("acestep",), group="advanced")
    cfg_ratio: float | None = setting(None, "Share of steps trained with the null condition instead of the "
                                      "prompt, so guidance (CFG) keeps working. Base/sft were trained at 0.15: "
                                      "keep it. Empty = 0.15 for base/sft. Not available for turbo, which is "
                                      "guidance-distilled.", ge=0.0, le=1.0, step=0.01, families=("acestep",),
                                      variants=("base", "sft"))
    loss_weighting: Literal["none", "min_snr"] = setting(
        "none", "Per-timestep loss weights. `min_snr` down-weights the noisiest timesteps (strength: "
        "snr_gamma); try it when base/sft results sound mushy. Not available for turbo.",
        families=("acestep",), variants=("base", "sft"))
    noise_offset: float = setting(0.0, "Add a small per-channel offset to the noise so the model learns "
                                  "very dark and very bright images. 0.05-0.1 is common; 0 = off.",
                                  ge=0.0, le=1.0, families=IMAGE_FAMILIES, group="advanced", step=0.01)

    def problems(self, cfg) -> list[tuple[str, str]]:
        if self.use_soft_min_snr and self.snr_gamma <= 0:
            return [("loss.use_soft_min_snr", "needs loss.snr_gamma > 0 (5 is the usual value)")]
        return []
