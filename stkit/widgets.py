"""ipywidgets explorers around the kit's pure ``render_*`` functions.

Notebooks call a ``render_*`` function once directly (so a headless run sees any error),
then, only when INTERACTIVE, wrap the same function in sliders with :func:`explore`.
ipywidgets swallows exceptions raised inside its callbacks, so nothing that must be
checked may happen only here.
"""

from __future__ import annotations


def explore(render, fixed: dict | None = None, **controls):
    """``ipywidgets.interact`` over ``render``.

    ``controls`` map argument names to ``(min, max, step)`` tuples (float sliders) or to
    lists (dropdowns); ``fixed`` holds arguments that are passed unchanged (images, models).
    """
    import inspect

    import ipywidgets as w

    defaults = {n: p.default for n, p in inspect.signature(render).parameters.items() if p.default is not inspect.Parameter.empty}

    fixed = {k: w.fixed(v) for k, v in (fixed or {}).items()}
    sliders = {}
    for name, spec in controls.items():
        if isinstance(spec, tuple) and len(spec) == 3:
            lo, hi, step = spec
            value = min(max(defaults.get(name, lo), lo), hi)
            sliders[name] = w.FloatSlider(value=value, min=lo, max=hi, step=step, continuous_update=False, description=name)
        else:
            sliders[name] = spec
    return w.interact(render, **fixed, **sliders)
