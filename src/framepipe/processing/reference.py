"""Reference images from a file (a dark, a flat, a phase-correlation reference): a NumPy
``.npy`` array, or an HDF5 dataset (a framepipe frames file by default), averaged over its
frames or one frame of it. Read once, in a processor's ``setup``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

#: the frames of a framepipe frames file (docs/hdf5-layout.md)
FRAMES_DATASET = "entry/data/frames"
HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".hdf")


def load_reference(path: str | Path, dataset: str = FRAMES_DATASET, index: int | None = None) -> np.ndarray:
    """The image of ``path`` as float32 (H, W): a 3-D stack gives frame ``index``, or the
    mean of all its frames when ``index`` is None. ValueError says what is wrong, with the path."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read: {e}") from None
    elif path.suffix.lower() in HDF5_SUFFIXES:
        import hdf5plugin  # noqa: F401  (compressed frames files)

        try:
            with h5py.File(path, "r") as h5:
                if dataset not in h5:
                    raise ValueError(f"{path}: no dataset {dataset!r}")
                dset = h5[dataset]
                if dset.ndim == 3 and index is not None:
                    if not 0 <= index < dset.shape[0]:
                        raise ValueError(f"{path}: {dataset} has {dset.shape[0]} frames, no frame {index}")
                    data = dset[index]
                elif dset.ndim == 3:
                    if dset.shape[0] == 0:
                        raise ValueError(f"{path}: {dataset} holds no frame")
                    total = np.zeros(dset.shape[1:], np.float64)
                    for k in range(dset.shape[0]):  # one frame at a time: bounded memory
                        total += dset[k]
                    data = total / dset.shape[0]
                else:
                    data = dset[()]
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {' '.join(str(e).split())}") from None
    else:
        raise ValueError(f"{path}: expected a .npy or HDF5 (.h5) file")
    data = np.asarray(data)
    if data.ndim == 3 and index is None and path.suffix.lower() == ".npy":
        data = data.mean(axis=0)
    elif data.ndim == 3 and path.suffix.lower() == ".npy":
        data = data[index]
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"{path}: a reference is a real 2-D image, this is {data.dtype}{data.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)
