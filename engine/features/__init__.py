"""Feature extraction: numba kernels per stream kind behind typed wrappers.

Contract (used by the pipeline, the benchmarks and the evaluation):

- ``feature_names(stream, machine) -> tuple[str, ...]``: the fixed, named order of the
  features of one stream (names without the stream prefix, e.g. ``"rms"``, ``"env_bpfo"``).
- ``make_extractor(stream, machine) -> FeatureExtractor`` with
  ``names``, ``compute(values, shaft_hz, out) -> bool`` (one window; ``values`` shape
  ``(window_samples,)`` or ``(window_samples, channels)``; writes ``len(names)`` float64 into
  ``out``; returns False when the window held NaN/inf, in which case ``out`` is NaN) and
  ``compute_batch(windows, shaft_hz, out) -> ok`` (``windows`` shape ``(n, window_samples)`` or
  ``(n, window_samples, channels)``, ``shaft_hz`` shape ``(n,)``, ``out`` shape ``(n, n_features)``,
  ``ok`` a bool array ``(n,)``).
- ``warmup(stream, machine)`` compiles every kernel a stream needs on a dummy window (including
  read-only input arrays), so no sensor sample ever waits for the compiler.
"""
