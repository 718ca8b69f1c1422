"""A job's loss and reward-accuracy curves as an inline SVG, drawn on the server.

Gradio's LinePlot (Vega) kept the types it inferred from its first, empty value: the series column
became a number, so lines were never drawn and empty axes read "Infinity". An SVG built here
depends on nothing in the page, redraws cheaply on every poll, and says so when there is nothing
to draw yet. Each series gets its own panel: loss has no fixed range, accuracy lies in [0, 1].
"""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 360, 180
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 24, 30
COLOURS = {"loss": "#e8590c", "reward accuracy": "#1c7ed6", "mean reward": "#2f9e44"}


def curves(events: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points per series from the progress events of a run."""
    series: dict[str, list[tuple[int, float]]] = {"loss": [], "reward accuracy": [], "mean reward": []}
    for event in events:
        if event.get("event") != "step" or event.get("step") is None:
            continue
        metrics = event.get("metrics") or {}
        accuracy = metrics.get("rewards/accuracies", metrics.get("accuracy"))
        reward = metrics.get("reward/mean")  # online RL (PPO, GRPO)
        for name, value in (("loss", event.get("loss")), ("reward accuracy", accuracy), ("mean reward", reward)):
            if isinstance(value, (int, float)):
                series[name].append((int(event["step"]), float(value)))
    return series


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / 4 for i in range(5)]


def _tick_labels(ticks: list[float]) -> list[str]:
    """The shortest labels that tell the ticks apart (a loss near 0.693 moves in the 4th digit)."""
    for digits in range(3, 9):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _panel(name: str, points: list[tuple[int, float]], fixed: tuple[float, float] | None) -> str:
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = fixed or (min(values), max(values))
    if y1 - y0 < 1e-9:  # a flat line: give it some room
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(step: float) -> float:
        return LEFT + (step - x0) / (x1 - x0) * plot_w

    def y(value: float) -> float:
        return TOP + (1 - (value - y0) / (y1 - y0)) * plot_h

    colour = COLOURS.get(name, "#495057")
    parts = [f'<svg class="ps-plot" data-series="{escape(name)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(name)} by step">',
             f'<text x="{LEFT}" y="15" class="ps-plot-title" fill="{colour}">{escape(name)}</text>']
    ticks = _ticks(y0, y1)
    for tick, label in zip(ticks, _tick_labels(ticks)):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="currentColor" stroke-opacity="0.15"/>'
                     f'<text x="{LEFT - 4}" y="{y(tick) + 3:.1f}" text-anchor="end" font-size="9" '
                     f'fill="currentColor">{label}</text>')
    for step in sorted({round(t) for t in _ticks(min(steps), max(steps))}):
        parts.append(f'<text x="{x(step):.1f}" y="{HEIGHT - 12}" text-anchor="middle" font-size="9" '
                     f'fill="currentColor">{step}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 1}" text-anchor="middle" font-size="9" '
                 f'fill="currentColor">step</text>')
    coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
    parts.append(f'<polyline class="ps-line" points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.extend(f'<circle class="ps-point" cx="{x(s):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                 f'<title>step {s}: {v:.4g}</title></circle>' for s, v in points)
    parts.append("</svg>")
    return "".join(parts)


def plot_html(events: list[dict]) -> str:
    """The panels for the series that have points, or a line saying none were logged yet."""
    series = curves(events)
    panels = [_panel(name, points, (0.0, 1.0) if name == "reward accuracy" else None)
              for name, points in series.items() if points]
    if not panels:
        return '<div class="ps-plot-empty">Loss and reward accuracy appear here after the first training step.</div>'
    return f'<div class="ps-plots" style="display:flex;flex-wrap:wrap;gap:12px">{"".join(panels)}</div>'
