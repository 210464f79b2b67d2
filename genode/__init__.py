"""genode: generative ODEs in JAX."""

__version__ = "0.1.0"
