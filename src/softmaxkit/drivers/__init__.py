"""Drivers: how a public function's work is carried out for one kind of input.

``eager`` (NumPy arrays in memory), ``stream`` (files and iterables larger than
memory), ``dask`` (Dask arrays, one module per family) and ``array_api`` (any
Array API namespace).  Drivers call the Numba kernels in :mod:`softmaxkit._kernels`;
they never import the public layer.
"""
