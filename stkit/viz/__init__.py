"""Figures of the kit, one module per topic; notebooks call these instead of plotting inline.

- :mod:`stkit.viz.stn`: affine grids, attended windows, STERN training and evaluation figures.
- :mod:`stkit.viz.deform`: deformable-attention sampling points, weights and op speed.
"""
