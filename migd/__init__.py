"""migd: an emulated Linux page-migration engine with batch copy and copy offload."""

import hashlib
import importlib.util
import os
from pathlib import Path


def _key_numba_cache_by_source() -> None:
    """Point numba's on-disk cache at a directory named by a hash of migd's
    sources and where they are.

    numba checks a cached function against its own file only, not against the
    compiled helpers it calls from other modules; after an edit such a stale
    entry can crash the process.  fusepy's module is hashed too: the tree's
    compiled callbacks bake its structs' offsets.  And the package's
    directory: numba files a kernel under a hash of its source file's path, so
    a second clone of the same sources compiles everything again, and must not
    find the first one's mark of a complete warm-up (its start was silent and
    without the compile child: 10.3 s).  Hashing ~60 small files costs ~2 ms
    at import.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    # abspath, not resolve(): numba keys its files by os.path.abspath, so a
    # path through a symlink is another set of kernels to it
    digest = hashlib.sha1(os.path.dirname(os.path.abspath(__file__)).encode())
    fusepy = importlib.util.find_spec("fuse")
    for path in [*sorted(Path(__file__).parent.rglob("*.py")),
                 *([Path(fusepy.origin)] if fusepy and fusepy.origin else [])]:
        digest.update(path.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ["NUMBA_CACHE_DIR"] = str(base / "migd" / f"numba-{digest.hexdigest()[:16]}")


_key_numba_cache_by_source()
