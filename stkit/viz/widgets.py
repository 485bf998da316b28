"""ipywidgets explorers around the kit's pure ``render_*`` functions.

Notebooks call a ``render_*`` function once directly (so a headless run sees any error),
then, only when INTERACTIVE, wrap the same function in sliders with :func:`explore`.
ipywidgets swallows exceptions raised inside its callbacks, so nothing that must be
checked may happen only here. Images, models and other fixed inputs reach the render
function through a closure or ``functools.partial``, not through the controls.
"""

from __future__ import annotations

import inspect


def _controls(render, controls: dict) -> dict:
    """``(min, max, step)`` tuples -> float sliders starting at the render's default; lists -> dropdowns."""
    import ipywidgets as w

    defaults = {n: p.default for n, p in inspect.signature(render).parameters.items() if p.default is not inspect.Parameter.empty}
    out = {}
    for name, spec in controls.items():
        if isinstance(spec, tuple) and len(spec) == 3:
            lo, hi, step = spec
            value = min(max(defaults.get(name, lo), lo), hi)
            out[name] = w.FloatSlider(value=value, min=lo, max=hi, step=step, continuous_update=False, description=name)
        else:
            out[name] = spec
    return out


def explore(render, **controls):
    """``ipywidgets.interact`` over ``render`` with one figure per update.

    ``render`` returns a matplotlib figure; the inline backend already shows every figure
    a callback draws, so the wrapper returns nothing (``interact`` would show the returned
    figure a second time).
    """
    import functools

    import ipywidgets as w

    @functools.wraps(render)
    def draw(**kwargs) -> None:
        render(**kwargs)

    return w.interact(draw, **_controls(render, controls))
