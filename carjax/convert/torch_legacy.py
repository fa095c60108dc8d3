"""Reads PyTorch and safetensors weight files into numpy, without PyTorch.

Three formats, all to ``dict[name, np.ndarray]``:

* the legacy (non-zip) ``torch.save`` stream (PyTorch < 1.6, or
  ``_use_new_zipfile_serialization=False``): four pickles (magic number,
  protocol version, system info, the object with its storages as persistent
  ids), a pickled list of storage keys, then each storage's raw bytes preceded
  by its element count as an int64;
* the zip format (``<root>/data.pkl`` plus one ``<root>/data/<key>`` record per
  storage);
* safetensors (8-byte header length, JSON header, raw little-endian data).

The unpickler only resolves the handful of globals a state dict needs (tensor
rebuild functions, storage types, OrderedDict); anything else is refused, so
reading an untrusted file cannot execute code.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    'DoubleStorage': np.dtype('<f8'),
    'FloatStorage': np.dtype('<f4'),
    'HalfStorage': np.dtype('<f2'),
    'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
    'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'),
    'ShortStorage': np.dtype('<i2'),
    'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'),
    'BoolStorage': np.dtype('?'),
}

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    'F64': np.dtype('<f8'), 'F32': np.dtype('<f4'), 'F16': np.dtype('<f2'),
    'BF16': np.dtype(ml_dtypes.bfloat16), 'I64': np.dtype('<i8'),
    'I32': np.dtype('<i4'), 'I16': np.dtype('<i2'), 'I8': np.dtype('i1'),
    'U8': np.dtype('u1'), 'BOOL': np.dtype('?'),
}


class _StorageType:
  """Stands in for ``torch.FloatStorage`` & co.: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _Storage:
  """A storage whose bytes may only arrive after unpickling (legacy format)."""

  def __init__(self, dtype: np.dtype, data: np.ndarray | None = None):
    self.dtype = dtype
    self.data = data  # 1-D array of `dtype`, set once read


class _StorageView:
  """Legacy storages can be views (offset, size) into a root storage."""

  def __init__(self, root: _Storage, offset: int, size: int):
    self.root, self.offset, self.size = root, offset, size

  @property
  def data(self) -> np.ndarray:
    return self.root.data[self.offset:self.offset + self.size]


class _TensorRef:
  """A tensor to materialise once its storage bytes are known."""

  def __init__(self, storage, offset: int, shape: tuple[int, ...],
               strides: tuple[int, ...]):
    self.storage, self.offset = storage, offset
    self.shape, self.strides = tuple(shape), tuple(strides)

  def materialise(self) -> np.ndarray:
    flat = self.storage.data
    if not self.shape:
      return np.array(flat[self.offset])
    extent = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides)) + 1
    if min(self.shape) > 0 and extent > flat.size:
      raise ValueError(f'tensor of shape {self.shape} at offset {self.offset} '
                       f'overruns its storage of {flat.size} elements')
    return np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.shape,
        strides=[s * flat.itemsize for s in self.strides]).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # training-time state only
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state  # tensor subclass wrappers: keep the plain tensor
  return func(*args)


_ALLOWED_GLOBALS = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
    ('collections', 'OrderedDict'): collections.OrderedDict,
}


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a state dict, resolving storages through `load_storage`."""

  def __init__(self, file: BinaryIO, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f'refusing to load {module}.{name}: not part of a plain state dict')

  def persistent_load(self, pid: Any) -> Any:
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    return self._load_storage(*pid[1:])


def _materialise(obj: Any) -> Any:
  if isinstance(obj, _TensorRef):
    return obj.materialise()
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _load_legacy(path: str) -> Any:
  with open(path, 'rb') as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise ValueError(f'{path}: not a legacy torch.save file (bad magic number)')
    if pickle.load(f) != _LEGACY_PROTOCOL:
      raise ValueError(f'{path}: unsupported legacy torch protocol version')
    sys_info = pickle.load(f)
    if not sys_info.get('little_endian', True):
      raise ValueError(f'{path}: big-endian torch files are not supported')

    roots: dict[str, _Storage] = {}

    def load_storage(storage_type, root_key, location, numel, view_metadata):
      del location, numel  # the element count is repeated before the bytes
      if root_key not in roots:
        roots[root_key] = _Storage(storage_type.dtype)
      root = roots[root_key]
      if view_metadata is None:
        return root
      _, view_offset, view_size = view_metadata
      return _StorageView(root, view_offset, view_size)

    obj = _TorchUnpickler(f, load_storage).load()
    storage_keys = pickle.load(f)
    for key in storage_keys:
      storage = roots[key]
      (numel,) = struct.unpack('<q', f.read(8))
      nbytes = numel * storage.dtype.itemsize
      raw = f.read(nbytes)
      if len(raw) != nbytes:
        raise ValueError(f'{path}: truncated storage {key!r}')
      storage.data = np.frombuffer(raw, dtype=storage.dtype)
  return _materialise(obj)


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one data.pkl in the torch zip archive')
    root = pickles[0][:-len('data.pkl')]
    byteorder_name = root + 'byteorder'
    if (byteorder_name in archive.namelist() and
        archive.read(byteorder_name).decode().strip() != 'little'):
      raise ValueError(f'{path}: big-endian torch files are not supported')

    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel):
      del location
      if key not in storages:
        data = np.frombuffer(archive.read(f'{root}data/{key}'),
                             dtype=storage_type.dtype)
        if data.size != numel:
          raise ValueError(f'{path}: storage {key} has {data.size} elements, '
                           f'expected {numel}')
        storages[key] = _Storage(storage_type.dtype, data)
      return storages[key]

    with archive.open(pickles[0]) as f:
      return _materialise(_TorchUnpickler(f, load_storage).load())


def _tensor_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
  """The flat name -> array dict in a loaded object (state dict or checkpoint)."""
  if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    return dict(obj)
  if isinstance(obj, dict):
    for key in ('state_dict', 'model', 'model_state_dict', 'ema'):
      if key in obj:
        return _tensor_dict(obj[key], path)
  raise ValueError(f'{path}: no state dict (a dict of tensors) found; '
                   f'top-level object is {type(obj).__name__}')


def read_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``torch.save``d state dict (legacy or zip format) into numpy."""
  path = os.fspath(path)
  obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  return _tensor_dict(obj, path)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a safetensors file into numpy (no dependency on the package)."""
  with open(path, 'rb') as f:
    (header_size,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_size))
    data = f.read()
  tensors = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    dtype = _SAFETENSORS_DTYPES.get(info['dtype'])
    if dtype is None:
      raise ValueError(f'{path}: tensor {name!r} has unsupported dtype {info["dtype"]}')
    begin, end = info['data_offsets']
    shape = tuple(info['shape'])
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise ValueError(f'{path}: tensor {name!r} byte range does not match its shape')
    tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).copy()
  return tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
  """Writes numpy arrays as safetensors (used by tests and tools)."""
  names = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}
  header, chunks, offset = {}, [], 0
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    raw = array.astype(array.dtype.newbyteorder('<')).tobytes()
    header[name] = dict(dtype=names[array.dtype.newbyteorder('<')],
                        shape=list(array.shape),
                        data_offsets=[offset, offset + len(raw)])
    chunks.append(raw)
    offset += len(raw)
  encoded = json.dumps(header).encode()
  encoded += b' ' * (-len(encoded) % 8)  # the format aligns data to 8 bytes
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(encoded)))
    f.write(encoded)
    for raw in chunks:
      f.write(raw)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torch (legacy or zip) or safetensors file, chosen by content."""
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    return read_torch_file(path)
  with open(path, 'rb') as f:
    head = f.read(9)
  # safetensors: an 8-byte header length, then a JSON object. (A legacy torch
  # file starts with a pickle whose 9th byte is inside its magic number.)
  if len(head) == 9 and head[8:9] == b'{' and (
      struct.unpack('<Q', head[:8])[0] < os.path.getsize(path)):
    return read_safetensors(path)
  return read_torch_file(path)
