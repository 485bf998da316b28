"""Figures of the kit, one module per topic; notebooks call these instead of plotting inline.

- :mod:`stkit.viz.stn`: affine grids, attended windows, STERN evaluation figures.
- :mod:`stkit.viz.deform`: deformable-attention sampling points, weights and op speed.
- :mod:`stkit.viz.stnet`: STNet detections over a clip, one decoder query's sampling points on every frame, inference speed.
- :mod:`stkit.viz.paper`: the papers' numbers beside this run's (notebook 06).
- :mod:`stkit.viz.video`: BUV clips frame by frame, contact sheets, lesion contrast per frame.
- :mod:`stkit.viz.common`: the drawing conventions they share (images, pixel-edge boxes) and training curves.
- :mod:`stkit.viz.widgets`: ipywidgets controls around a notebook's ``render_*`` function.

Figures only: nothing here computes a reported number or imports ``stkit.report`` or an
experiment module (a test keeps it so).
"""
