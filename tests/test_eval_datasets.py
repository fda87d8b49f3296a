"""Box datasets: official ImageNet txt files, per-image XML, boxes.csv, synthetic shapes."""

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from captum_daam.evaluation import (
    BoxDataset,
    ImageNetSubset,
    SyntheticBoxes,
    boxes_mask,
    collate_boxes,
    load_official_boxes,
    load_subset_boxes,
    load_xml_boxes,
)
from captum_daam.zoo import SyntheticShapes

# Resize(32) on a 100x50 (w x h) image gives 64x32 (scale 0.64), CenterCrop(32) then
# cuts 16 columns on the left.
TRANSFORM = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
# Inclusive boxes (25, 0, 74, 49) and (40, 10, 59, 34) of a 100x50 image: edges
# (25, 0, 75, 50) and (40, 10, 60, 35); times 0.64: (16, 0, 48, 32) and
# (25.6, 6.4, 38.4, 22.4); minus 16 columns, clipped to 32: these.
EXPECTED = torch.tensor([[0.0, 0.0, 32.0, 32.0], [9.6, 6.4, 22.4, 22.4]], dtype=torch.float64)


def _image(path, width, height, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (value, 0, 0)).save(path)


def _official(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "localization.txt").write_text(
        "val/a.JPEG,25,0,74,49\nval/a.JPEG,40,10,59,34\nval/b.JPEG,0,0,9,9\nval/c.JPEG,1,1,5,5\n"
    )
    (boxes / "class_labels.txt").write_text("val/a.JPEG,7\nval/b.JPEG,3\nval/c.JPEG,2\n")
    (boxes / "image_sizes.txt").write_text(
        "val/a.JPEG,100,50\nval/b.JPEG,40,40\nval/c.JPEG,40,40\n"
    )
    return boxes


def test_official_layout(tmp_path):
    boxes = _official(tmp_path)
    entries = load_official_boxes(boxes)
    assert [e.file for e in entries] == ["val/a.JPEG", "val/b.JPEG", "val/c.JPEG"]
    torch.testing.assert_close(
        entries[0].boxes,
        torch.tensor([[25.0, 0.0, 75.0, 50.0], [40.0, 10.0, 60.0, 35.0]], dtype=torch.float64),
    )
    assert entries[0].size == (50, 100) and entries[0].label == 7
    # a.JPEG at its annotated size; b.JPEG in a class subfolder; c.JPEG missing.
    _image(tmp_path / "images" / "a.JPEG", 100, 50)
    _image(tmp_path / "images" / "n0001" / "b.JPEG", 40, 40)
    data = BoxDataset.from_official(boxes, tmp_path / "images", TRANSFORM)
    assert len(data) == 2
    image, label, got, name = data[0]
    assert image.shape == (3, 32, 32) and label == 7 and name == "val/a.JPEG"
    torch.testing.assert_close(got, EXPECTED)
    # b: 40x40 -> Resize(32) scale 0.8: (0, 0, 10, 10) -> (0, 0, 8, 8).
    torch.testing.assert_close(
        data[1][2], torch.tensor([[0.0, 0.0, 8.0, 8.0]], dtype=torch.float64)
    )
    only = BoxDataset.from_official(boxes, tmp_path / "images", TRANSFORM, files=["a.JPEG"])
    assert len(only) == 1
    with pytest.raises(ValueError, match="no boxes"):
        load_official_boxes(boxes, files=["zzz.JPEG"])
    with pytest.raises(ValueError, match="point image_dir"):
        BoxDataset.from_official(boxes, tmp_path / "boxes", TRANSFORM)


def test_prescaled_image_files_get_scaled_boxes(tmp_path):
    """Files squashed to another size than annotated: boxes follow the file."""
    boxes = _official(tmp_path)
    _image(tmp_path / "small" / "a.JPEG", 50, 25)  # half size in both directions
    data = BoxDataset.from_official(boxes, tmp_path / "small", TRANSFORM)
    torch.testing.assert_close(data[0][2], EXPECTED)


XML = """<annotation><folder>val</folder><filename>{name}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJECT = (
    "<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
    "<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
)


def test_xml_layout(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    objects = (
        OBJECT.format(name="n01443537", x0=25, y0=0, x1=74, y1=49)
        + OBJECT.format(name="n01440764", x0=0, y0=0, x1=3, y1=3)  # another class
        + OBJECT.format(name="n01443537", x0=40, y0=10, x1=59, y1=34)
    )
    (ann / "ILSVRC2012_val_00000001.xml").write_text(
        XML.format(name="ILSVRC2012_val_00000001", w=100, h=50, objects=objects)
    )
    _image(tmp_path / "img" / "ILSVRC2012_val_00000001.JPEG", 100, 50)
    entries = load_xml_boxes(ann)
    assert entries[0].label == 1 and entries[0].size == (50, 100)  # n01443537 is class 1
    data = BoxDataset.from_xml(ann, tmp_path / "img", TRANSFORM)
    _, label, got, name = data[0]
    assert label == 1 and name == "ILSVRC2012_val_00000001"
    torch.testing.assert_close(got, EXPECTED)


def test_xml_pascal_voc_one_based(tmp_path):
    ann = tmp_path / "voc"
    ann.mkdir()
    (ann / "2007_000032.xml").write_text(
        XML.format(
            name="2007_000032.jpg",
            w=100,
            h=50,
            objects=OBJECT.format(name="dog", x0=26, y0=1, x1=75, y1=50),
        )
    )
    _image(tmp_path / "jpg" / "2007_000032.jpg", 100, 50)
    data = BoxDataset.from_xml(
        ann, tmp_path / "jpg", TRANSFORM, class_index={"cat": 0, "dog": 1}, origin=1
    )
    _, label, got, _ = data[0]
    assert label == 1
    torch.testing.assert_close(got, EXPECTED[:1])
    with pytest.raises(ValueError, match="class_index"):
        load_xml_boxes(ann)  # "dog" is no ImageNet synset


def test_subset_csv_layout_agrees_with_imagenet_subset(tmp_path):
    root = tmp_path / "subset"
    (root / "images").mkdir(parents=True)
    (root / "boxes.csv").write_text(
        "file,label,img_w,img_h,orig_w,orig_h,x0,y0,x1,y1\n"
        "x.JPEG,5,100,50,200,100,25.0,0.0,75.0,50.0\n"
        "x.JPEG,5,100,50,200,100,40.0,10.0,60.0,35.0\n"
        "y.JPEG,9,40,40,40,40,4.0,4.0,20.0,20.0\n"
    )
    _image(root / "images" / "x.JPEG", 100, 50)
    _image(root / "images" / "y.JPEG", 40, 40)
    data = BoxDataset.from_subset(root, TRANSFORM)
    reference = ImageNetSubset(root, TRANSFORM)
    assert len(data) == len(reference) == 2
    torch.testing.assert_close(data[0][2], EXPECTED)  # csv boxes are pixel edges as given
    for i in range(2):
        image, label, got, _ = data[i]
        ref_image, ref_label, ref_mask = reference[i]
        assert label == ref_label and torch.equal(image, ref_image)
        assert torch.equal(boxes_mask(got, (32, 32)), ref_mask)
    assert len(BoxDataset.from_subset(root, TRANSFORM, files=["y.JPEG"])) == 1
    assert [e.file for e in reference.entries] == ["x.JPEG", "y.JPEG"]
    assert [e.file for e in load_subset_boxes(root / "boxes.csv", ["y.JPEG", "z"])] == ["y.JPEG"]
    (root / "images" / "y.JPEG").unlink()
    assert len(BoxDataset.from_subset(root, TRANSFORM)) == 1  # a folder may hold a part
    with pytest.raises(ValueError, match=r"lacks 1 of the images .*\(e.g. y.JPEG\)"):
        ImageNetSubset(root, TRANSFORM)
    assert len(ImageNetSubset(root, TRANSFORM, files=["x.JPEG"])) == 1


def test_synthetic_boxes_and_collate():
    data = SyntheticBoxes(5, seed=11, image_size=48)
    shapes = SyntheticShapes(5, seed=11, image_size=48)
    for i in range(5):
        image, label, boxes, name = data[i]
        sample = shapes.sample(i)
        assert torch.equal(image, sample.image) and label == sample.label
        assert boxes.dtype == torch.float64 and boxes.shape == (1, 4)
        torch.testing.assert_close(boxes[0], sample.box.to(torch.float64))
        assert name == f"synthetic-11-{i}"
        # The object's mask lies inside its box, touching every side.
        rows = torch.nonzero(sample.mask.any(1))[:, 0]
        cols = torch.nonzero(sample.mask.any(0))[:, 0]
        assert boxes[0].tolist() == [
            cols.min().item(),
            rows.min().item(),
            cols.max().item() + 1,
            rows.max().item() + 1,
        ]
    assert SyntheticBoxes(2).shapes.image_size == 64  # the embedded model's input size
    images, labels, boxes, names = next(
        iter(DataLoader(data, batch_size=3, collate_fn=collate_boxes))
    )
    assert images.shape == (3, 3, 48, 48) and labels.dtype == torch.long and len(boxes) == 3
    mixed = collate_boxes([data[0], (data[1][0], 2, torch.zeros(3, 4, dtype=torch.float64), "z")])
    assert [b.shape[0] for b in mixed[2]] == [1, 3] and mixed[3] == ["synthetic-11-0", "z"]


def test_real_subset_matches_official_boxes(data_dir):
    """The subset's csv was scaled from the official boxes: both readers agree."""
    from timm.data import create_transform, resolve_data_config

    subset = data_dir / "imagenet_val_subset"
    official = data_dir / "ilsvrc2012_val_boxes"
    csv_entries = load_subset_boxes(subset / "boxes.csv")
    assert len(csv_entries) == 400
    files = [e.file for e in csv_entries]
    entries = {e.file.split("/")[-1]: e for e in load_official_boxes(official, files)}
    import csv

    with open(subset / "boxes.csv", newline="") as handle:
        sizes = {
            r["file"]: (int(r["orig_h"]), int(r["orig_w"]), int(r["img_h"]), int(r["img_w"]))
            for r in csv.DictReader(handle)
        }
    for e in csv_entries:
        ref = entries[e.file]
        oh, ow, ih, iw = sizes[e.file]
        assert ref.label == e.label and ref.size == (oh, ow)
        # csv = official inclusive coordinates * img / orig, rounded to 0.01.
        inclusive = ref.boxes - torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
        scale = torch.tensor([iw / ow, ih / oh, iw / ow, ih / oh], dtype=torch.float64)
        torch.testing.assert_close(e.boxes, inclusive * scale, atol=0.006, rtol=0)

    cfg = resolve_data_config({}, model="deit_tiny_patch16_224")
    transform = create_transform(**cfg)
    # 363: box inside the crop; 580: the object fills the image height (far edges clipped).
    for name in ("ILSVRC2012_val_00000363.JPEG", "ILSVRC2012_val_00000580.JPEG"):
        from_csv = BoxDataset.from_subset(subset, transform, files=[name])[0]
        from_txt = BoxDataset.from_official(official, subset / "images", transform, files=[name])[0]
        assert torch.equal(from_csv[0], from_txt[0]) and from_csv[1] == from_txt[1]
        oh, ow, ih, iw = sizes[name]
        step = 256 / 227  # Resize(224 / crop_pct 0.875 = 256) of the 227x227 file
        difference = from_txt[2] - from_csv[2]
        torch.testing.assert_close(
            difference[:, :2], torch.zeros_like(difference[:, :2]), atol=0.01, rtol=0
        )
        # The far edges differ by one original pixel, except where clipped to the crop.
        far = torch.tensor([iw / ow * step, ih / oh * step], dtype=torch.float64).expand_as(
            difference[:, 2:]
        )
        clipped = from_txt[2][:, 2:] >= 224
        assert not clipped.all() if name.endswith("363.JPEG") else clipped.all()
        torch.testing.assert_close(
            torch.where(clipped, far, difference[:, 2:]), far, atol=0.01, rtol=0
        )


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path):
    from captum_daam import InvalidFileError
    from captum_daam.evaluation import AnnotatedImage, BoxDataset

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    entries = [
        AnnotatedImage(name, 1, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
        for name in ("a.png", "b.png")
    ]
    data = BoxDataset(entries, tmp_path, T.ToTensor())
    assert data[0][0].shape == (3, 30, 40)  # under the default cap
    data.max_pixels = 1000  # 40 x 30 = 1200 pixels
    with pytest.raises(InvalidFileError, match=r"a.png: image too large \(40 x 30 = 1,200"):
        data[0]
    data.max_pixels = 0  # no cap
    assert data[0][0].shape == (3, 30, 40)
    with pytest.raises(InvalidFileError, match="b.png: cannot read image"):
        data[1]
