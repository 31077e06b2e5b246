"""The model layer: token ids in, token ids out (loading, the engine and sampler, the remote backend)."""
