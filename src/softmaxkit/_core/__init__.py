"""Shared internals of the public layer: argument validation, output buffers,
the (max, sum) state helpers, loss argument handling and ``.npy`` file I/O."""
