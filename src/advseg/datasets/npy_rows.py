"""Rows of .npy files written and read with plain file I/O: the prepared dataset's storage.

A prepared dataset can be larger than memory: :class:`NpyWriter` appends rows as they come, and
:class:`NpyRows` reads the rows a job asks for without mapping the file, so a training job that
goes through every slice each epoch keeps its resident memory at one batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CHUNK_BYTES = 64 << 20  # how much is copied or hashed at once


class NpyWriter:
    """Appends rows to a .npy file of known shape with plain writes (no memory map, no full copy)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.handle = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.handle, header)
        self.rows, self.digest = 0, hashlib.sha256()

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {rows.shape} do not fit an array of {self.shape}")
        self.handle.write(rows.data)
        self.digest.update(rows.data)
        self.rows += len(rows)

    def close(self) -> str:
        self.handle.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written, {self.shape[0]} expected")
        return self.digest.hexdigest()


def rows_per_chunk(row_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


class NpyRows:
    """Rows of a .npy file read with plain file reads.

    Unlike indexing a memory map, the pages read are not mapped into the process, so a
    training job that goes through every slice each epoch keeps its resident memory at
    one batch, not at the size of the training set.
    """

    def __init__(self, path: Path, shape: tuple[int, ...] | None = None, dtype=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: missing; rerun 'advseg download' (delete the prepared directory)")
        try:
            with open(self.path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                found_shape, fortran_order, found_dtype = read_header(handle)
                self.offset = handle.tell()
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise ValueError(f"{self.path}: not a readable .npy array ({error})") from None
        if fortran_order or found_dtype.hasobject:
            raise ValueError(f"{self.path}: not a C-ordered numeric array")
        if shape is not None and tuple(found_shape) != tuple(shape):
            raise ValueError(f"{self.path}: array of shape {tuple(found_shape)}, expected {tuple(shape)}")
        if dtype is not None and found_dtype != np.dtype(dtype):
            raise ValueError(f"{self.path}: array of {found_dtype}, expected {np.dtype(dtype)}")
        self.shape, self.dtype = tuple(found_shape), found_dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + (self.shape[0] if self.shape else 1) * self.row_bytes
        actual = self.path.stat().st_size
        if actual != expected:
            raise ValueError(f"{self.path}: {actual} bytes, expected {expected} "
                             f"({'truncated' if actual < expected else 'trailing data'}); rerun 'advseg download'")

    def load(self, mmap: bool) -> np.ndarray:
        return np.load(self.path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (any order, repeats allowed), each contiguous run read at once."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"{self.path}: rows outside [0, {self.shape[0]})")
        run_starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        run_ends = np.append(run_starts[1:], len(rows))
        view = out.reshape(len(rows), -1).view(np.uint8)
        with open(self.path, "rb", buffering=0) as handle:
            for start, end in zip(run_starts, run_ends):
                handle.seek(self.offset + int(rows[start]) * self.row_bytes)
                target = memoryview(view[start:end]).cast("B")
                read = 0
                while read < len(target):
                    count = handle.readinto(target[read:])
                    if not count:
                        raise ValueError(f"{self.path}: ends early; rerun 'advseg download'")
                    read += count
        return out
