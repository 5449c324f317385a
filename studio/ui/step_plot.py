"""Loss and learning-rate charts over optimizer steps (Monitor, Compare runs).

Gradio's line plot draws lines only, so a run with one logged point was not drawn at all (an empty
chart, or a missing run among the compared ones); and its x axis started at a rounder number than the
first logged step, an empty tick before the first point. `StepPlot` draws points while any series has
a single one, with whole-number steps, and `plot_update` fits the x axis to the steps that are there."""
from __future__ import annotations

import gradio as gr
import pandas as pd

STEP_AXIS = {"x": "step", "x_title": "optimizer step", "x_axis_format": "d"}  # whole steps: no "4.0" ticks


def has_lone_point(frame: pd.DataFrame, color: str | None) -> bool:
    """True when a series (or the only one) has a single point: a line would not show it."""
    if frame.empty:
        return False
    counts = frame.groupby(color).size() if color in frame.columns else pd.Series([len(frame)])
    return bool(counts.min() < 2)


class StepPlot(gr.LinePlot):
    """A line plot over optimizer steps that shows a lone point as a point. (No __init__ of its own:
    Gradio reads a component's settings from its constructor's signature.) Give it STEP_AXIS."""

    def postprocess(self, value):
        data = super().postprocess(value)
        if data is not None and isinstance(value, pd.DataFrame) and has_lone_point(value, self.color):
            data.mark = "point"  # one mark for every series: points, so the lone one shows
        return data


def plot_update(frame: pd.DataFrame, color: str | None = None, x: str = "step"):
    """The chart's new data with its x axis from the first to the last step shown; with points, a
    margin so the first and last are not cut in half (a single step: one step either side)."""
    if frame.empty:
        return gr.update(value=frame)
    first, last = float(frame[x].min()), float(frame[x].max())
    margin = max(1.0, (last - first) * 0.03) if has_lone_point(frame, color) or last == first else 0.0
    return gr.update(value=frame, x_lim=[first - margin, last + margin])
