"""Reading a PyTorch state dict saved in the legacy (pre-zip) `torch.save` format, without torch.

The file is a sequence of pickles: a magic number, a protocol version, system
information, then the state dict itself, whose tensors refer to storages by a
persistent id, then the list of storage keys; after that, for each key in that
order, an int64 element count and the storage's raw little-endian data.

A tensor is a view of its storage with its own offset, shape and strides: a
tensor that was permuted before saving is not contiguous, so each one is read
through its strides (`numpy.lib.stride_tricks.as_strided`) and then copied.
"""

import collections
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _TensorRef:
    """A tensor not yet read: which storage, where in it, and how it is laid out."""

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, tuple(shape), tuple(strides)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Builds only what a state dict holds; anything else in the file is refused, never imported."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, element count[, view metadata])
        _, storage_type, key, *unused = pid
        return (key, STORAGE_DTYPES[storage_type])


def read_state_dict(path):
    """{name: numpy array} from a legacy-format `.pth` file.

    Raises:
        ValueError: the file is not a legacy-format PyTorch state dict, or is truncated.
    """
    with open(path, "rb") as handle:
        try:
            if pickle.load(handle) != MAGIC_NUMBER or pickle.load(handle) != PROTOCOL_VERSION:
                raise ValueError(f"{path}: not a legacy-format PyTorch file")
            pickle.load(handle)  # System information: little-endian, type sizes.
            state = _Unpickler(handle).load()
            keys = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a readable PyTorch state dict ({error})") from None
        dtypes = dict(ref.storage for ref in state.values())
        storages = {}
        for key in keys:
            dtype = dtypes[key]
            (count,) = struct.unpack("<q", handle.read(8))
            data = handle.read(count * np.dtype(dtype).itemsize)
            if len(data) != count * np.dtype(dtype).itemsize:
                raise ValueError(f"{path}: truncated (storage {key})")
            storages[key] = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    arrays = {}
    for name, ref in state.items():
        storage = storages[ref.storage[0]]
        itemsize = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset :], shape=ref.shape, strides=[s * itemsize for s in ref.strides], writeable=False
        )
        arrays[name] = np.array(view)  # A contiguous copy in the tensor's own (logical) layout.
    return arrays
