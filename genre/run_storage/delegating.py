"""A pyarrow filesystem handler that hands every call to another filesystem: the base of genre's two
filesystems for Ray (run_storage.held, run_storage.whole_files), which each change a few calls only.

pyarrow ships no such pass-through handler: `PyFileSystem` needs every method of `FileSystemHandler`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs


class DelegatingHandler(pafs.FileSystemHandler):
    """Every call goes to `inner`; a subclass names it and overrides what it changes."""

    @property
    def inner(self) -> pafs.FileSystem:
        raise NotImplementedError

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path: str) -> None:
        self.inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.inner.copy_file(src, dest)

    # PyFileSystem decompresses and buffers around these itself: the inner streams are plain.
    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.inner.open_input_stream(path, compression=None)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.inner.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return self.inner.open_output_stream(path, compression=None, metadata=metadata)

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return self.inner.open_append_stream(path, compression=None, metadata=metadata)
