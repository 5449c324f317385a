"""`checkpointing`, `evaluation`, `logging` and `sampling` sections (FIELDS §10-§13)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from studio.config.fields import IMAGE_FAMILIES, Section, setting
from studio.config.preflight import looks_like_hub_id
from studio.config.trackers import TRACKERS, missing_trackers

TrackerName = Literal[tuple(TRACKERS)]  # type: ignore[valid-type]
DEFAULT_PROJECT = "training-studio"
CLIP_HINT = "a local folder or a hub id `user/name` with a CLIPModel and its processor"


class CheckpointingSection(Section):
    save_strategy: Literal["steps", "epoch", "no"] = setting(
        "steps", "When to write resumable checkpoints: every N steps, every N epochs, or never (the final "
        "adapter is always saved). With steps or epoch the last step is checkpointed too, so raising "
        "training.max_steps with auto_resume continues where the run ended.")
    save_steps: int = setting(100, "Checkpoint every this many optimizer steps (strategy `steps`).",
                              ge=1, le=10_000_000)
    save_every_n_epochs: int = setting(1, "Checkpoint every this many epochs (strategy `epoch`).", ge=1,
                                       le=100_000)
    max_checkpoints: int = setting(100, "Keep at most this many checkpoints; the oldest are deleted once a "
                                   "newer one is safely written.", ge=1, le=1000)
    save_interval_minutes: int = setting(
        30, "Also checkpoint when this many minutes have passed since the last one, whatever the "
        "strategy; 0 = off. Default 30, as in the LLM studio: a crash or a power cut then costs at most "
        "half an hour however slow the steps are, and an adapter checkpoint takes seconds. Short runs "
        "never reach it.", ge=0, le=1440, group="advanced")
    resume_from: str = setting("", "Continue from this checkpoint folder (`checkpoint-<step>`), restoring "
                               "weights, optimizer, scheduler, step and data position. Leave empty when "
                               "auto-resume is on.", widget="path")
    auto_resume: bool = setting(False, "Continue automatically from the newest complete checkpoint in the "
                                "run folder, if there is one.")


class EvaluationSection(Section):
    strategy: Literal["no", "steps", "epoch"] = setting(
        "no", "When to compute the loss on held-out data: never, every N steps, or every epoch. Needs "
        "`data.eval_path` or `data.eval_split_ratio` > 0.")
    steps: int = setting(100, "Evaluate every this many optimizer steps (strategy `steps`).", ge=1,
                         le=10_000_000)
    early_stopping_patience: int = setting(0, "Stop after this many evaluations in a row without "
                                           "improvement; the best checkpoint is kept. 0 = off.", ge=0,
                                           le=1000, group="advanced")
    early_stopping_threshold: float = setting(0.005, "Smallest drop of eval loss that counts as an "
                                              "improvement.", ge=0.0, le=1.0, group="advanced")
    evaluation_type: Literal["none", "clip"] = setting(
        "none", "An extra measure at each evaluation. `clip`: render the sample prompts (sampling.prompts, "
        "with their seeds) and score each image against its prompt with a CLIP model: 100 x the cosine "
        "similarity of their embeddings, logged as `clip_score` (the mean over prompts) next to the eval "
        "loss. It tracks prompt adherence; it says little with only a few prompts. Works without "
        "held-out data too.", families=IMAGE_FAMILIES)
    clip_model: str = setting(
        "openai/clip-vit-large-patch14", "The CLIP model of the `clip` evaluation: a local folder or a hub id "
        "holding a transformers CLIPModel and its processor. The default is the usual CLIP-score model "
        "(about 1.7 GB, downloaded once).", families=IMAGE_FAMILIES, widget="path", group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        if self.evaluation_type != "clip":
            return []
        out = []
        if cfg.model.family not in IMAGE_FAMILIES:
            out.append(("evaluation.evaluation_type", f"'clip' scores images; {cfg.model.family} does not make "
                        f"images (image families: {', '.join(IMAGE_FAMILIES)})"))
        if not cfg.sampling.prompts:
            out.append(("evaluation.evaluation_type", "'clip' scores the images of the sample prompts: add "
                        "sampling.prompts"))
        if self.strategy == "no":
            out.append(("evaluation.evaluation_type", "'clip' runs at evaluations: set evaluation.strategy to "
                        "'steps' or 'epoch'"))
        path = self.clip_model.strip()
        if not path:
            out.append(("evaluation.clip_model", f"required with evaluation_type 'clip': {CLIP_HINT}"))
        elif not looks_like_hub_id(path) and not Path(path).expanduser().exists():
            out.append(("evaluation.clip_model", f"not found: {path} ({CLIP_HINT})"))
        return out


class LoggingSection(Section):
    logging_steps: int = setting(10, "Write the loss every this many steps (progress file, trackers, console): "
                                 "the mean over those steps, plus each step's own loss. The loss is read "
                                 "from the GPU once per this many steps; smaller shows it sooner.",
                                 ge=1, le=100_000)
    log_dir: str = setting("", "TensorBoard folder. Empty = `runs/` inside the run folder.",
                           group="advanced", widget="path")
    report_to: list[TrackerName] = setting(
        None, "Where loss, learning rate, gradient norms and evaluation metrics are sent (through "
        "accelerate's trackers), besides the progress file the Monitor reads. TensorBoard writes event files "
        "into the run folder. Weights & Biases (`pip install wandb`), MLflow (`pip install mlflow-skinny`) "
        "and Comet (`pip install comet-ml`) are optional installs, used only when chosen; they read their "
        "keys from their usual environment variables (WANDB_API_KEY, COMET_API_KEY, MLFLOW_TRACKING_TOKEN), "
        "which job.env_file can set. Empty: no tracker. (Replaces the former `logging.tensorboard` switch, "
        "still accepted: false drops TensorBoard from this list.)",
        default_factory=lambda: ["tensorboard"], group="advanced")
    tracker_project: str = setting(
        "", f"Project the run is filed under in W&B and Comet, and the experiment name in MLflow. Empty = "
        f"`{DEFAULT_PROJECT}`. The run itself is named after job.run_name, else the job name.", group="advanced")
    trackers_offline: bool = setting(
        False, "W&B and Comet keep the run on this machine instead of uploading it: W&B in `wandb/` of the "
        "run folder (upload later with `wandb sync`), Comet as a zip in `comet/` (`comet upload`). For "
        "machines without internet or an API key.", group="advanced")
    wandb_entity: str = setting("", "W&B user or team the run goes to. Empty = your default entity.",
                                group="advanced")
    mlflow_tracking_uri: str = setting(
        "", "Where MLflow records the run: a tracking server (`http://host:5000`) or a folder (`file:/path`). "
        "Empty = MLFLOW_TRACKING_URI when set, else the `mlruns/` folder inside the run folder (view with "
        "`mlflow ui --backend-store-uri "
        "RUN_DIR/mlruns`); MLflow keeps such folders working but adds new features to servers and `sqlite:` "
        "databases only.", group="advanced")
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", "How much the trainer prints to the console log.", group="advanced")
    log_heavy_every: int = setting(50, "Every this many steps, record the gradient norm of each adapted layer "
                                   "(grad_norms.jsonl in the run folder and TensorBoard `grad_norm/...`): "
                                   "shows which layers learn and which explode. 50 as in Side-Step; it "
                                   "costs one pass over the adapter's gradients. 0 = off.", ge=0,
                                   le=1_000_000, group="advanced")
    step_profiling: bool = setting(False, "Time every step's phases (waiting for data, forward, backward, "
                                   "optimizer) into profile.jsonl in the run folder, to find what slows a "
                                   "run. On a GPU it waits for the device at each phase, which itself "
                                   "slows training a little: off by default.", group="advanced")
    track_microbatches: bool = setting(False, "With step profiling: also record the forward and backward time "
                                       "of each micro-batch (gradient accumulation), to spot one slow batch "
                                       "shape among the buckets.", group="advanced")


    @model_validator(mode="before")
    @classmethod
    def _tensorboard_switch(cls, data):
        """Configs written before `report_to` had `tensorboard: true|false`; it adds or drops TensorBoard."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        legacy = data.pop("tensorboard")
        if not isinstance(legacy, bool):
            raise ValueError(f"logging.tensorboard (replaced by logging.report_to) takes true or false, not "
                             f"{legacy!r}")
        chosen = data.get("report_to", ["tensorboard"])
        if isinstance(chosen, list):
            chosen = [t for t in chosen if t != "tensorboard"]
            data["report_to"] = ["tensorboard", *chosen] if legacy else chosen
        return data

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        if self.track_microbatches and not self.step_profiling:
            out.append(("logging.track_microbatches", "needs logging.step_profiling"))
        if len(set(self.report_to)) < len(self.report_to):
            out.append(("logging.report_to", "names a tracker twice"))
        out += [("logging.report_to", message) for message in missing_trackers(self.report_to)]
        return out

class SamplePrompt(Section):
    prompt: str = setting(..., "What to generate.")
    negative_prompt: str = setting("", "What to steer away from (image families).")
    seed: int = setting(0, "Noise seed, fixed so samples at different steps are comparable.", ge=0,
                        le=2**32 - 1)
    steps: int = setting(0, "Inference steps; 0 = the sampling default.", ge=0, le=1000)
    guidance: float = setting(-1.0, "Classifier-free guidance scale; -1 = the sampling default.", ge=-1.0,
                              le=100.0)
    width: int = setting(0, "Width in pixels; 0 = the training resolution.", ge=0, le=8192)
    height: int = setting(0, "Height in pixels; 0 = the training resolution.", ge=0, le=8192)
    lyrics: str = setting("", "Lyrics of the sample song (`[verse]`, `[chorus]` tags allowed). Empty = "
                          "instrumental.", families=("acestep",))


class SamplingSection(Section):
    prompts: list[SamplePrompt] = setting(None, "Prompts to render during training, each with its own "
                                          "seed and optional steps, guidance and size. A plain string is "
                                          "taken as a prompt.", default_factory=list)
    every_steps: int = setting(0, "Render the sample prompts every this many optimizer steps. 0 = only at "
                               "the end.", ge=0, le=10_000_000)
    at_end: bool = setting(True, "Render the sample prompts once more when training finishes.")
    baseline_sample: bool = setting(False, "Render the sample prompts once before the first step, with the "
                                    "untouched base model, as the reference the later samples are compared "
                                    "with (saved as step 0). Off by default: it delays the first step by one "
                                    "sample round and shows the same picture for every run on that base.",
                                    group="advanced")
    default_steps: int = setting(25, "Inference steps when a prompt does not set its own.", ge=1, le=1000,
                                 group="advanced")
    default_guidance: float = setting(7.0, "Guidance scale when a prompt does not set its own.", ge=0.0,
                                      le=100.0, group="advanced")
    max_new_tokens: int = setting(64, "Longest completion generated for each sample prompt, in tokens.",
                                  ge=1, le=8192, families=("causal_lm",))
    temperature: float = setting(0.7, "Sampling temperature of text completions: higher is more varied; "
                                 "0 = always the most likely token (greedy).", ge=0.0, le=5.0, step=0.05,
                                 families=("causal_lm",))
    audio_seconds: float = setting(10.0, "Length of each sample song in seconds.", gt=0.0, le=600.0,
                                   families=("acestep",))

    def __init__(self, **data):
        prompts = data.get("prompts")
        if isinstance(prompts, list):
            data["prompts"] = [{"prompt": p} if isinstance(p, str) else p for p in prompts]
        super().__init__(**data)
