"""The elastix transforms of a variant, one gzipped JSON file per patient.

``<variant dir>/transforms/<patient>.json.gz`` holds, for every registered slice and moving
phase, the elastix parameter maps of its transform (the ``TransformParameters`` files elastix
writes, as ``{name: [values]}`` dicts; a non-rigid transform is two maps, affine then
B-spline). Apply one again with transformix, e.g. to a segmentation of your own::

    import itk
    maps = load_transforms(variant_root, "P0003")[(12, "arterial")]
    params = itk.ParameterObject.New()
    for pmap in maps:  # a mask wants nearest neighbour: FinalBSplineInterpolationOrder 0
        params.AddParameterMap({**{k: tuple(v) for k, v in pmap.items()},
                                "FinalBSplineInterpolationOrder": ("0",)})
    image = itk.image_from_array(my_mask_slice.astype("float32"))
    image.SetSpacing((spacing_x, spacing_y))
    warped = itk.array_from_image(itk.transformix_filter(image, params)) > 0.5

A 3D variant (``rigid-3d``, ...) has one transform per moving phase volume instead, in the
file's ``volumes`` list (:func:`load_volume_transforms`); its ``slices`` list is empty.

The file also records what produced it (variant, method, dimensions, preset, backend and a
SHA-1 of the patient's four phase volumes), so a later stage can tell whether the transforms
still fit the images.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from benchmark.atomic import write_bytes
from registration.backends import ParameterMap

TRANSFORM_DIR = "transforms"
SliceKey = tuple[int, str]
"""``(axial index, moving phase)``."""


def transforms_path(variant_root: str | Path, patient_id: str) -> Path:
    """Where the transforms of ``patient_id`` in a variant live."""
    return Path(variant_root) / TRANSFORM_DIR / f"{patient_id}.json.gz"


def save_transforms(
    path: str | Path, transforms: dict[SliceKey, list[ParameterMap]], about: dict[str, Any],
    volumes: dict[str, list[ParameterMap]] | None = None,
) -> None:
    """Write ``transforms`` (per registered slice and phase), ``volumes`` (per registered
    phase volume, 3D) and ``about`` atomically."""
    record = {
        **about,
        "slices": [
            {"slice": int(z), "phase": phase, "maps": maps}
            for (z, phase), maps in sorted(transforms.items())
        ],
        "volumes": [{"phase": phase, "maps": maps} for phase, maps in (volumes or {}).items()],
    }
    # mtime=0: the same transforms always give the same bytes
    write_bytes(Path(path), gzip.compress(json.dumps(record).encode(), mtime=0))


def read_record(path: str | Path) -> dict[str, Any]:
    """The whole file: what produced it and the ``slices`` list."""
    path = Path(path)
    try:
        record = json.loads(gzip.decompress(path.read_bytes()))
        record["slices"] = list(record["slices"])
        record["volumes"] = list(record.get("volumes", []))
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a transforms file ({err})") from err
    return record


def slice_maps(record: dict[str, Any]) -> dict[SliceKey, list[ParameterMap]]:
    """Per ``(slice, phase)`` of a :func:`read_record` result: its elastix parameter maps."""
    return {(int(item["slice"]), str(item["phase"])): item["maps"] for item in record["slices"]}


def volume_maps(record: dict[str, Any]) -> dict[str, list[ParameterMap]]:
    """Per phase of a :func:`read_record` result of a 3D variant: its elastix parameter maps."""
    return {str(item["phase"]): item["maps"] for item in record["volumes"]}


def load_transforms(
    variant_root: str | Path, patient_id: str
) -> dict[SliceKey, list[ParameterMap]]:
    """Per ``(slice, phase)``: the elastix parameter maps of that slice's transform."""
    return slice_maps(read_record(transforms_path(variant_root, patient_id)))


def load_volume_transforms(
    variant_root: str | Path, patient_id: str
) -> dict[str, list[ParameterMap]]:
    """3D variants: per moving phase, the elastix parameter maps of its volume's transform."""
    return volume_maps(read_record(transforms_path(variant_root, patient_id)))
