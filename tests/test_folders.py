import os

import pytest
from conftest import write_class_tree

from imgclf import folders
from imgclf.cli import UsageError


def test_classes_are_sorted_subfolders_without_junk(tmp_path):
    write_class_tree(tmp_path, ["zebra", "Apple", "mango"], per_class=1)
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / ".hidden").mkdir()
    assert folders.list_classes(tmp_path) == ["Apple", "mango", "zebra"]


def test_scan_lists_nested_files_and_skips_os_droppings(tmp_path):
    write_class_tree(tmp_path, ["a", "b"], per_class=2)
    nested = tmp_path / "a" / "more"
    nested.mkdir()
    (nested / "deep.jpg").write_bytes(b"x")
    for junk in (".DS_Store", "._img_0.jpg", "Thumbs.db"):
        (tmp_path / "a" / junk).write_bytes(b"junk")
    (tmp_path / "b" / "__MACOSX").mkdir()
    (tmp_path / "b" / "__MACOSX" / "img.jpg").write_bytes(b"junk")
    paths, labels, classes = folders.scan_class_folders(tmp_path)
    assert classes == ["a", "b"]
    assert [os.path.relpath(p, tmp_path) for p in paths] == [
        "a/img_0.jpg",
        "a/img_1.png",
        "a/more/deep.jpg",
        "b/img_0.jpg",
        "b/img_1.png",
    ]
    assert labels == [0, 0, 0, 1, 1]


def test_symlinked_class_folder_is_followed(tmp_path):
    write_class_tree(tmp_path / "real", ["a"], per_class=2)
    write_class_tree(tmp_path / "data", ["b"], per_class=2)
    os.symlink(tmp_path / "real" / "a", tmp_path / "data" / "a")
    paths, _, classes = folders.scan_class_folders(tmp_path / "data")
    assert classes == ["a", "b"] and len(paths) == 4


def test_missing_folder_message(tmp_path):
    with pytest.raises(UsageError, match=r"Training_Set: folder not found\. Create it with one sub-folder"):
        folders.list_classes(tmp_path / "Training_Set")


def test_single_class_message(tmp_path):
    write_class_tree(tmp_path, ["cats"], per_class=1)
    with pytest.raises(UsageError, match=r"needs at least two class sub-folders .*; found only 'cats'\."):
        folders.list_classes(tmp_path)


def test_no_class_message(tmp_path):
    with pytest.raises(UsageError, match=r"needs at least two class sub-folders .*; found none\."):
        folders.list_classes(tmp_path)


def test_empty_class_folder_message(tmp_path):
    write_class_tree(tmp_path, ["a"], per_class=1)
    (tmp_path / "b").mkdir()
    with pytest.raises(UsageError, match=r"b: class folder holds no files\. Add images or remove it\."):
        folders.scan_class_folders(tmp_path)


def test_mismatched_classes_message(tmp_path):
    write_class_tree(tmp_path, ["cats", "horses"], per_class=1)
    with pytest.raises(UsageError, match=r"class folders \['cats', 'horses'\] differ from the training classes"):
        folders.scan_class_folders(tmp_path, classes=["cats", "dogs"])


def test_inputs_mix_folders_and_files(tmp_path):
    write_class_tree(tmp_path / "in", ["x"], per_class=3)
    single = tmp_path / "one.jpg"
    single.write_bytes(b"x")
    assert len(folders.list_inputs([str(tmp_path / "in"), str(single)])) == 4


def test_missing_input_message(tmp_path):
    with pytest.raises(UsageError, match=r"--input .*nothing-here: no such file or folder\."):
        folders.list_inputs([str(tmp_path / "nothing-here")])


def test_empty_input_message(tmp_path):
    expected = r"no pictures there to label\. Put them there \(sub-folders are fine\), or pass --input"
    with pytest.raises(UsageError, match=expected):
        folders.list_inputs([str(tmp_path)])


def test_unwritable_folder_message(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match=r"--model-dir .*a-file/models: cannot write there .*Choose a writable"):
        folders.check_writable_folder(str(blocker / "models"), "--model-dir")


@pytest.mark.parametrize("name", ["Training_Set", "training_set", "Training Set", "TRAINING-SET", "train"])
def test_training_set_is_found_in_its_usual_spellings(tmp_path, name):
    (tmp_path / name).mkdir()
    (tmp_path / "notes").mkdir()
    assert folders.find_folder(str(tmp_path), folders.TRAINING_NAMES) == str(tmp_path / name)
    assert folders.find_folder(str(tmp_path), folders.TEST_NAMES) is None


def test_the_canonical_name_wins_and_an_empty_tree_holds_no_files(tmp_path):
    for name in ("val", "Test_Set"):
        (tmp_path / name / "cats").mkdir(parents=True)
    (tmp_path / "Test_Set" / ".gitkeep").write_text("")
    assert folders.find_folder(str(tmp_path), folders.TEST_NAMES) == str(tmp_path / "Test_Set")
    assert not folders.holds_files(str(tmp_path / "Test_Set"))
    (tmp_path / "Test_Set" / "cats" / "a.jpg").write_bytes(b"x")
    assert folders.holds_files(str(tmp_path / "Test_Set"))
