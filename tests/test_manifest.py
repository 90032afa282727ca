"""Reading a dataset's manifest: a damaged one is one clear error, not a KeyError later."""

import json

import pytest

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import FORMAT_VERSION, MANIFEST_NAME, read_manifest


def _complete() -> dict:
    """The keys genre reads, in the shapes `prepare` writes them."""
    return {
        "format_version": FORMAT_VERSION,
        "features": {"sample_rate": 22050},
        "labels": {"0": "rock"},
        "split": {"protocol": "track"},
        "counts": {"train": {"tracks": 1, "segments": 10}},
        "shards": {"train": []},
    }


def _write(folder, manifest) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_complete_manifest_is_read_as_written(tmp_path):
    _write(tmp_path, _complete())
    assert read_manifest(tmp_path) == _complete()


def test_a_manifest_lacking_keys_names_them_and_says_to_prepare_again(tmp_path):
    _write(tmp_path, {"format_version": FORMAT_VERSION})
    expected = r"lacks 'features', 'labels', 'split', 'counts', 'shards': prepare the dataset again$"
    with pytest.raises(UserInputError, match=expected):
        read_manifest(tmp_path)


def test_a_manifest_lacking_one_key_names_only_that_one(tmp_path):
    manifest = _complete()
    del manifest["counts"]
    _write(tmp_path, manifest)
    with pytest.raises(UserInputError, match=r"lacks 'counts': prepare the dataset again"):
        read_manifest(tmp_path)


def test_a_manifest_key_of_the_wrong_shape_is_named(tmp_path):
    _write(tmp_path, {**_complete(), "labels": ["rock"]})
    with pytest.raises(
        UserInputError, match=r"has 'labels' that should be JSON objects: prepare the dataset again"
    ):
        read_manifest(tmp_path)


def test_a_manifest_that_is_not_a_json_object_says_to_prepare_again(tmp_path):
    _write(tmp_path, [1, 2, 3])
    with pytest.raises(
        UserInputError, match=r"is not a manifest \(expected a JSON object\): prepare the dataset"
    ):
        read_manifest(tmp_path)
