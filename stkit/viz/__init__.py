"""Figures of the kit, one module per topic; notebooks call these instead of plotting inline.

- :mod:`stkit.viz.stn`: affine grids, attended windows, STERN training and evaluation figures.
- :mod:`stkit.viz.deform`: deformable-attention sampling points, weights and op speed.
- :mod:`stkit.viz.video`: BUV clips frame by frame, contact sheets, lesion contrast per frame.
- :mod:`stkit.viz.common`: the drawing conventions they share (images, pixel-edge boxes).
"""
