"""Loss and learning-rate charts over optimizer steps (Monitor, Compare runs).

Gradio's line plot draws lines only, so a run with one logged point was not drawn at all (an empty
chart, or a missing run among the compared ones); and its x axis started at a rounder number than the
first logged step, an empty tick before the first point. `StepPlot` draws points while any series has
a single one, with whole-number steps, and `plot_update` fits the x axis to the steps that are there."""
from __future__ import annotations

import gradio as gr
import pandas as pd


class StepPlot(gr.LinePlot):
    """A line plot over optimizer steps that shows a lone point as a point."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("x_axis_format", "d")  # steps are whole numbers: no "4.0, 5.0" ticks
        super().__init__(*args, **kwargs)

    def postprocess(self, value):
        data = super().postprocess(value)
        if data is not None and isinstance(value, pd.DataFrame) and not value.empty:
            counts = value.groupby(self.color).size() if self.color in value.columns else pd.Series([len(value)])
            if counts.min() < 2:  # one mark for every series: points, so the lone one shows
                data.mark = "point"
        return data


def plot_update(frame: pd.DataFrame, x: str = "step"):
    """The chart's new data with its x axis from the first to the last step shown (one step: around it)."""
    if frame.empty:
        return gr.update(value=frame)
    first, last = float(frame[x].min()), float(frame[x].max())
    return gr.update(value=frame, x_lim=[first, last] if last > first else [first - 1, last + 1])
