"""Datasets published as one ``.tar.gz`` that the user downloads and extracts (CIFAR-10,
STL-10): where the data lives by default, how to get it, and the extracted folder found
from a root that is either the extraction target or that folder itself. Nothing is
downloaded here; what is missing is one :class:`UserError` saying how to get it."""
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.paths import cache_dir

__all__ = ["DatasetArchive"]


@dataclass(frozen=True)
class DatasetArchive:
    """``name``: the dataset in messages; ``url`` / ``size``: the archive and its size as
    told to the user; ``cache_name``: the default root is ``cache_dir('data', cache_name)``;
    ``folder``: what extracting creates; ``markers``: files any one of which marks it."""
    name: str
    url: str
    size: str
    cache_name: str
    folder: str
    markers: tuple

    @property
    def archive_name(self):
        return self.url.rsplit("/", 1)[-1]

    def default_root(self):
        """``cache_dir('data', cache_name)``, used when no root is given."""
        return cache_dir("data", self.cache_name)

    def root(self, root=None):
        return Path(root) if root is not None else self.default_root()

    def download_instructions(self, root=None):
        """How to get the data (no download happens here)."""
        root = self.root(root)
        return (f"download {self.url} ({self.size}) and extract it into {root}, e.g. "
                f"`mkdir -p {root} && curl -L {self.url} | tar xz -C {root}`, "
                f"which creates {root / self.folder}/")

    def find_folder(self, root=None):
        """The extracted folder for ``root`` (which may be that folder)."""
        root = self.root(root)
        for candidate in (root / self.folder, root):
            if any((candidate / marker).is_file() for marker in self.markers):
                return candidate
        archive = root / self.archive_name
        if archive.is_file():
            raise UserError(f"{root} holds {self.archive_name} but it is not extracted; "
                            f"run `tar xzf {archive} -C {root}`")
        raise UserError(f"{self.name} not found under {root}: "
                        f"{self.download_instructions(root)}")

    def check_extracted(self, *paths):
        """One error naming the first of ``paths`` that is missing (and the others missing)
        when the extracted folder lacks any of them."""
        missing = [p for p in paths if not p.is_file()]
        if missing:
            also = f" (nor {', '.join(p.name for p in missing[1:])})" if missing[1:] else ""
            raise UserError(f"{missing[0]}: no such file{also}; the extraction is incomplete: "
                            + self.download_instructions(missing[0].parent.parent))

    def check_split_and_layout(self, split, layout):
        """The labelled ``train`` / ``test`` split, images ``NCHW`` or ``NHWC``."""
        if split not in ("train", "test"):
            raise UserError(f"unknown {self.name} split {split!r}; use 'train' or 'test'")
        if layout not in ("NCHW", "NHWC"):
            raise UserError(f"unknown layout {layout!r}; use 'NCHW' or 'NHWC'")
