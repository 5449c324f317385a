"""The run folder: the one contract between a job, the queue and the UI (docs/architecture.md).

It owns the file names (`layout`), the event names (`events.Event`), the progress writer and its one
reader (`progress`), the control requests (`control`), the console capture (`console`), the device
and dtype choice of a job process (`device`, imported on its own: it needs torch) and atomic writes
(`atomic`). The names are re-exported here, so `from studio import runfolder; runfolder.PROGRESS_FILE`.
"""
from studio.runfolder.atomic import atomic_write, atomic_write_text
from studio.runfolder.console import capture_console, log_to_stdout
from studio.runfolder.control import REQUESTS, ControlFiles, clear_stop, control_dir, request, request_stop
from studio.runfolder.events import FINAL_EVENTS, Event, is_step
from studio.runfolder.layout import (ATTEMPTS_DIR, CONFIG_FILE, CONSOLE_FILE, CONTROL_DIR, PROGRESS_FILE, STOP_FILE,
                                     TRAINING_ARGS_FILE, archive_attempt, console_path, console_tail, progress_path,
                                     write_config)
from studio.runfolder.progress import (Outcome, ProgressLog, progress_size, read_outcome, read_progress,
                                       run_reported)

__all__ = ["ATTEMPTS_DIR", "CONFIG_FILE", "CONSOLE_FILE", "CONTROL_DIR", "FINAL_EVENTS", "PROGRESS_FILE", "REQUESTS",
           "STOP_FILE", "TRAINING_ARGS_FILE", "ControlFiles", "Event", "Outcome", "ProgressLog", "archive_attempt",
           "atomic_write", "atomic_write_text", "capture_console", "clear_stop", "console_path", "console_tail",
           "control_dir", "is_step", "log_to_stdout", "progress_path", "progress_size", "read_outcome",
           "read_progress", "request", "request_stop", "run_reported", "write_config"]
