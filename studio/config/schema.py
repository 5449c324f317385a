"""`JobConfig`: the one JSON object that presets, the UI, the CLI, queue rows and `training_args.json` share.

Every setting is declared once in `sections/`; this module composes them and runs the single
cross-field check that reports every problem together, each with its field path.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from studio.config.errors import ConfigError
from studio.config.optimizers import LR_FREE, SCHEDULE_FREE
from studio.config.sections.adapter import AdapterSection
from studio.config.sections.data import DataSection
from studio.config.sections.job_model import JobSection, ModelSection
from studio.config.sections.flow import flow_problems
from studio.config.sections.llm import llm_problems
from studio.config.sections.music import music_problems
from studio.config.sections.outputs import (CheckpointingSection, EvaluationSection, LoggingSection,
                                            SamplingSection)
from studio.config.sections.platform import DistributedSection, HubSection
from studio.config.sections.runtime import DataloaderSection, MemorySection
from studio.config.sections.training import (LossSection, OptimizerSection, SchedulerSection,
                                              TrainingSection)

SECTIONS = ("job", "model", "data", "adapter", "training", "optimizer", "scheduler", "loss", "memory",
            "dataloader", "checkpointing", "evaluation", "logging", "sampling", "distributed", "hub")


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: JobSection = Field(default_factory=JobSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    loss: LossSection = Field(default_factory=LossSection)
    memory: MemorySection = Field(default_factory=MemorySection)
    dataloader: DataloaderSection = Field(default_factory=DataloaderSection)
    checkpointing: CheckpointingSection = Field(default_factory=CheckpointingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    hub: HubSection = Field(default_factory=HubSection)

    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """Adjustments and warnings made while validating (shown by the UI and logged by the trainer)."""
        return self._notes

    @model_validator(mode="after")
    def _cross_check(self) -> "JobConfig":
        problems: list[tuple[str, str]] = []
        for name in SECTIONS:
            problems += getattr(self, name).problems(self)
        problems += _schedule_rules(self)
        problems += llm_problems(self)
        problems += music_problems(self)
        problems += flow_problems(self)
        if problems:
            raise ConfigError(problems)
        return self


def _schedule_rules(cfg: JobConfig) -> list[tuple[str, str]]:
    """Rules that tie several sections together (FIELDS §6.3, §10, §11). Adjusts what it may, reports the rest."""
    from studio.config.kv import parse_key_values

    problems: list[tuple[str, str]] = []
    notes = cfg._notes
    name = cfg.optimizer.name
    if name in ("prodigy", *SCHEDULE_FREE) and cfg.scheduler.name != "constant":
        why = "adapts the step size itself" if name == "prodigy" else "needs no learning-rate schedule"
        notes.append(f"{name} {why}: scheduler '{cfg.scheduler.name}' replaced by 'constant'.")
        cfg.scheduler.name = "constant"
    if name in LR_FREE and cfg.training.learning_rate != 1.0:
        notes.append(f"{name} finds the step size itself and expects learning_rate 1.0 (got "
                     f"{cfg.training.learning_rate:g}, used as a multiplier); tune it with `d_coef` in "
                     "optimizer.args instead.")
    if cfg.scheduler.warmup_steps > 0 and cfg.scheduler.warmup_ratio > 0:
        notes.append("scheduler.warmup_steps > 0 wins: scheduler.warmup_ratio is ignored.")
    if cfg.training.max_steps > 0:
        notes.append(f"training.max_steps={cfg.training.max_steps} wins: training.epochs is ignored.")
    if cfg.checkpointing.resume_from and cfg.checkpointing.auto_resume:
        problems.append(("checkpointing.resume_from", "leave empty when checkpointing.auto_resume is on "
                         "(auto-resume picks the newest checkpoint itself)"))
    has_eval_data = bool(cfg.data.eval_path) or cfg.data.eval_split_ratio > 0
    clip = cfg.evaluation.evaluation_type == "clip"  # scores the sample prompts: no held-out data needed
    if cfg.evaluation.strategy != "no" and not has_eval_data and not clip:
        problems.append(("evaluation.strategy", f"'{cfg.evaluation.strategy}' needs evaluation data: set "
                         "data.eval_path or data.eval_split_ratio > 0"))
    if cfg.evaluation.early_stopping_patience > 0 and cfg.evaluation.strategy == "no":
        problems.append(("evaluation.early_stopping_patience", "needs evaluation.strategy 'steps' or "
                         "'epoch'"))
    elif cfg.evaluation.early_stopping_patience > 0 and not has_eval_data:
        problems.append(("evaluation.early_stopping_patience", "stops on the eval loss: set data.eval_path "
                         "or data.eval_split_ratio > 0"))
    try:
        parse_key_values(cfg.optimizer.args)
    except ValueError as err:
        problems.append(("optimizer.args", str(err)))
    return problems
