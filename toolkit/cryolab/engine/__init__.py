"""The likelihood engine: one iteration as pure functions of arrays (NumPy or CuPy).

Data path of one iteration (see docs/architecture.md):

* :mod:`.forward` — the forward model ``scale * C * shift(P(V M))`` of a particle and its residual;
* :mod:`.images` — particle images to the Fourier pixels the likelihood uses (mask, FFT, shift, CTF);
* :mod:`.planar`, :mod:`.spherical` — samplers: 2D in-plane angles, 3D HEALPix directions x psi
  (global, local around a prior, fixed poses); they project references and insert M-step sums;
* :mod:`.estep`, :mod:`.expectation` — scores as GEMMs, posterior weights, adaptive oversampling;
* :mod:`.mstep` — weighted sums per orientation, residual power, noise and signal spectra;
* :mod:`.driver` — the E-step over particles in batches (:class:`.driver.EStepWorker`,
  :func:`.driver.estep_chunk`) accumulating :class:`.driver.EStepSums`;
* :mod:`.batches` — one E-step's batches in this process or shared among forked worker
  processes (:mod:`.processes`); :mod:`.threads` — the engine's threads and the cores' shares;
* :mod:`.update` — the M-step's finish (:func:`.update.m_step`): new references, noise spectrum,
  class priors, offset prior;
* :mod:`.initial` — starting noise spectrum and reference-free 2D averages;
* :mod:`.memory` — the batch size that fits a memory budget.
"""
