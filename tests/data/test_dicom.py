"""DICOM decoding against hand computation of the standard's pixel pipeline: MONOCHROME1/2,
with and without a VOI LUT or window, rescale slope/intercept, 12- and 16-bit, signed."""

import numpy as np
import pytest

from tests.cxr_fixtures import write_dicom
from stkit.data.images import ImageDecodeError, decode_dicom, image_size, load_cxr_image

pytest.importorskip("pydicom")


def stored(rng, bits, shape=(7, 9), signed=False):
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2 ** bits)
    a = rng.integers(lo, hi, shape)
    a.flat[:2] = lo, hi - 1                                 # both ends of the range occur
    return a


def linear_window(x, c, w):
    """PS3.3 C.11.2.1.2.1, written out per pixel, output range [0, 1]."""
    out = np.empty(x.shape)
    for i, v in np.ndenumerate(x):
        if v <= c - 0.5 - (w - 1) / 2:
            out[i] = 0.0
        elif v > c - 0.5 + (w - 1) / 2:
            out[i] = 1.0
        else:
            out[i] = (v - (c - 0.5)) / (w - 1) + 0.5
    return out


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_bit_range_without_window(tmp_path, bits, photometric):
    a = stored(np.random.default_rng(bits), bits)
    got = load_cxr_image(write_dicom(tmp_path / "x.dcm", a, bits_stored=bits, photometric=photometric))
    want = a / (2 ** bits - 1)
    want = 1 - want if photometric == "MONOCHROME1" else want
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_window_after_rescale(tmp_path, bits, photometric):
    rng = np.random.default_rng(bits + 1)
    a = stored(rng, bits)
    slope, icpt, c, w = 0.5, -20.0, float(rng.integers(200, 1500)), float(rng.integers(50, 900))
    got = load_cxr_image(write_dicom(tmp_path / "x.dicom", a, bits_stored=bits, photometric=photometric,
                                     rescale=(slope, icpt), window=(c, w)))
    want = linear_window(a * slope + icpt, c, w)
    want = 1 - want if photometric == "MONOCHROME1" else want
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert 0 < (want == 0).mean() + (want == 1).mean() < 1        # the window clips, and not everything


@pytest.mark.parametrize("photometric, lut_vr", [("MONOCHROME1", "US"), ("MONOCHROME2", "OW")])
def test_voi_lut_wins_over_window(tmp_path, photometric, lut_vr):
    rng = np.random.default_rng(5)
    a = stored(rng, 12)
    table = rng.integers(0, 256, 300)
    got = load_cxr_image(write_dicom(tmp_path / "x.dcm", a, bits_stored=12, photometric=photometric,
                                     window=(100, 10), voi_lut=(1000, 8, table), lut_vr=lut_vr))
    want = np.array([table[min(max(v - 1000, 0), 299)] for v in a.flat]).reshape(a.shape) / 255
    want = 1 - want if photometric == "MONOCHROME1" else want
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_signed_16_bit_and_minmax(tmp_path):
    a = stored(np.random.default_rng(7), 16, signed=True)
    p = write_dicom(tmp_path / "s.dcm", a, bits_stored=16, signed=True)
    np.testing.assert_allclose(load_cxr_image(p), (a + 32768) / 65535, atol=1e-6)
    np.testing.assert_allclose(decode_dicom(p, voi="minmax"), (a - a.min()) / (a.max() - a.min()), atol=1e-6)
    assert image_size(p) == a.shape


def test_linear_exact_and_sigmoid(tmp_path):
    a = stored(np.random.default_rng(8), 12)
    exact = load_cxr_image(write_dicom(tmp_path / "e.dcm", a, window=(2000, 1000), voi_function="LINEAR_EXACT"))
    np.testing.assert_allclose(exact, np.clip((a - 2000) / 1000 + 0.5, 0, 1), atol=1e-6)
    sig = load_cxr_image(write_dicom(tmp_path / "s.dcm", a, window=(2000, 1000), voi_function="SIGMOID"))
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * (a - 2000) / 1000)), atol=1e-6)


def test_dicom_without_pixel_data_or_not_greyscale(tmp_path):
    p = write_dicom(tmp_path / "empty.dicom", np.zeros((4, 4), np.uint16), pixels=False)
    assert image_size(p) == (4, 4)                          # the header alone is fine
    with pytest.raises(ImageDecodeError, match=r"empty\.dicom: the DICOM has no pixel data"):
        load_cxr_image(p)
    q = write_dicom(tmp_path / "rgb.dcm", np.zeros((4, 4), np.uint16), photometric="RGB")
    with pytest.raises(ImageDecodeError, match=r"rgb\.dcm: PhotometricInterpretation 'RGB'"):
        load_cxr_image(q)
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(ImageDecodeError, match=r"junk\.dcm"):
        load_cxr_image(tmp_path / "junk.dcm")
