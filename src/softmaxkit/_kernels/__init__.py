"""Private Numba kernels.  They see C-contiguous (or strided) rows and never validate."""
