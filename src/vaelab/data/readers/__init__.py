"""Readers: one file format each (IDX, image folders, .npy/.npz arrays, CSV/TSV tables) -> `RawData`.

The readers are independent of each other; they share only `vaelab.data.types`.
"""
