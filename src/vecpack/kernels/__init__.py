"""Numba kernels: pure functions over arrays, no vecpack imports."""
