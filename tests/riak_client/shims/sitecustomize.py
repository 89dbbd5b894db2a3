"""Import-time shims that let the unmodified `riak` 2.7.0 client (written for
Python 2.7 and 3.3-3.5) import and run on Python 3.11. Loaded by the harness
through PYTHONPATH; nothing in the library's files is changed.

1. `collections.Iterable`, `collections.Mapping`, ... were aliases of
   `collections.abc.*` until Python 3.10 removed them; riak.mapreduce
   (`from collections import Iterable`) and riak.util
   (`from collections import Mapping`) still import them from `collections`.
2. `collections.namedtuple(..., verbose=False)`: the `verbose` argument was
   removed in Python 3.7; riak.codecs passes it.
3. `mimetypes` reads only Python's built-in table, not the machine's
   /etc/mime.types: RiakBucket.new_from_file guesses the content type with
   mimetypes, and KVFileTests expect README.md to have none (so
   application/octet-stream), which Debian's mime-support breaks by mapping
   .md to text/markdown. This keeps the guess the same on every machine.

Nothing else is needed on 3.11: `cgi` (riak.codecs.http, riak.transports.http
.stream) and `distutils` (riak.transports.feature_detect) still exist there,
with a DeprecationWarning; on 3.12 `distutils` comes only from setuptools'
shim and on 3.13 `cgi` is gone (the harness refuses Python >= 3.12).
"""
import collections
import collections.abc
import mimetypes

for _name in ("Callable", "Container", "Hashable", "Iterable", "Iterator",
              "Mapping", "MutableMapping", "MutableSequence", "MutableSet",
              "Sequence", "Set", "Sized"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

_namedtuple = collections.namedtuple


def _namedtuple_without_verbose(*args, verbose=False, **kwargs):
    return _namedtuple(*args, **kwargs)


if "verbose" not in _namedtuple.__code__.co_varnames:
    collections.namedtuple = _namedtuple_without_verbose

mimetypes.knownfiles = []
