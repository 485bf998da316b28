"""stkit: a teaching and reproduction kit for two attention mechanisms in medical imaging.

- STERN (Rocha et al., AIIM 2024 / CBMS 2022): a spatial transformer crops a chest X-ray
  (scale + translation) before a classifier decides normal vs abnormal.
- STNet (Qin et al., MICCAI 2023): spatial-temporal deformable attention for lesion
  detection in ultrasound video.

The library holds models, losses, the deformable-attention op, training, evaluation and
figures; the numbered notebooks in ``notebooks/`` walk through them.
"""

__version__ = "0.1.0"
