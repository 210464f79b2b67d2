"""Rectified flow beyond one model: couplings, reflow, distillation, straightness.

Liu, Gong & Liu 2022, "Flow Straight and Fast". Every genode model is a denoiser
D(x; σ), so the couplings (z, x = ODE_teacher(z)) can come from any teacher and sampler.

* `store`: the on-disk coupling store (`CouplingSettings`, `write_couplings`);
* `dataset`: `Couplings`, the stored pairs as a genode dataset, streamed from disk;
* `permutation`: `FeistelPermutation`, O(1)-per-row shuffling of N stored pairs;
"""
