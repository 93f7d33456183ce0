"""Constants of the SOR solver, shared by the torch, Triton and compiled CPU paths (one owner)."""
from __future__ import annotations

#: SOR over-relaxation factor (Coarse2Fine's).
OMEGA = 1.8
#: 0.001**2, the regulariser of both the data and the smoothness penalty.
EPS2 = 1e-6
#: Extra diagonal term of the increment system, times alpha.
PROX = 0.05
# Which checkerboard colour a red-black sweep updates first. Chosen by measurement on the reference
# pairs: odd pixels ((i+j) odd) first gives mean EPE 0.004967 averaged over the 14 pair-directions
# against 0.004990 for even first; alternating the order between sweeps is far worse (0.127).
FIRST_COLOUR = 1
