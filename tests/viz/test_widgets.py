"""The explorer draws one figure per slider update."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from stkit.viz.widgets import explore  # noqa: E402


def test_one_figure_per_update():
    calls = []

    def render(a=0.5, kind="x"):
        calls.append((a, kind))
        fig, ax = plt.subplots()
        ax.plot([0, a])
        return fig

    plt.close("all")
    interactive = explore(render, a=(0.0, 1.0, 0.1), kind=["x", "y"]).widget
    slider = interactive.children[0]
    assert (slider.value, slider.min, slider.max) == (0.5, 0.0, 1.0)  # starts at the render's default
    plt.close("all")
    slider.value = 0.8  # one update
    assert calls[-1] == (0.8, "x")
    # ipywidgets shows every figure the callback drew, then displays the returned value too:
    # the wrapper must return nothing, and the callback must draw exactly one figure.
    assert interactive.result is None
    assert len(plt.get_fignums()) == 1
