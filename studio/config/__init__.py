"""Config: the schema (`JobConfig`), loading with overrides, presets."""
from studio.config.errors import ConfigError
from studio.config.loader import apply_overrides, deep_merge, finalize_job, load_config, validate
from studio.config.schema import SECTIONS, JobConfig

__all__ = ["ConfigError", "JobConfig", "SECTIONS", "apply_overrides", "deep_merge", "finalize_job",
           "load_config", "validate"]
