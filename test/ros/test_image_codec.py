"""Image/CompressedImage decoding: every supported encoding gives the same RGB; every malformed message is
a BadFrame whose text names the problem."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from ovss_ros.ros.image_codec import BadFrame, array_to_image, compressed_to_rgb, image_to_rgb
from rostest_helpers import image_msg, raw_image, scene

RGB = scene(12, 16)


@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB), ("bgr8", RGB[:, :, ::-1]), ("8UC3", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
    ("rgb16", RGB.astype(np.uint16) * 257),
])
def test_colour_encodings_decode_to_the_same_rgb(encoding, pixels):
    assert np.array_equal(image_to_rgb(image_msg(pixels, encoding, 1)), RGB)


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("8UC1", np.uint8), ("mono16", np.uint16),
                                            ("16UC1", np.uint16)])
def test_gray_encodings_become_three_equal_channels(encoding, dtype):
    gray = RGB[:, :, 0].astype(dtype) * (257 if dtype == np.uint16 else 1)
    out = image_to_rgb(image_msg(gray, encoding, 1))
    assert out.shape == (12, 16, 3) and np.array_equal(out[:, :, 0], RGB[:, :, 0])
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def test_big_endian_mono16():
    gray = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300)
    msg = raw_image(gray.astype(">u2").tobytes(), "mono16", 12, 16, 32, 1, bigendian=True)
    little = image_to_rgb(image_msg(gray, "mono16", 1))
    assert np.array_equal(image_to_rgb(msg), little)


def test_padded_rows_are_read_correctly():
    padded = np.zeros((12, 64), np.uint8)            # step 64 > 16 * 3 = 48
    padded[:, :48] = RGB.reshape(12, 48)
    msg = raw_image(padded.tobytes(), "rgb8", 12, 16, 64, 1)
    assert np.array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("make,kind,words", [
    (lambda: raw_image(b"\0" * 48, "yuv422_yuy2", 4, 6, 12, 1), "encoding", "unsupported encoding"),
    (lambda: raw_image(b"\0" * 48, "rgb8", 4, 6, 10, 1), "step", "step 10"),
    (lambda: raw_image(b"\0" * 40, "rgb8", 4, 6, 18, 1), "truncated", "40 bytes"),
    (lambda: raw_image(b"\0" * 100, "rgb8", 4, 6, 18, 1), "size", "100 bytes"),
    (lambda: raw_image(b"", "rgb8", 0, 0, 0, 1), "size", "zero size"),
])
def test_malformed_images_say_why(make, kind, words):
    with pytest.raises(BadFrame, match=words) as info:
        image_to_rgb(make())
    assert info.value.kind == kind


def test_oversized_image_is_refused_before_decoding():
    with pytest.raises(BadFrame, match="exceeds"):
        image_to_rgb(image_msg(RGB, "rgb8", 1), max_pixels=100)


def test_compressed_png_is_lossless_and_jpeg_decodes():
    ok, png = cv2.imencode(".png", RGB[:, :, ::-1])
    msg = CompressedImage(format="png", data=png.tobytes())
    assert np.array_equal(compressed_to_rgb(msg), RGB)
    ok, jpg = cv2.imencode(".jpg", RGB[:, :, ::-1])
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes())).shape == RGB.shape


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff garbage that is not a jpeg"])
def test_undecodable_compressed_frames_are_bad_frames(data):
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=data))
    assert info.value.kind == "compressed"


@pytest.mark.parametrize("pixels,encoding", [(RGB, "rgb8"), (RGB[:, :, 0], "mono8"),
                                             (RGB[:, :, 0].astype(np.uint16) * 300, "mono16")])
def test_array_to_image_round_trip(pixels, encoding):
    msg = array_to_image(pixels, encoding)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 12, 16)
    assert msg.step == 16 * pixels.itemsize * (3 if pixels.ndim == 3 else 1)
    back = np.frombuffer(bytes(msg.data), dtype="<u2" if encoding == "mono16" else np.uint8)
    assert np.array_equal(back.reshape(pixels.shape), pixels)
