"""Loss and learning-rate charts over optimizer steps (Monitor, Compare runs).

Gradio's line plot draws lines only, so a run with one logged point showed an empty chart; and its
x axis started at 0, an empty stretch before the first logged step. `StepPlot` draws points while no
series has two yet, and `plot_update` fits the x axis to the steps that are there."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from gradio.events import Dependency

class StepPlot(gr.LinePlot):
    """A line plot over optimizer steps that shows a lone point as a point. (No __init__ of its own:
    Gradio reads a component's settings from its constructor's signature.) Give it STEP_AXIS."""

    def postprocess(self, value):
        data = super().postprocess(value)
        if data is not None and isinstance(value, pd.DataFrame) and has_lone_point(value, self.color):
            data.mark = "point"  # one mark for every series: points, so the lone one shows
        return data
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def plot_update(frame: pd.DataFrame, x: str = "step"):
    """The chart's new data with its x axis from the first to the last step shown (one step: around it)."""
    if frame.empty:
        return gr.update(value=frame)
    first, last = float(frame[x].min()), float(frame[x].max())
    return gr.update(value=frame, x_lim=[first, last] if last > first else [first - 1, last + 1])