"""dglsp: an editor-autocomplete language server powered by block diffusion (DiffusionGemma)."""

__version__ = "0.1.0"
