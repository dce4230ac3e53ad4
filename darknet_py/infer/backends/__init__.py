"""Network backends of the inference pipeline (see :mod:`.base`)."""
