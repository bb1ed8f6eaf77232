"""Elastix backends for 2D slice registration: itk-elastix (default) and SimpleElastix.

Both run elastix with its DEFAULT parameter maps, as the paper did: ``rigid``, ``affine`` and
``nonrigid`` = affine followed by B-spline (two maps run in sequence, which is what the
authors' code does). Only ``DefaultPixelValue`` of the result image is changed (to the moving
slice's minimum, i.e. air instead of 0 HU); it does not touch the optimisation.

A transform is exchanged as elastix parameter maps (:meth:`Backend.transform_maps`, plain
``{name: [values]}`` dicts) so it can be saved and applied again. itk-elastix can also start
``nonrigid`` from the transform of an earlier ``affine`` registration of the same slices
(``initial=``): elastix then runs only the B-spline map, initialised by that affine transform,
which is exactly what the two-map sequence does (the results are bit-identical).

Threads: itk-elastix crashes when threads are set per call (ITKElastix issue 160), so the
number of threads is set only through ITK's global default (:func:`set_threads`). The two
bindings each bring their own ITK: never load both into one process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from benchmark.vocabulary import REGISTRATIONS

METHODS: tuple[str, ...] = REGISTRATIONS
BACKENDS = ("itk-elastix", "simpleelastix")
#: elastix default map names run in sequence for each method
DEFAULT_MAPS: dict[str, tuple[str, ...]] = {
    "rigid": ("rigid",),
    "affine": ("affine",),
    "nonrigid": ("affine", "bspline"),
}
ParameterMap = dict[str, list[str]]
"""One elastix parameter map as plain Python: parameter name -> values (strings)."""
# SWIG-generated modules warn about their own types on import under Python >= 3.12.
_SWIG_WARNING = r"builtin type (swigvarlink|SwigPy\w+) has no __module__ attribute"


@contextlib.contextmanager
def _quiet_swig() -> Iterator[None]:
    # the swigvarlink warning can also come at interpreter exit: filter that message for good
    warnings.filterwarnings("ignore", message=_SWIG_WARNING, category=DeprecationWarning)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SWIG_WARNING, category=DeprecationWarning)
        yield


class ElastixError(RuntimeError):
    """elastix or transformix could not register or warp a slice.

    Both bindings report a failure inside the library (e.g. "Too many samples map outside
    moving image buffer") as the RuntimeError that ITK's exceptions become in Python:
    itk-elastix as ``ITK ERROR: ElastixRegistrationMethod(...): Internal elastix error``,
    SimpleElastix as ``Exception thrown in SimpleITK ElastixImageFilter_Execute``. Only calls
    into the library are wrapped (:func:`elastix_call`), so this is the one error a
    registration stage may treat as a failed slice; anything else is a bug and propagates.
    """


@contextlib.contextmanager
def elastix_call() -> Iterator[None]:
    """Turn the RuntimeError of an elastix / transformix call into :class:`ElastixError`."""
    try:
        yield
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ElastixError(lines[-1] if lines else type(err).__name__) from err


@dataclass
class SliceRegistration:
    """One moving slice registered to its fixed slice.

    ``transform`` is backend specific; pass it back to the same backend's :meth:`warp_mask`
    and :meth:`displacement`.
    """

    warped: np.ndarray
    transform: Any


class Backend(Protocol):
    name: str

    #: whether :meth:`register` accepts ``initial`` (a ``nonrigid`` run starting from an
    #: ``affine`` transform)
    reuses_affine: bool

    def register(
        self, fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float], method: str,
        initial: list[ParameterMap] | None = None,
    ) -> SliceRegistration: ...

    def warp_mask(self, mask: np.ndarray, reg: SliceRegistration) -> np.ndarray: ...

    def displacement(self, reg: SliceRegistration) -> np.ndarray: ...

    def transform_maps(self, reg: SliceRegistration) -> list[ParameterMap]: ...


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown registration method {method!r}; use one of {', '.join(METHODS)}")


def _check_initial(method: str, initial: list[ParameterMap] | None) -> None:
    if initial is not None and (method != "nonrigid" or not initial
                                or initial[-1].get("Transform") != ["AffineTransform"]):
        raise ValueError("an initial transform is only taken by nonrigid, and must be the "
                         "parameter maps of an affine registration")


def _to_binary(warped: np.ndarray) -> np.ndarray:
    return (np.asarray(warped) > 0.5).astype(np.uint8)


class ItkElastixBackend:
    """Elastix through the ``itk-elastix`` wheels (``itk.elastix_registration_method``)."""

    name = "itk-elastix"
    reuses_affine = True

    def __init__(self) -> None:
        with _quiet_swig():
            import itk

            # ITK loads its modules lazily on first attribute access: load them all here,
            # inside the warning filter (this takes ~15 s on a quiet 2-core machine)
            for attr in ("ElastixRegistrationMethod", "TransformixFilter", "ParameterObject",
                         "elastix_registration_method", "transformix_filter"):
                getattr(itk, attr)
            itk.array_from_image(itk.image_from_array(np.zeros((2, 2), np.float32)))
        self.itk = itk

    def _image(self, array: np.ndarray, spacing: tuple[float, float]) -> Any:
        image = self.itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))
        image.SetSpacing((float(spacing[1]), float(spacing[0])))  # ITK order is (x, y)
        return image

    def _parameter_object(self, maps: list[ParameterMap]) -> Any:
        params = self.itk.ParameterObject.New()
        for pmap in maps:
            params.AddParameterMap({key: tuple(values) for key, values in pmap.items()})
        return params

    def _parameters(self, names: tuple[str, ...], default_pixel: float) -> Any:
        params = self.itk.ParameterObject.New()
        for name in names:
            pmap = params.GetDefaultParameterMap(name)
            pmap["DefaultPixelValue"] = [repr(float(default_pixel))]
            params.AddParameterMap(pmap)
        return params

    def register(
        self, fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float], method: str,
        initial: list[ParameterMap] | None = None,
    ) -> SliceRegistration:
        check_method(method)
        _check_initial(method, initial)
        names = DEFAULT_MAPS[method][1:] if initial else DEFAULT_MAPS[method]
        extra = {} if initial is None else {
            "initial_transform_parameter_object": self._parameter_object(initial)}
        with elastix_call():
            result, transform = self.itk.elastix_registration_method(
                self._image(fixed, spacing),
                self._image(moving, spacing),
                parameter_object=self._parameters(names, float(moving.min())),
                log_to_console=False,
                **extra,
            )
        # with an initial transform object, the returned transform holds its maps too
        return SliceRegistration(self.itk.array_from_image(result).astype(np.float32),
                                 (transform, spacing))

    def transform_maps(self, reg: SliceRegistration) -> list[ParameterMap]:
        transform, _ = reg.transform
        return [{key: list(values) for key, values in transform.GetParameterMap(i).items()}
                for i in range(transform.GetNumberOfParameterMaps())]

    def warp_mask(self, mask: np.ndarray, reg: SliceRegistration) -> np.ndarray:
        nearest = self._parameter_object([
            {**pmap, "FinalBSplineInterpolationOrder": ["0"], "DefaultPixelValue": ["0"]}
            for pmap in self.transform_maps(reg)
        ])
        with elastix_call():
            warped = self.itk.transformix_filter(self._image(mask, reg.transform[1]), nearest)
        return _to_binary(self.itk.array_from_image(warped))

    def displacement(self, reg: SliceRegistration) -> np.ndarray:
        transform, spacing = reg.transform
        shape = tuple(int(s) for s in transform.GetParameterMap(0)["Size"])[::-1]
        image = self._image(np.zeros(shape, np.float32), spacing)
        transformix = self.itk.TransformixFilter[type(image)].New()
        transformix.SetMovingImage(image)
        transformix.SetTransformParameterObject(transform)
        transformix.ComputeDeformationFieldOn()
        transformix.LogToConsoleOff()
        # transformix writes deformationField.nii into its output directory (default: cwd)
        with tempfile.TemporaryDirectory(prefix="phasebench-transformix-") as out:
            transformix.SetOutputDirectory(out)
            with elastix_call():
                transformix.Update()
            field = self.itk.array_from_image(transformix.GetOutputDeformationField())
        return field[..., ::-1].astype(np.float32)  # (dy, dx) in mm


class SimpleElastixBackend:
    """Elastix through ``SimpleITK-SimpleElastix`` (optional extra ``phasebench[simpleelastix]``).

    Its filters write ``TransformParameters.*.txt`` into the working directory unless an output
    directory is set, so every call runs with a private temporary output directory.
    """

    name = "simpleelastix"
    reuses_affine = False

    def __init__(self) -> None:
        with _quiet_swig():
            import SimpleITK as sitk
        if not hasattr(sitk, "ElastixImageFilter"):
            raise ImportError(
                "the installed SimpleITK has no ElastixImageFilter; install "
                "phasebench[simpleelastix] (SimpleITK-SimpleElastix) in an environment without "
                "plain SimpleITK"
            )
        self.sitk = sitk

    def _image(self, array: np.ndarray, spacing: tuple[float, float]) -> Any:
        image = self.sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
        image.SetSpacing((float(spacing[1]), float(spacing[0])))
        return image

    @contextlib.contextmanager
    def _filter(self, kind: str) -> Iterator[Any]:
        filt = getattr(self.sitk, kind)()
        filt.LogToConsoleOff()
        filt.LogToFileOff()
        with tempfile.TemporaryDirectory(prefix="phasebench-elastix-") as out:
            filt.SetOutputDirectory(out)
            yield filt

    def register(
        self, fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float], method: str,
        initial: list[ParameterMap] | None = None,
    ) -> SliceRegistration:
        check_method(method)
        if initial is not None:
            raise ValueError("the simpleelastix backend always runs the whole map sequence "
                             "(reuses_affine is False)")
        maps = self.sitk.VectorOfParameterMap()
        for name in DEFAULT_MAPS[method]:
            pmap = self.sitk.GetDefaultParameterMap(name)
            pmap["DefaultPixelValue"] = [repr(float(moving.min()))]
            maps.append(pmap)
        with self._filter("ElastixImageFilter") as filt:
            filt.SetFixedImage(self._image(fixed, spacing))
            filt.SetMovingImage(self._image(moving, spacing))
            filt.SetParameterMap(maps)
            with elastix_call():
                filt.Execute()
            warped = self.sitk.GetArrayFromImage(filt.GetResultImage()).astype(np.float32)
            transform = [self.sitk.ParameterMap(dict(m)) for m in filt.GetTransformParameterMap()]
        return SliceRegistration(warped, (transform, spacing))

    def _transformix(self, reg: SliceRegistration, image: np.ndarray, nearest: bool) -> Any:
        transform, spacing = reg.transform
        maps = self.sitk.VectorOfParameterMap()
        for pmap in transform:
            pmap = self.sitk.ParameterMap(dict(pmap))
            if nearest:
                pmap["FinalBSplineInterpolationOrder"] = ["0"]
                pmap["DefaultPixelValue"] = ["0"]
            maps.append(pmap)
        with self._filter("TransformixImageFilter") as filt:
            filt.SetMovingImage(self._image(image, spacing))
            filt.SetTransformParameterMap(maps)
            filt.SetComputeDeformationField(not nearest)
            with elastix_call():
                filt.Execute()
            if nearest:
                return self.sitk.GetArrayFromImage(filt.GetResultImage())
            return self.sitk.GetArrayFromImage(filt.GetDeformationField())

    def warp_mask(self, mask: np.ndarray, reg: SliceRegistration) -> np.ndarray:
        return _to_binary(self._transformix(reg, mask, nearest=True))

    def transform_maps(self, reg: SliceRegistration) -> list[ParameterMap]:
        return [{key: list(values) for key, values in pmap.items()} for pmap in reg.transform[0]]

    def displacement(self, reg: SliceRegistration) -> np.ndarray:
        size = tuple(int(s) for s in reg.transform[0][0]["Size"])[::-1]
        field = self._transformix(reg, np.zeros(size, np.float32), nearest=False)
        return np.asarray(field)[..., ::-1].astype(np.float32)


def simpleelastix_available() -> bool:
    """True when a SimpleITK with elastix support is installed.

    Checked in a subprocess: SimpleITK-SimpleElastix and itk-elastix bring their own ITK
    libraries, and loading both into one process corrupts the heap.
    """
    if importlib.util.find_spec("SimpleITK") is None:
        return False
    check = "import SimpleITK as s; s.ElastixImageFilter"
    return subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def check_backend(name: str) -> None:
    """Raise ValueError for an unknown backend, ImportError for one not installed (cheap:
    nothing is loaded into this process)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown registration backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "itk-elastix" and importlib.util.find_spec("itk") is None:
        raise ImportError("itk-elastix is not installed: pip install itk-elastix")
    if name == "simpleelastix" and not simpleelastix_available():
        raise ImportError("SimpleElastix is not installed: pip install phasebench[simpleelastix] "
                          "(in an environment without plain SimpleITK)")


def get_backend(name: str = "itk-elastix") -> Backend:
    """Instantiate a backend by name (see :data:`BACKENDS`)."""
    if name == "itk-elastix":
        return ItkElastixBackend()
    if name == "simpleelastix":
        return SimpleElastixBackend()
    raise ValueError(f"unknown registration backend {name!r}; use one of {', '.join(BACKENDS)}")


def set_threads(n: int, backend: str = "itk-elastix") -> None:
    """Threads per process for elastix, set ONLY through the global default of ``backend``'s
    ITK (itk-elastix crashes when threads are set per call, ITKElastix issue 160).

    Only ``backend``'s library is loaded: the two bindings must not share a process.
    """
    n = max(1, int(n))
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    with _quiet_swig():
        if backend == "itk-elastix":
            import itk

            itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(n)
        elif backend == "simpleelastix":
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
